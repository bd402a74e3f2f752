"""YOLO-format datasets (Ultralytics / official YOLOv7 ``data.yaml`` + txt labels) as
detectron2 datasets.

``data.yaml``::

    path: ../my_data          # optional dataset root (relative: see below)
    train: images/train       # a directory of images (searched recursively), a .txt file
    val: images/val           #   listing image paths (relative lines: to the .txt's directory),
    test: test.txt            #   an image file, or a list of those; test is optional
    nc: 2                     # optional; must equal the number of names
    names: [cat, dog]         # or {0: cat, 1: dog} (ids 0..nc-1)

Relative ``train`` / ``val`` / ``test`` entries are resolved against ``path`` (or, without
``path``, against the yaml's directory, then the working directory as official YOLOv7 yamls
assume). A relative ``path`` is taken from the yaml's directory, else from the working
directory (YOLOv5 / Ultralytics yamls).

Labels: the label file of ``.../images/.../x.jpg`` is ``.../labels/.../x.txt`` (the last
``/images/`` of the path becomes ``/labels/``; with none, the ``.txt`` next to the image).
One object per line, normalized to the image width / height:

* ``cls cx cy w h`` (a box), or
* ``cls x1 y1 x2 y2 x3 y3 ...`` (a polygon, at least 3 points, as YOLO segmentation labels):
  the object gets the polygon as ``segmentation`` and its enclosing box.

Validation. An image without a label file is a background image (the YOLO convention); they
are counted and logged at INFO level. A missing or unreadable image file, a class id out of
range, or a malformed line (wrong number of fields, non-numeric or non-finite value,
non-integer class id, a coordinate outside [0, 1] by more than :data:`COORD_TOLERANCE`,
zero or negative width / height) is a *bad label*: with ``on_bad_label="error"`` (default,
``cfg.DATASETS.YOLOV7.ON_BAD_LABEL``) loading raises one ``ValueError`` listing each problem
as ``file:line: reason``; with ``"skip"`` each is logged as a warning naming file and line,
and the line (or the image, for a bad image file) is left out. Coordinates within the
tolerance are clipped to the image.

Image sizes are read from the file headers (PIL, EXIF orientation applied as detectron2's
``read_image`` does) when the dataset is first loaded (``DatasetCatalog.get``), not at
registration, and only once per process: the loaded dicts are cached. Only the header is
read here, so a truncated image passes; the trainer decodes every image before the first
step (:mod:`yolov7_d2.data.validate`, ``DATASETS.YOLOV7.VALIDATE_IMAGES``) and skips it then.
Identical label lines of one file are kept once (the count is logged as a warning).

The command-line options of ``train_net.py`` / ``tools/`` (``--yolo-data`` ...) are in
:mod:`yolov7_d2.engine.dataset_options`.
"""
from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from detectron2.structures import BoxMode

from .bad_labels import BadLabels, check_on_bad_label
from .common import IMG_FORMATS, image_size, register_cached

__all__ = [
    "COORD_TOLERANCE",
    "read_data_yaml",
    "image_files",
    "label_path",
    "parse_label_file",
    "load_yolo_split",
    "register_yolo_dataset",
]

logger = logging.getLogger(__name__)

#: A normalized coordinate may leave [0, 1] by this much (then it is clipped) before the line
#: counts as malformed.
COORD_TOLERANCE = 0.01
_THREADS = 8


# ---------------------------------------------------------------------------- data.yaml
def _class_names(data: dict, yaml_path: Path) -> List[str]:
    names = data.get("names")
    nc = data.get("nc")
    if names is None:
        if nc is None:
            raise ValueError(f"{yaml_path}: needs 'names' (a list, or a dict id: name)")
        names = [f"class_{i}" for i in range(int(nc))]
    elif isinstance(names, dict):
        try:
            ids = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise ValueError(f"{yaml_path}: 'names' dict keys must be integer class ids, got "
                             f"{list(names)}") from None
        if ids != list(range(len(ids))):
            raise ValueError(f"{yaml_path}: 'names' dict keys must be 0..{len(ids) - 1}, "
                             f"got {ids}")
        names = [names[k] if k in names else names[str(k)] for k in ids]
    elif isinstance(names, (list, tuple)):
        names = list(names)
    else:
        raise ValueError(f"{yaml_path}: 'names' must be a list or a dict, got {names!r}")
    names = [str(n) for n in names]
    if not names:
        raise ValueError(f"{yaml_path}: 'names' is empty")
    if len(set(names)) != len(names):
        raise ValueError(f"{yaml_path}: duplicate class names in {names}")
    if nc is not None and int(nc) != len(names):
        raise ValueError(f"{yaml_path}: nc: {nc} but {len(names)} names {names}")
    return names


def read_data_yaml(data_yaml: Union[str, os.PathLike]) -> dict:
    """Reads and checks a ``data.yaml``. Returns {"names": [...], "root": Path,
    "splits": {split: [Path, ...]}} with every train / val / test entry resolved (each must
    exist)."""
    import yaml

    yaml_path = Path(data_yaml).expanduser().resolve()
    if not yaml_path.is_file():
        raise FileNotFoundError(f"data yaml {yaml_path} does not exist")
    try:
        data = yaml.safe_load(yaml_path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{yaml_path}: not valid yaml: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{yaml_path}: expected a mapping with train, val and names")
    root = yaml_path.parent
    if data.get("path"):
        root = Path(str(data["path"])).expanduser()
        if not root.is_absolute():
            # Relative to the yaml's directory; else (YOLOv5 / Ultralytics yamls) to the cwd.
            in_yaml_dir = (yaml_path.parent / root).resolve()
            root = in_yaml_dir if in_yaml_dir.exists() or not root.exists() else root.resolve()
    splits = {}
    for split in ("train", "val", "test"):
        spec = data.get(split)
        if not spec:
            if split in ("train", "val"):
                raise ValueError(f"{yaml_path}: needs '{split}' (a directory of images, a .txt "
                                 "list of image paths, or a list of those)")
            continue
        entries = spec if isinstance(spec, (list, tuple)) else [spec]
        resolved = []
        for entry in entries:
            p = Path(str(entry)).expanduser()
            if not p.is_absolute():
                candidate = root / p
                if not candidate.exists() and not data.get("path") and p.exists():
                    # Official YOLOv7 yamls (train: ./coco/train2017.txt): the working directory.
                    candidate = p.resolve()
                p = candidate
            if not p.exists():
                raise FileNotFoundError(f"{yaml_path}: {split}: {entry!r} -> {p} does not exist")
            resolved.append(p)
        splits[split] = resolved
    return {"names": _class_names(data, yaml_path), "root": root, "splits": splits,
            "yaml": yaml_path}


def _is_image(path: Path) -> bool:
    return path.suffix[1:].lower() in IMG_FORMATS


def image_files(sources: Sequence[Path]) -> List[Tuple[Path, str]]:
    """(image path, where it was named) of every image of ``sources``: directories
    (recursive, by extension), .txt lists (one path a line; relative paths against the
    list's directory) or image files. Sorted, without duplicates."""
    found: Dict[Path, str] = {}
    for source in sources:
        source = Path(source)
        if source.is_dir():
            for dirpath, _, files in os.walk(source, followlinks=True):
                for f in files:
                    p = Path(dirpath) / f
                    if _is_image(p):
                        found.setdefault(p, str(source))
        elif source.suffix.lower() == ".txt":
            with open(source, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    line = line.strip()
                    if not line:
                        continue
                    p = Path(line).expanduser()
                    p = p if p.is_absolute() else source.parent / p
                    found.setdefault(Path(os.path.normpath(p)), f"{source}:{lineno}")
        else:
            found.setdefault(source, str(source))
    return sorted(found.items())


def label_path(image: Union[str, os.PathLike]) -> Path:
    """``.../images/.../x.jpg`` -> ``.../labels/.../x.txt`` (the last ``images`` directory
    of the path); without an ``images`` directory, the ``.txt`` next to the image."""
    parts = list(Path(image).parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _in_range(values: Sequence[float], low: float = 0.0, high: float = 1.0) -> bool:
    return all(low - COORD_TOLERANCE <= v <= high + COORD_TOLERANCE for v in values)


def _clip01(v: float) -> float:
    return min(max(v, 0.0), 1.0)


def parse_label_line(line: str, num_classes: int):
    """One label line -> (class id, xyxy box normalized, polygon normalized or None).
    Raises ValueError with the reason when the line is malformed."""
    fields = line.split()
    n = len(fields)
    if n != 5 and (n < 7 or n % 2 == 0):
        raise ValueError(f"{n} fields; expected 5 (cls cx cy w h) or an odd number >= 7 "
                         "(cls x1 y1 x2 y2 x3 y3 ...)")
    values = []
    for field in fields:
        try:
            v = float(field)
        except ValueError:
            raise ValueError(f"non-numeric value {field!r}") from None
        if not math.isfinite(v):
            raise ValueError(f"non-finite value {field!r}")
        values.append(v)
    cls = values[0]
    if cls != int(cls):
        raise ValueError(f"class id {fields[0]!r} is not an integer")
    cls = int(cls)
    if not 0 <= cls < num_classes:
        raise ValueError(f"class id {cls} out of range [0, {num_classes})")
    coords = values[1:]
    if n == 5:
        cx, cy, w, h = coords
        if w <= 0 or h <= 0:
            raise ValueError(f"non-positive box size w={w:g} h={h:g}")
        x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        if not _in_range(coords) or not _in_range((x0, y0, x1, y1)):
            raise ValueError("box outside the image: normalized coordinates must be in "
                             f"[0, 1] (tolerance {COORD_TOLERANCE})")
        box = [_clip01(x0), _clip01(y0), _clip01(x1), _clip01(y1)]
        if box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError("box has no area inside the image")
        return cls, box, None
    if not _in_range(coords):
        raise ValueError("polygon outside the image: normalized coordinates must be in "
                         f"[0, 1] (tolerance {COORD_TOLERANCE})")
    points = [_clip01(v) for v in coords]
    xs, ys = points[0::2], points[1::2]
    box = [min(xs), min(ys), max(xs), max(ys)]
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError("degenerate polygon: non-positive width or height")
    return cls, box, points


def parse_label_file(path: Path, num_classes: int):
    """(objects, problems) of a label file: objects as (class id, normalized xyxy box,
    normalized polygon or None), problems as (line number, reason). A missing file is
    ``None`` objects (background image); an unreadable one a problem at line 0."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, []
    except (OSError, UnicodeDecodeError) as e:
        return [], [(0, f"cannot read label file: {e}")]
    objects, problems = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            objects.append(parse_label_line(line, num_classes))
        except ValueError as e:
            shown = line.strip()
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            problems.append((lineno, f"{e}: {shown!r}"))
    return objects, problems


def _without_duplicates(objects: list) -> Tuple[list, int]:
    """``objects`` of :func:`parse_label_file` without repeats (identical label lines, which
    would count one object twice), and how many were removed. Departure: official YOLOv7
    drops the whole image ("duplicate labels" assert in ``cache_labels``); later YOLOv5 and
    Ultralytics remove the repeats, as here."""
    seen, kept = set(), []
    for cls, box, polygon in objects:
        key = (cls, tuple(box), None if polygon is None else tuple(polygon))
        if key not in seen:
            seen.add(key)
            kept.append((cls, box, polygon))
    return kept, len(objects) - len(kept)


def _load_one(args):
    """Worker: image header + label file of one image."""
    image, num_classes = args
    try:
        size = image_size(image)
    except FileNotFoundError:
        return None, "image file does not exist", None, []
    except Exception as e:  # PIL.UnidentifiedImageError, truncated header, ...
        return None, f"cannot read the image header: {type(e).__name__}: {e}", None, []
    labels = label_path(image)
    objects, problems = parse_label_file(labels, num_classes)
    return size, None, objects, problems


def load_yolo_split(sources: Sequence[Path], class_names: Sequence[str], *,
                    dataset_name: str = "yolo", on_bad_label: str = "error") -> List[dict]:
    """detectron2 dataset dicts of the images of ``sources`` (see :func:`image_files`) with
    their YOLO labels; see the module doc for validation."""
    check_on_bad_label(on_bad_label)
    images = image_files(sources)
    if not images:
        raise ValueError(f"dataset {dataset_name!r}: no image found in "
                         f"{[str(s) for s in sources]} (extensions {', '.join(IMG_FORMATS)})")
    bad = BadLabels(dataset_name, on_bad_label)
    num_classes = len(class_names)
    with ThreadPoolExecutor(min(_THREADS, len(images))) as pool:
        results = list(pool.map(_load_one, [(p, num_classes) for p, _ in images]))
    dicts, no_label, n_objects, duplicates = [], 0, 0, {}
    for (image, named_in), (size, image_error, objects, problems) in zip(images, results):
        if image_error is not None:
            where = str(image) if named_in == str(image) else f"{image} (named in {named_in})"
            bad.add(where, image_error)
            continue
        labels = label_path(image)
        for lineno, reason in problems:
            bad.add(f"{labels}:{lineno}", reason)
        if objects is None:
            no_label += 1
            objects = []
        objects, removed = _without_duplicates(objects)
        if removed:
            duplicates[str(labels)] = removed
        w, h = size
        annotations = []
        for cls, (x0, y0, x1, y1), polygon in objects:
            ann = {"bbox": [x0 * w, y0 * h, x1 * w, y1 * h], "bbox_mode": BoxMode.XYXY_ABS,
                   "category_id": cls, "iscrowd": 0}
            if polygon is not None:
                ann["segmentation"] = [[v * (w if i % 2 == 0 else h)
                                        for i, v in enumerate(polygon)]]
            annotations.append(ann)
        n_objects += len(annotations)
        dicts.append({"file_name": str(image), "image_id": len(dicts), "width": w, "height": h,
                      "annotations": annotations})
    bad.finish()
    if duplicates:
        example = next(iter(duplicates.items()))
        logger.warning("%s: %d duplicate label line(s) removed from %d label file(s) (e.g. %d "
                       "in %s)", dataset_name, sum(duplicates.values()), len(duplicates),
                       example[1], example[0])
    if no_label:
        logger.info("%s: %d of %d images have no label file: background images (no objects), "
                    "as in YOLO", dataset_name, no_label, len(images))
    logger.info("%s: %d images, %d objects, %d classes", dataset_name, len(dicts), n_objects,
                num_classes)
    return dicts


def _default_prefix(yaml_path: Path) -> str:
    stem = yaml_path.stem
    return yaml_path.parent.name if stem.lower() in ("data", "dataset") else stem


def register_yolo_dataset(data_yaml: Union[str, os.PathLike], name_prefix: Optional[str] = None,
                          on_bad_label: str = "error") -> Dict[str, str]:
    """Register the splits of a YOLO ``data.yaml`` (module doc) as ``<prefix>_train``,
    ``<prefix>_val`` (and ``<prefix>_test``) with metadata ``thing_classes``. The prefix
    defaults to the yaml's stem (its directory's name for ``data.yaml`` / ``dataset.yaml``).

    The yaml is read and its entries checked now; images and labels when a split is first
    loaded. Registering a name again replaces it. Returns {split: registered name}."""
    check_on_bad_label(on_bad_label)
    info = read_data_yaml(data_yaml)
    prefix = name_prefix or _default_prefix(info["yaml"])
    names = {}
    for split, sources in info["splits"].items():
        name = f"{prefix}_{split}"

        def load(sources=sources, name=name):
            return load_yolo_split(sources, info["names"], dataset_name=name,
                                   on_bad_label=on_bad_label)

        register_cached(name, load, thing_classes=list(info["names"]),
                        data_yaml=str(info["yaml"]), split=split, evaluator_type="coco")
        names[split] = name
    return names

