"""Pascal VOC folders as detectron2 datasets, with validation.

A VOC folder holds ``Annotations/<id>.xml``, ``JPEGImages/<id>.jpg`` and
``ImageSets/Main/<split>.txt`` (one image id a line). :func:`register_voc_dataset` registers
one split; the files are read when it is first loaded (then cached in the process).

Conventions (as detectron2's ``load_voc_instances``): the image is ``JPEGImages/<id>.jpg``
(or, if absent, the xml's ``<filename>`` in ``JPEGImages/``, or ``<id>`` with another image
extension); boxes are 1-based inclusive pixel indices, so ``xmin`` and ``ymin`` are reduced by
one; "difficult" objects are kept (``skip_difficult=True`` leaves them out); the image size
is the xml's ``<size>`` (read from the image header when missing or zero).

Class names: ``class_names`` if given; otherwise the object names found in every xml of
``Annotations/`` (all splits, so that every split of a folder gets the same classes): the 20
VOC classes in their usual order when all found names are VOC classes, else the found names,
sorted. That scan happens at registration (the metadata, hence NUM_CLASSES, needs it).

Validation: a missing image, malformed xml (parse error, missing or non-numeric
``bndbox`` / ``size`` field), an unknown class name, or a box outside the image by more than
:data:`BOX_TOLERANCE_PX` or with no area is a bad label: ``on_bad_label="error"`` raises
one ``ValueError`` naming each file (and object), ``"skip"`` logs each as a warning and
leaves the object out (the whole image for a missing image or unparsable xml).
"""
from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional, Sequence, Union

from detectron2.structures import BoxMode

from .bad_labels import BadLabels, check_on_bad_label
from .common import IMG_FORMATS, image_size, register_cached

__all__ = ["VOC_CLASSES", "BOX_TOLERANCE_PX", "voc_class_names", "load_voc_split",
           "register_voc_dataset"]

logger = logging.getLogger(__name__)

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
#: A box may leave the image by this many pixels (then it is clipped) before it is bad.
BOX_TOLERANCE_PX = 2.0
_THREADS = 8


def _object_names(xml_file: Path) -> List[str]:
    try:
        root = ET.parse(xml_file).getroot()
    except (ET.ParseError, OSError):
        return []  # reported when the split is loaded
    return [(obj.findtext("name") or "").strip() for obj in root.iter("object")]


def voc_class_names(root: Union[str, os.PathLike]) -> List[str]:
    """The default class names of a VOC folder (module doc)."""
    xml_files = sorted((Path(root) / "Annotations").glob("*.xml"))
    found = set()
    with ThreadPoolExecutor(_THREADS) as pool:
        for names in pool.map(_object_names, xml_files):
            found.update(n for n in names if n)
    if not found:
        raise ValueError(f"{root}: no object names found in Annotations/*.xml; pass "
                         "class_names")
    if found <= set(VOC_CLASSES):
        return list(VOC_CLASSES)
    names = sorted(found)
    logger.info("%s: object names are not the 20 VOC classes; using the %d names found, "
                "sorted: %s", root, len(names), names)
    return names


def _find_image(root: Path, image_id: str, xml_filename: Optional[str]) -> Optional[Path]:
    images = root / "JPEGImages"
    candidates = [images / f"{image_id}.jpg"]
    if xml_filename:
        candidates.append(images / xml_filename)
    candidates += [images / f"{image_id}.{ext}" for ext in IMG_FORMATS if ext != "jpg"]
    return next((c for c in candidates if c.is_file()), None)


def _number(node, key: str, where: str) -> float:
    text = node.findtext(key)
    if text is None:
        raise ValueError(f"{where}: missing <{key}>")
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{where}: <{key}> is not a number: {text.strip()!r}") from None


def _parse_one(args):
    """Worker: (record or None, [(where, reason)]) of one image id."""
    root, image_id, class_index, skip_difficult = args
    xml_file = root / "Annotations" / f"{image_id}.xml"
    try:
        tree = ET.parse(xml_file).getroot()
    except FileNotFoundError:
        return None, [(str(xml_file), "annotation file does not exist")]
    except ET.ParseError as e:
        return None, [(str(xml_file), f"malformed xml: {e}")]
    except OSError as e:
        return None, [(str(xml_file), f"cannot read: {e}")]
    image = _find_image(root, image_id, (tree.findtext("filename") or "").strip())
    if image is None:
        return None, [(str(xml_file), f"image {root / 'JPEGImages' / image_id}.jpg does not "
                                      "exist")]
    problems = []
    try:
        size = tree.find("size")
        w = int(_number(size, "width", "<size>")) if size is not None else 0
        h = int(_number(size, "height", "<size>")) if size is not None else 0
    except ValueError as e:
        w = h = 0
        problems.append((str(xml_file), f"{e}; size read from the image"))
    if w <= 0 or h <= 0:
        try:
            w, h = image_size(image)
        except Exception as e:
            return None, [(str(image), f"cannot read the image header: {e}")]
    annotations = []
    for k, obj in enumerate(tree.iter("object"), 1):
        name = (obj.findtext("name") or "").strip()
        where = f"{xml_file} (object {k}, {name or 'no name'})"
        if name not in class_index:
            problems.append((where, f"unknown class {name!r} (classes: "
                                    f"{', '.join(class_index)})"))
            continue
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        if difficult and skip_difficult:
            continue
        bndbox = obj.find("bndbox")
        if bndbox is None:
            problems.append((where, "missing <bndbox>"))
            continue
        try:
            x0, y0, x1, y1 = (_number(bndbox, key, "<bndbox>")
                              for key in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError as e:
            problems.append((where, str(e)))
            continue
        x0, y0 = x0 - 1.0, y0 - 1.0  # 1-based inclusive pixel indices
        t = BOX_TOLERANCE_PX
        if min(x0, y0) < -t or x1 > w + t or y1 > h + t:
            problems.append((where, f"box ({x0 + 1:g}, {y0 + 1:g}, {x1:g}, {y1:g}) outside the "
                                    f"{w}x{h} image"))
            continue
        x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(w)), min(y1, float(h))
        if x1 <= x0 or y1 <= y0:
            problems.append((where, "box with non-positive width or height"))
            continue
        annotations.append({"bbox": [x0, y0, x1, y1], "bbox_mode": BoxMode.XYXY_ABS,
                            "category_id": class_index[name], "iscrowd": 0,
                            "difficult": int(difficult)})
    record = {"file_name": str(image), "voc_id": image_id, "width": w, "height": h,
              "annotations": annotations}
    return record, problems


def load_voc_split(root: Union[str, os.PathLike], split: str, class_names: Sequence[str], *,
                   dataset_name: str = "voc", on_bad_label: str = "error",
                   skip_difficult: bool = False) -> List[dict]:
    """detectron2 dataset dicts of ``ImageSets/Main/<split>.txt`` (module doc)."""
    check_on_bad_label(on_bad_label)
    root = Path(root)
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        raise FileNotFoundError(f"{split_file} does not exist (VOC split {split!r})")
    ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"{split_file} lists no image")
    class_index = {n: i for i, n in enumerate(class_names)}
    bad = BadLabels(dataset_name, on_bad_label)
    with ThreadPoolExecutor(min(_THREADS, len(ids))) as pool:
        results = list(pool.map(_parse_one,
                                [(root, i, class_index, skip_difficult) for i in ids]))
    dicts = []
    for record, problems in results:
        for where, reason in problems:
            bad.add(where, reason)
        if record is not None:
            record["image_id"] = len(dicts)
            dicts.append(record)
    bad.finish()
    logger.info("%s: %d images, %d objects, %d classes", dataset_name, len(dicts),
                sum(len(d["annotations"]) for d in dicts), len(class_names))
    return dicts


def register_voc_dataset(root: Union[str, os.PathLike], split: str, name: Optional[str] = None,
                         class_names: Optional[Sequence[str]] = None, *,
                         on_bad_label: str = "error", skip_difficult: bool = False) -> str:
    """Register split ``split`` of the VOC folder ``root`` as ``name`` (default
    ``voc_<folder name>_<split>``) with metadata ``thing_classes`` (module doc for the
    default class names). Returns the name."""
    check_on_bad_label(on_bad_label)
    root = Path(root).expanduser().resolve()
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"{root} is not a VOC folder: {root / sub} is missing")
    if not (root / "ImageSets" / "Main" / f"{split}.txt").is_file():
        raise FileNotFoundError(f"{root / 'ImageSets' / 'Main' / (split + '.txt')} does not exist "
                                f"(VOC split {split!r})")
    classes = list(class_names) if class_names else voc_class_names(root)
    name = name or f"voc_{root.name}_{split}"

    def load():
        return load_voc_split(root, split, classes, dataset_name=name,
                              on_bad_label=on_bad_label, skip_difficult=skip_difficult)

    register_cached(name, load, thing_classes=classes, dirname=str(root), split=split,
                    evaluator_type="coco")
    return name
