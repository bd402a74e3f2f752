"""What the benchmarks print about the CPU they ran on: its model name and the vector-unit
flags that decide speed and precision here (AVX2 only, AVX512, AVX512-BF16, AMX)."""
import platform
from typing import List, Tuple

__all__ = ["cpu_model_and_flags"]

#: Prefixes of the ``lscpu`` / ``/proc/cpuinfo`` flags worth reporting.
_SPEED_FLAGS = ("avx", "amx", "fma")


def cpu_model_and_flags() -> Tuple[str, List[str]]:
    """(model name, the avx* / amx* / fma* flags) from ``/proc/cpuinfo``; elsewhere
    (not Linux) ``platform.processor()`` and no flags."""
    model, flags = platform.processor() or "unknown CPU", []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = value.strip()
                elif key == "flags":
                    flags = [f for f in value.split() if f.startswith(_SPEED_FLAGS)]
                    break  # the first processor's entry says it all
    except OSError:
        pass
    return model, flags
