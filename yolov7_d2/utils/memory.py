"""How much memory the machine can give: for choices such as caching decoded images."""
from typing import Optional

__all__ = ["available_memory_bytes"]


def available_memory_bytes() -> Optional[int]:
    """Memory that can be allocated without swapping (``MemAvailable`` of ``/proc/meminfo``:
    free memory plus the page cache that can be dropped), in bytes; None where unknown
    (not Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the file counts in KiB
    except (OSError, ValueError, IndexError):
        pass
    return None
