"""Prepared copies of the bundled datasets (DeepForest tiles, labelme examples): where they
live (``$YOLOV7_D2_DATASETS``), the manifest that says a copy is complete, and
:func:`ensure_prepared`, which the registered datasets call when first loaded.

The downloads themselves (``pip download``, ``apt-get download``) are not in this package:
they are in the checkout's ``tools/prepare_datasets.py``, which :func:`ensure_prepared` runs
when a copy is missing, as a user would."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["ENV_VAR", "PREPARE_SCRIPT", "datasets_root", "sha256_of", "Manifest",
           "preparation_lock", "write_json", "ensure_prepared"]

logger = logging.getLogger(__name__)

#: Environment variable naming the directory that holds every prepared dataset.
ENV_VAR = "YOLOV7_D2_DATASETS"
MANIFEST = "manifest.json"
#: The preparation tool, relative to the repository checkout.
PREPARE_SCRIPT = "tools/prepare_datasets.py"


def _checkout() -> Optional[Path]:
    """The repository checkout holding this package (an editable install), else None."""
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "setup.py").is_file() and (checkout / "yolov7_d2").is_dir():
        return checkout
    return None


def datasets_root() -> Path:
    """``$YOLOV7_D2_DATASETS`` if set; else ``datasets/`` in the repository checkout that
    holds this package; else (an installed, non-editable package) ``./datasets``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    checkout = _checkout()
    return checkout / "datasets" if checkout else Path.cwd() / "datasets"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


class Manifest:
    """``manifest.json`` of a prepared dataset: preparation version, source, counts and the
    sha256 of every file it wrote. Written last, so its presence means "complete"."""

    def __init__(self, root: Path, version: str):
        self.root = Path(root)
        self.version = version

    @property
    def path(self) -> Path:
        return self.root / MANIFEST

    def load_if_valid(self) -> Optional[dict]:
        """The manifest if it exists, has this version and every file matches its checksum."""
        if not self.path.is_file():
            return None
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        if data.get("version") != self.version:
            logger.info("%s: preparation version %r != %r, preparing again",
                        self.path, data.get("version"), self.version)
            return None
        for rel, digest in data.get("files", {}).items():
            file = self.root / rel
            if not file.is_file() or sha256_of(file) != digest:
                logger.warning("%s: %s is missing or changed, preparing again", self.path, rel)
                return None
        return data

    def write(self, files: Sequence[str], **info) -> dict:
        data = {"version": self.version, **info,
                "files": {rel: sha256_of(self.root / rel) for rel in sorted(files)}}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.path)
        return data


@contextlib.contextmanager
def preparation_lock(directory: Path):
    """Exclusive lock on ``directory/.lock`` while a dataset is prepared there: distributed
    ranks (or two jobs) that load it at the same time prepare it once, the others wait and
    then find it ready. No-op where ``fcntl`` is missing (Windows)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        yield
        return
    with open(directory / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def ensure_prepared(dataset: str, directory: Path, version: str,
                    extra_args: Sequence[str] = ()) -> None:
    """Nothing when ``directory`` holds a complete copy of ``dataset`` (a valid manifest of
    this preparation ``version``); else runs ``tools/prepare_datasets.py --only dataset --dir
    directory`` of the checkout in a subprocess (its output goes to this process's console)
    and raises if that fails. Without a checkout (a non-editable install), a
    FileNotFoundError says the command to run."""
    if Manifest(directory, version).load_if_valid() is not None:
        return
    arguments = ["--only", dataset, "--dir", str(directory), *extra_args]
    checkout = _checkout()
    if checkout is None or not (checkout / PREPARE_SCRIPT).is_file():
        raise FileNotFoundError(
            f"dataset {dataset!r} is not prepared in {directory} and this install of yolov7_d2 "
            f"has no {PREPARE_SCRIPT} next to it: in a d2-yolov7 checkout, run "
            f"`python {PREPARE_SCRIPT} {' '.join(arguments)}` (or prepare it elsewhere and copy "
            "the directory there)")
    command = [sys.executable, str(checkout / PREPARE_SCRIPT), *arguments]
    logger.info("%s is not prepared in %s: running %s", dataset, directory, " ".join(command))
    proc = subprocess.run(command)
    if proc.returncode != 0:
        raise RuntimeError(f"preparing the dataset {dataset!r} failed: `{' '.join(command)}` "
                           f"exited with {proc.returncode} (its error is printed above)")
    if Manifest(directory, version).load_if_valid() is None:
        raise RuntimeError(f"`{' '.join(command)}` finished but {directory} holds no complete "
                           f"copy of {dataset!r} (preparation version {version})")
