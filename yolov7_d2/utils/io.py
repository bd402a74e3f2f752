"""File writing that never leaves a half-written file behind."""
import glob
import os
import re
from typing import Callable, List, Sequence

__all__ = ["atomic_write", "remove_temporaries"]

# atomic_write's temporary file: "<path>.tmp-<pid of the writer>".
_TEMPORARY = re.compile(r"\.tmp-\d+$")


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, sync it to disk, then
    rename it to ``path`` (and sync the directory): readers see the old file or the complete
    new one, never a truncated one, even after a crash or a power cut. The temporary file is
    removed if ``write`` raises; a process killed meanwhile leaves it behind (see
    :func:`remove_temporaries`)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _sync_directory(directory)


def _sync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable (POSIX; elsewhere directories cannot be opened)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (network mounts) cannot sync a directory
    finally:
        os.close(fd)


def remove_temporaries(directory: str, patterns: Sequence[str]) -> List[str]:
    """Remove the temporary files that :func:`atomic_write` calls for files of ``directory``
    matching a glob pattern of ``patterns`` left behind: processes killed while writing. Only
    for callers that are the sole writer of those files, not writing them now. Returns the
    paths removed."""
    removed = []
    for pattern in patterns:
        for tmp in glob.glob(os.path.join(glob.escape(directory), pattern + ".tmp-*")):
            if _TEMPORARY.search(tmp):
                os.remove(tmp)
                removed.append(tmp)
    return removed
