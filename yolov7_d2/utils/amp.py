"""Mixed precision that pays off on the device at hand (``SOLVER.AMP.ENABLED`` for training,
``TEST.YOLOV7.AMP`` for inference)."""
import functools
import logging
from typing import Callable, Optional

import torch

__all__ = ["cpu_has_native_bf16", "autocast_dtype", "inference_autocast_dtype"]

logger = logging.getLogger(__name__)


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN computes bfloat16 natively on this CPU (AVX512-BF16 or AMX).

    Without it, bfloat16 convolutions are emulated: a yolov7-tiny training step (8 images at
    416 px, 2 cores, AVX2-only AMD EPYC) took 24 s under bfloat16 autocast against 2.8 s in
    float32, while CPUs with AVX512-BF16 run it 1.8x faster than float32.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return False


def autocast_dtype(enabled: bool, device_type: str,
                   native_bf16: Optional[Callable[[], bool]] = None,
                   key: str = "SOLVER.AMP.ENABLED",
                   work: str = "training") -> Optional[torch.dtype]:
    """The autocast dtype for ``key`` (a boolean config key) on ``device_type``, or None for
    float32.

    CUDA: float16 (training adds a gradient scaler). CPU: bfloat16 only where
    ``native_bf16()`` says the CPU computes it natively (``native_bf16``, default
    :func:`cpu_has_native_bf16`); otherwise float32, with one log line naming ``key`` and
    ``work`` and saying why.
    """
    if not enabled:
        return None
    if device_type == "cuda":
        return torch.float16
    if device_type == "cpu" and (native_bf16 or cpu_has_native_bf16)():
        return torch.bfloat16
    logger.info("%s: %s in float32, not bfloat16: this %s has no native bfloat16 "
                "(AVX512-BF16 / AMX), where bfloat16 autocast is ~8x slower than float32.",
                key, work, "CPU" if device_type == "cpu" else f"{device_type!r} device")
    return None


@functools.lru_cache(maxsize=None)
def inference_autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """:func:`autocast_dtype` of ``TEST.YOLOV7.AMP`` on ``device_type``, decided (and logged)
    once per process: float16 on CUDA (as the official test.py and detect.py run), bfloat16 on
    CPUs that compute it natively, else None (float32)."""
    return autocast_dtype(True, device_type, key="TEST.YOLOV7.AMP", work="inference")
