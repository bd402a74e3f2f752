"""DeepForest trees: real NEON aerial RGB images with hand-labelled tree crowns, as shipped
in the PyPI wheel ``deepforest==2.1.0`` (MIT licence, ``deepforest/data/``), tiled into a
small one-class COCO detection dataset.

Preparation: ``tools/prepare_datasets.py`` downloads the wheel (``python -m pip download
--no-deps --only-binary :all: deepforest==2.1.0``; the package registry is the only source),
checks its sha256 against :data:`WHEEL_SHA256` and calls :func:`write_deepforest_dataset`;
train_net.py and the tools run that tool for the registered splits on first use.
The tiling:

1. Every image of ``deepforest/data/`` with a Pascal VOC xml (4 images, 951 boxes) is read
   from the wheel and cut along a grid of :data:`TILE` px cells from its top-left corner.
   Whole cells are the tiles (the two 2019_YELL crops, 2299x2472 and 1249x1035, give 31);
   the cells the right and bottom edges cut short, and the two 400x400 images (one short
   cell each), are the "extra" pieces if both their sides are at least
   :data:`MIN_PIECE_SIDE` px (strips thinner than that are not used).
2. A box goes to every cell it overlaps, clipped to it, if the clipped part keeps at least
   :data:`MIN_VISIBLE_FRACTION` of its area (smaller slivers are dropped; the mapper's box
   filter would drop most of them anyway). All labels (Tree, and Alive / Dead in the SOAP
   image) become the one class ``tree``.
3. Split: tiles are numbered in reading order (source images sorted by name, rows top to
   bottom, tiles left to right); every third tile (number % 3 == 2) is validation, the
   others train. Result: train 21 tiles / 503 boxes, val 10 tiles / 231 boxes, extra 16
   pieces / 352 boxes (14 pieces of the YELL crops' edge strips, 219-416 x 203-416 px, and
   the OSBS and SOAP images of other sites). The extra pieces touch no val pixel: like the
   train tiles, they share only the crowns cut at a val tile's border. The main job
   (configs/deepforest/yolov7-tiny-trees.yaml) trains on them with the train tiles; the val
   tiles are the held-out set (docs/tree_recipes.md).
4. Tiles and pieces (PNG) and ``annotations/{train,val,extra}.json`` (COCO, ids from 1) are
   written under the dataset directory with a ``manifest.json`` of checksums; a later
   preparation with a valid manifest does nothing.
"""
from __future__ import annotations

import io
import logging
import shutil
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .common import register_lazy_coco
from .prepared import BundledDataset, Manifest, datasets_root, write_json

__all__ = [
    "REQUIREMENT",
    "WHEEL_SHA256",
    "TILE",
    "MIN_VISIBLE_FRACTION",
    "PREP_VERSION",
    "deepforest_dir",
    "MIN_PIECE_SIDE",
    "grid_cells",
    "build_deepforest_tiles",
    "write_deepforest_dataset",
    "register_deepforest",
]

logger = logging.getLogger(__name__)

REQUIREMENT = "deepforest==2.1.0"
#: sha256 of deepforest-2.1.0-py3-none-any.whl as observed on PyPI (20,639,595 bytes).
WHEEL_SHA256 = "8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54"
#: Tile side in pixels.
TILE = 416
#: A clipped box is kept if it keeps at least this fraction of its original area.
MIN_VISIBLE_FRACTION = 0.05
#: A cell cut short by the image's right or bottom edge is an extra piece if both its sides
#: are at least this long (px); thinner strips hold no whole crown of this data (median side
#: 36 px).
MIN_PIECE_SIDE = 64
#: Every VAL_EVERY-th tile (number % VAL_EVERY == VAL_EVERY - 1) is validation.
VAL_EVERY = 3
CLASSES = ["tree"]
#: The dataset's name in tools/prepare_datasets.py (``--only``) and its default directory.
NAME = "deepforest"
SPLITS = ("train", "val", "extra")
DATA_PREFIX = "deepforest/data/"
# Bump when the tiling / split rule changes: prepared copies with another version are redone.
PREP_VERSION = (f"deepforest-2.1.0/tile{TILE}/min{MIN_VISIBLE_FRACTION}/val{VAL_EVERY}"
                f"/extra{MIN_PIECE_SIDE}/v2")


def deepforest_dir(root: Optional[str | Path] = None) -> Path:
    """The dataset directory: ``root`` or ``<datasets_root()>/deepforest``."""
    return Path(root) if root else datasets_root() / NAME


def _parse_voc(xml_bytes: bytes) -> Tuple[str, int, int, np.ndarray]:
    """(image file name, width, height, (N, 4) xyxy boxes) of a Pascal VOC annotation."""
    root = ET.fromstring(xml_bytes)
    size = root.find("size")
    width, height = int(size.findtext("width")), int(size.findtext("height"))
    boxes = [[float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
             for obj in root.iter("object")]
    return root.findtext("filename"), width, height, np.array(boxes).reshape(-1, 4)


def grid_cells(width: int, height: int, boxes: np.ndarray, tile: int = TILE,
               min_visible: float = MIN_VISIBLE_FRACTION
               ) -> List[Tuple[int, int, int, int, np.ndarray]]:
    """The cells of a ``tile`` px grid from the top-left corner (rows, then columns), the
    last column and row cut short by the image's edges, each with its boxes: those
    overlapping it, clipped and shifted into cell coordinates, if they keep ``min_visible``
    of their area.

    Returns a list of (x0, y0, cell width, cell height, (M, 4) xyxy boxes in the cell)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    cells = []
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            x1, y1 = min(x0 + tile, width), min(y0 + tile, height)
            clipped = boxes.copy()
            clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(x0, x1)
            clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(y0, y1)
            cw, ch = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
            keep = (cw > 0) & (ch > 0) & (cw * ch >= min_visible * area)
            cells.append((x0, y0, x1 - x0, y1 - y0, clipped[keep] - [x0, y0, x0, y0]))
    return cells


def _read_sources(wheel: Path) -> List[Tuple[str, np.ndarray, np.ndarray]]:
    """(stem, HxWx3 RGB image, boxes) of every VOC-annotated image in the wheel's data."""
    from PIL import Image

    sources = []
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        xml_names = sorted(n for n in names if n.startswith(DATA_PREFIX) and n.endswith(".xml"))
        for xml_name in xml_names:
            file_name, width, height, boxes = _parse_voc(z.read(xml_name))
            image_name = DATA_PREFIX + file_name
            if image_name not in names:
                raise RuntimeError(f"{wheel}: {xml_name} names {file_name}, not in the wheel")
            with Image.open(io.BytesIO(z.read(image_name))) as im:
                image = np.asarray(im.convert("RGB"))
            if image.shape[:2] != (height, width):
                raise RuntimeError(f"{wheel}: {image_name} is {image.shape[1]}x{image.shape[0]}, "
                                   f"its xml says {width}x{height}")
            sources.append((Path(file_name).stem, image, boxes))
    return sources


def build_deepforest_tiles(wheel: Path, out_dir: Path, tile: int = TILE,
                           min_visible: float = MIN_VISIBLE_FRACTION) -> Dict[str, dict]:
    """Tile the wheel's annotated images into ``out_dir`` (``{split}/*.png`` and
    ``annotations/{split}.json``). No checksum or manifest here (see
    :func:`write_deepforest_dataset`). Returns {"counts": per split {"images", "boxes"},
    "files": the written paths relative to ``out_dir``}."""
    from PIL import Image

    out_dir = Path(out_dir)
    coco = {s: {"images": [], "annotations": [],
                "categories": [{"id": 1, "name": "tree", "supercategory": "plant"}]}
            for s in SPLITS}
    files: List[str] = []
    number = 0
    unused = []
    for stem, image, boxes in _read_sources(wheel):
        h, w = image.shape[:2]
        for x0, y0, cw, ch, cell_boxes in grid_cells(w, h, boxes, tile, min_visible):
            if (cw, ch) == (tile, tile):
                split = SPLITS[1] if number % VAL_EVERY == VAL_EVERY - 1 else SPLITS[0]
                number += 1
            elif min(cw, ch) >= MIN_PIECE_SIDE:
                split = SPLITS[2]
            else:
                unused.append(f"{stem} x{x0} y{y0} ({cw}x{ch}, {len(cell_boxes)} boxes)")
                continue
            rel = f"{split}/{stem}_x{x0:04d}_y{y0:04d}.png"
            (out_dir / split).mkdir(parents=True, exist_ok=True)
            crop = np.ascontiguousarray(image[y0:y0 + ch, x0:x0 + cw])
            Image.fromarray(crop).save(out_dir / rel)
            files.append(rel)
            data = coco[split]
            image_id = len(data["images"]) + 1
            data["images"].append({"id": image_id, "file_name": rel, "width": cw,
                                   "height": ch, "source": stem, "x0": x0, "y0": y0})
            for x1, y1, x2, y2 in cell_boxes.tolist():
                data["annotations"].append({
                    "id": len(data["annotations"]) + 1, "image_id": image_id, "category_id": 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0})
    if unused:
        logger.info("DeepForest: edge strips thinner than %d px, not used: %s",
                    MIN_PIECE_SIDE, ", ".join(unused))
    counts = {}
    for split in SPLITS:
        rel = f"annotations/{split}.json"
        write_json(out_dir / rel, coco[split])
        files.append(rel)
        counts[split] = {"images": len(coco[split]["images"]),
                         "boxes": len(coco[split]["annotations"])}
    return {"counts": counts, "files": files}


def write_deepforest_dataset(wheel: Path, out_dir: Path) -> dict:
    """Tile the checked ``wheel`` into ``out_dir`` (replacing an earlier preparation) and
    write its manifest last. Returns the manifest."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        built = build_deepforest_tiles(wheel, Path(tmp))
        for old in ("annotations", *SPLITS):  # leftovers of another preparation version
            shutil.rmtree(out_dir / old, ignore_errors=True)
        for rel in built["files"]:  # move into place only once everything is written
            (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / rel).replace(out_dir / rel)
    data = Manifest(out_dir, PREP_VERSION).write(
        built["files"], source=REQUIREMENT, source_sha256=WHEEL_SHA256, counts=built["counts"])
    logger.info("DeepForest prepared in %s: %s", out_dir, data["counts"])
    return data


def register_deepforest(root: Optional[str | Path] = None) -> List[str]:
    """Register ``deepforest_trees_train``, ``deepforest_trees_val`` and
    ``deepforest_trees_extra`` (one class, ``tree``) in ``deepforest_dir(root)``. Nothing is
    downloaded: ``tools/prepare_datasets.py`` prepares the tiles (train_net.py and the tools
    run it on first use; see :class:`~.prepared.BundledDataset`). Returns the registered
    names."""
    out_dir = deepforest_dir(root)
    bundled = BundledDataset(NAME, out_dir, PREP_VERSION)
    names = []
    for split in SPLITS:
        name = f"deepforest_trees_{split}"
        register_lazy_coco(name, out_dir / "annotations" / f"{split}.json", out_dir, CLASSES,
                           bundled)
        names.append(name)
    return names
