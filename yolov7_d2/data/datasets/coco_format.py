"""COCO-format json files (yours, or exported by an annotation tool) as detectron2 datasets."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Union

from .common import register_lazy_coco

__all__ = ["coco_class_names", "register_coco_json"]


def coco_class_names(json_file: Union[str, os.PathLike]) -> List[str]:
    """Category names of a COCO json by increasing id: the contiguous class order that
    detectron2's ``load_coco_json`` gives them."""
    with open(json_file, encoding="utf-8") as f:
        categories = json.load(f).get("categories") or []
    if not categories:
        raise ValueError(f"{json_file}: no 'categories' in this COCO json")
    return [c["name"] for c in sorted(categories, key=lambda c: c["id"])]


def register_coco_json(name: str, json_file: Union[str, os.PathLike],
                       image_root: Union[str, os.PathLike]) -> List[str]:
    """Register ``json_file`` (images under ``image_root``) as ``name``, like detectron2's
    ``register_coco_instances`` but replacing an earlier registration and with the class
    names set now (the json is read for its categories). Returns the class names."""
    json_file, image_root = Path(json_file), Path(image_root)
    if not json_file.is_file():
        raise FileNotFoundError(f"COCO json {json_file} does not exist")
    if not image_root.is_dir():
        raise FileNotFoundError(f"image directory {image_root} (of {json_file}) does not exist")
    classes = coco_class_names(json_file)
    register_lazy_coco(name, json_file, image_root, classes)
    return classes
