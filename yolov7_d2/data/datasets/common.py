"""Shared pieces of the dataset helpers: cache location, checksums, manifests, lazy COCO
registration."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

__all__ = ["ENV_VAR", "datasets_root", "sha256_of", "Manifest", "preparation_lock",
           "register_lazy_coco"]

logger = logging.getLogger(__name__)

#: Environment variable naming the directory that holds every prepared dataset.
ENV_VAR = "YOLOV7_D2_DATASETS"
MANIFEST = "manifest.json"


def datasets_root() -> Path:
    """``$YOLOV7_D2_DATASETS`` if set; else ``datasets/`` in the repository checkout that
    holds this package; else (an installed, non-editable package) ``./datasets``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "setup.py").is_file() and (checkout / "yolov7_d2").is_dir():
        return checkout / "datasets"
    return Path.cwd() / "datasets"


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


def register_lazy_coco(name: str, json_file: Path, image_root: Path,
                       thing_classes: List[str], prepare: Callable[[], object]) -> None:
    """Register ``name`` as a COCO-json dataset like detectron2's ``register_coco_instances``,
    except that ``prepare()`` (idempotent: it makes ``json_file`` and the images exist) runs
    when the dataset is first loaded, not now.

    The metadata ``json_file`` / ``image_root`` are set now: COCOEvaluator reads them after
    the test loader has loaded, hence prepared, the dataset. Registering again replaces it.
    """

    def load():
        prepare()
        return load_coco_json(str(json_file), str(image_root), name)

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        thing_classes=list(thing_classes),
        json_file=str(json_file),
        image_root=str(image_root),
        evaluator_type="coco",
    )
