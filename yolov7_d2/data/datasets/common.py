"""What the dataset readers share: image file types and sizes, and lazy registration with
detectron2 (the dataset dicts are built when a dataset is first loaded, not when it is
registered)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from .prepared import BundledDataset

__all__ = ["IMG_FORMATS", "image_size", "register_cached", "register_lazy_coco"]

#: Image file extensions (lower case) taken from directories, as the official loader.
IMG_FORMATS = ("bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp")
_EXIF_ORIENTATION = 0x0112


def image_size(path: Path) -> Tuple[int, int]:
    """(width, height) from the image header, after EXIF orientation (as detectron2 reads it)."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        try:
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
        except Exception:  # a broken EXIF block: detectron2 ignores it too
            orientation = 1
    if orientation in (5, 6, 7, 8):  # transposed / rotated by 90 degrees
        w, h = h, w
    if w <= 0 or h <= 0:
        raise ValueError(f"size {w}x{h}")
    return w, h


def _replace_registration(name: str, load: Callable[[], List[dict]], **metadata) -> None:
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(**metadata)


def register_cached(name: str, load: Callable[[], List[dict]], **metadata) -> None:
    """Register ``name`` (replacing an earlier registration) with ``metadata``; ``load()``
    runs when the dataset is first loaded, once per process: later loads get a deep copy of
    its dicts."""
    cache = {}

    def cached():
        if "dicts" not in cache:
            cache["dicts"] = load()
        return copy.deepcopy(cache["dicts"])

    _replace_registration(name, cached, **metadata)


def register_lazy_coco(name: str, json_file: Path, image_root: Path,
                       thing_classes: List[str],
                       bundled: Optional[BundledDataset] = None) -> None:
    """Register ``name`` as a COCO-json dataset like detectron2's ``register_coco_instances``,
    loaded when first used. For a dataset that ``bundled`` says how to prepare, loading it
    unprepared raises a FileNotFoundError with the command that prepares it, and the
    metadata holds ``bundled``.

    The metadata ``json_file`` / ``image_root`` are set now: COCOEvaluator reads them after
    the test loader has loaded, hence found prepared, the dataset. Registering again replaces
    it.
    """

    def load():
        if bundled is not None:
            bundled.check_prepared()
        return load_coco_json(str(json_file), str(image_root), name)

    _replace_registration(name, load, thing_classes=list(thing_classes),
                          json_file=str(json_file), image_root=str(image_root),
                          evaluator_type="coco", bundled=bundled)
