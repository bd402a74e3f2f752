"""Datasets validated before training, training and evaluation sets alike.

A bad file used to be met only when it was sampled (a truncated evaluation JPEG at the
first evaluation, thousands of iterations in) and then killed the run without naming it.
Before the first step now:

* :func:`check_images` decodes every image completely (:func:`~.image_io.image_check`) in a
  thread pool. Results are cached in a json file (default ``OUTPUT_DIR/image_checks.json``)
  keyed by absolute path, file size and modification time: a second run only stats the files.
* :func:`drop_bad_images` leaves out missing, corrupt and truncated images and images whose
  size disagrees with the dataset's ``width`` / ``height``, each logged as a warning naming
  the file and the reason, with a summary count; ``on_bad_image="error"``
  (``DATASETS.YOLOV7.ON_BAD_IMAGE``) raises :class:`BadImageError` listing every one.
* :func:`sanitize_boxes` drops malformed, non-finite, negative-size, zero-size and
  out-of-image boxes and clips boxes partly outside the image, with counts and one example
  per file.
* :func:`load_dataset_dicts` does all of it after detectron2's ``get_detection_dataset_dicts``
  (the LazyConfig entry); :func:`dataset_dicts_from_config` reads the yaml keys and checks
  that the category ids fit the model; :func:`check_datasets` checks, when the trainer is
  built, that the datasets are registered with the model's class count and validates
  ``DATASETS.TEST``.

A file that goes bad after validation is skipped where it is met, with a warning naming it:
the train mapper draws another sample, the evaluation loader leaves the image out.
"""
from __future__ import annotations

import difflib
import json
import logging
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from detectron2.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts
from detectron2.data.build import filter_images_with_only_crowd_annotations
from detectron2.structures import BoxMode
from detectron2.utils import comm

from ..utils.io import atomic_write
from .datasets.bad_labels import MAX_LOGGED, BadLabels, check_on_bad_label
from .image_io import ImageLoadError, image_check

__all__ = [
    "ON_BAD_IMAGE_KEY",
    "CACHE_NAME",
    "BadImageError",
    "DatasetConfigError",
    "ImageCheck",
    "check_images",
    "drop_bad_images",
    "sanitize_boxes",
    "load_dataset_dicts",
    "dataset_dicts_from_config",
    "check_datasets",
]

logger = logging.getLogger(__name__)

ON_BAD_IMAGE_KEY = "DATASETS.YOLOV7.ON_BAD_IMAGE"
#: The cache file in OUTPUT_DIR when DATASETS.YOLOV7.IMAGE_CHECK_CACHE is empty.
CACHE_NAME = "image_checks.json"
#: Bumped when the reader changes what it accepts: older caches are then ignored.
CACHE_VERSION = 1
_THREADS = min(8, os.cpu_count() or 1)
_CHECKED_MODES = (BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)


class BadImageError(ValueError):
    """Unreadable images with ``on_bad_image="error"``; the message lists every one."""


class DatasetConfigError(ValueError):
    """A dataset named in the config is unregistered, empty, or disagrees with the model."""


class ImageCheck(NamedTuple):
    """The outcome of decoding one file: its size in pixels (after EXIF orientation) or,
    when it cannot be read, 0, 0 and the reason."""

    width: int
    height: int
    error: Optional[str]


# ---------------------------------------------------------------------------- image checks
def _load_cache(path: Optional[str]) -> dict:
    """{absolute path: [size, mtime_ns, width, height, error]} of the cache file, or {}."""
    if not path or not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        logger.warning("image check cache %s is unreadable (%s): checking every image", path, e)
        return {}
    return data.get("images", {}) if data.get("version") == CACHE_VERSION else {}


def _save_cache(path: str, entries: dict) -> None:
    try:
        def write(tmp: str) -> None:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"version": CACHE_VERSION, "images": entries}, f)

        atomic_write(path, write)  # readers never see a half-written file
    except OSError as e:  # a read-only OUTPUT_DIR costs the next run a full check, no more
        logger.warning("cannot write the image check cache %s: %s", path, e)


def _decode(file_name: str) -> ImageCheck:
    try:
        return ImageCheck(*image_check(file_name), None)
    except ImageLoadError as e:
        return ImageCheck(0, 0, e.reason)


def check_images(file_names: Iterable[str], cache_file: Optional[str] = None,
                 write_cache: bool = True) -> Dict[str, ImageCheck]:
    """Decode each file once, unless ``cache_file`` holds a result for the same absolute
    path, size in bytes and modification time (ns).

    Args:
        file_names: image paths (repeats are checked once).
        cache_file: json cache path, or None for no cache.
        write_cache: write new results to ``cache_file`` (the main process only, in DDP).

    Returns:
        {file name: :class:`ImageCheck`}; a missing file has the error "file does not exist".
    """
    cache = _load_cache(cache_file)
    results: Dict[str, ImageCheck] = {}
    todo: Dict[str, List[int]] = {}
    for name in file_names:
        if name in results or name in todo:
            continue
        try:
            stat = os.stat(name)
        except FileNotFoundError:
            results[name] = ImageCheck(0, 0, "file does not exist")
            continue
        except OSError as e:
            results[name] = ImageCheck(0, 0, f"cannot stat the file: {e}")
            continue
        stamp = [stat.st_size, stat.st_mtime_ns]
        entry = cache.get(os.path.abspath(name))
        if entry is not None and entry[:2] == stamp:
            results[name] = ImageCheck(*entry[2:])
        else:
            todo[name] = stamp
    if todo:
        logger.info("Decoding %d image(s) to check them (%d known from %s)", len(todo),
                    len(results), cache_file or "no cache")
        with ThreadPoolExecutor(min(_THREADS, len(todo))) as pool:
            for (name, stamp), check in zip(todo.items(), pool.map(_decode, todo)):
                results[name] = check
                cache[os.path.abspath(name)] = stamp + list(check)
        if cache_file and write_cache:
            _save_cache(cache_file, cache)
    return results


def _image_problem(dataset_dict: dict, check: ImageCheck) -> Optional[str]:
    if check.error is not None:
        return check.error
    expected = (dataset_dict.get("width"), dataset_dict.get("height"))
    if None not in expected and expected != (check.width, check.height):
        # detectron2's check_image_size would raise on it in the middle of training.
        return (f"the image is {check.width}x{check.height} (after EXIF orientation) but the "
                f"dataset says {expected[0]}x{expected[1]}")
    return None


def drop_bad_images(dataset_dicts: List[dict], dataset_name: str, *,
                    on_bad_image: str = "skip", cache_file: Optional[str] = None) -> List[dict]:
    """The dicts whose image decodes, at the size the dict gives (dicts without
    ``width`` / ``height`` get the decoded ones). See the module doc for the reporting.

    Raises:
        BadImageError: ``on_bad_image="error"`` and some image is bad (all are listed).
        DatasetConfigError: no image of the dataset can be read.
    """
    check_on_bad_label(on_bad_image, ON_BAD_IMAGE_KEY)
    start = time.perf_counter()
    checks = check_images((d["file_name"] for d in dataset_dicts), cache_file,
                          write_cache=comm.is_main_process())
    bad = BadLabels(dataset_name, on_bad_image, key=ON_BAD_IMAGE_KEY, what="bad image file(s)",
                    max_listed=None, error=BadImageError)
    kept = []
    for d in dataset_dicts:
        check = checks[d["file_name"]]
        problem = _image_problem(d, check)
        if problem is not None:
            bad.add(d["file_name"], problem)
            continue
        d.setdefault("width", check.width)
        d.setdefault("height", check.height)
        kept.append(d)
    bad.finish()
    logger.info("%s: %d of %d images are readable (checked in %.1f s)", dataset_name,
                len(kept), len(dataset_dicts), time.perf_counter() - start)
    if not kept:
        raise DatasetConfigError(f"dataset {dataset_name!r}: none of its {len(dataset_dicts)} "
                                 "images can be read (see the warnings above)")
    return kept


# ---------------------------------------------------------------------------- boxes
def _checked_box(bbox, mode: BoxMode, width: Optional[int],
                 height: Optional[int]) -> Tuple[Optional[List[float]], Optional[str]]:
    """(the box, clipped to the image when it leaves it, in ``mode``; None) or
    (None; the reason to drop it). Pixel boxes only: other modes are kept as they are."""
    if mode not in _CHECKED_MODES:
        return list(bbox), None
    try:
        values = np.asarray(bbox, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return None, "non-numeric coordinate"
    if values.size != 4:
        return None, f"{values.size} coordinates instead of 4"
    if not np.isfinite(values).all():
        return None, "non-finite coordinate"
    x0, y0, a, b = values.tolist()
    w, h = (a, b) if mode == BoxMode.XYWH_ABS else (a - x0, b - y0)
    # BoxMode.convert would turn XYWH [100, 100, -40, -30] into a valid-looking box.
    if w < 0 or h < 0:
        return None, "negative width or height"
    if w == 0 or h == 0:
        return None, "zero width or height"
    if width is None or height is None:  # nothing to clip against
        return values.tolist(), None
    if x0 >= 0 and y0 >= 0 and x0 + w <= width and y0 + h <= height:
        return values.tolist(), None
    x1, y1 = min(x0 + w, float(width)), min(y0 + h, float(height))
    x0, y0 = max(x0, 0.0), max(y0, 0.0)
    if x1 <= x0 or y1 <= y0:
        return None, "outside the image"
    return ([x0, y0, x1, y1] if mode == BoxMode.XYXY_ABS else [x0, y0, x1 - x0, y1 - y0]), None


def _sanitize_one(dataset_dict: dict) -> Tuple[Counter, Optional[str]]:
    """Sets a new "annotations" list in the dict, without bad boxes, with copies of the
    clipped ones; returns (counts by reason and "clipped", the first problem as an example)."""
    counts, example, kept = Counter(), None, []
    for ann in dataset_dict.get("annotations", []):
        mode = BoxMode(ann["bbox_mode"])
        original = list(ann["bbox"])
        box, reason = _checked_box(original, mode, dataset_dict.get("width"),
                                   dataset_dict.get("height"))
        if box is not None and box != original:
            reason, ann = "clipped", dict(ann, bbox=box)  # a copy: the dataset's stays as is
        if reason is not None:
            counts[reason] += 1
            example = example or f"{original} ({mode.name}): {reason}"
        if box is not None:
            kept.append(ann)
    if "annotations" in dataset_dict:
        dataset_dict["annotations"] = kept
    return counts, example


def _describe(counts: Counter) -> str:
    dropped = {k: v for k, v in counts.items() if k != "clipped"}
    parts = []
    if dropped:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(dropped.items()))
        parts.append(f"{sum(dropped.values())} box(es) dropped ({reasons})")
    if counts["clipped"]:
        parts.append(f"{counts['clipped']} box(es) clipped to the image")
    return ", ".join(parts)


def sanitize_boxes(dataset_dicts: Sequence[dict], dataset_name: str) -> Counter:
    """Drops (or clips) bad boxes of ``dataset_dicts`` (new "annotations" lists; annotation
    dicts are not modified), logging one line per file with an example (the first
    :data:`MAX_LOGGED` files as warnings) and the totals.

    Returns:
        Counter: boxes dropped by reason, and "clipped".
    """
    totals, files = Counter(), 0
    for d in dataset_dicts:
        counts, example = _sanitize_one(d)
        if not counts:
            continue
        totals += counts
        files += 1
        level = logging.WARNING if files <= MAX_LOGGED else logging.DEBUG
        logger.log(level, "%s: %s; e.g. %s", d["file_name"], _describe(counts), example)
    if totals:
        logger.warning("%s: %s in %d image(s)", dataset_name, _describe(totals), files)
    return totals


# ---------------------------------------------------------------------------- datasets
def _main_process_first(fn: Callable[[], List[dict]]) -> List[dict]:
    """``fn()`` on the main process, then on the others, which then find its results in the
    cache: each file is decoded once, not once per GPU."""
    if comm.is_main_process():
        result = fn()
    comm.synchronize()
    if not comm.is_main_process():
        result = fn()
    return result


def check_registered(names: Sequence[str], key: str) -> None:
    """DatasetConfigError naming ``key`` unless every name is a registered dataset."""
    registered = sorted(DatasetCatalog.list())
    for name in names:
        if name not in registered:
            close = difflib.get_close_matches(name, registered, n=3)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            more = f" and {len(registered) - 8} more" if len(registered) > 8 else ""
            raise DatasetConfigError(
                f"{key} names dataset {name!r}, which is not registered.{hint} Register it "
                "before training (train_net.py --yolo-data data.yaml or --voc-root DIR; in code "
                "register_yolo_dataset, register_voc_dataset or detectron2's "
                f"register_coco_instances), or set {key} to registered names (registered: "
                f"{', '.join(registered[:8])}{more}).")


def load_dataset_dicts(names: Union[str, Sequence[str]], *, filter_empty: bool = False,
                       validate_images: bool = True, on_bad_image: str = "skip",
                       cache_file: Optional[str] = None, key: str = "dataset") -> List[dict]:
    """detectron2's ``get_detection_dataset_dicts(names, filter_empty)`` with the datasets
    checked (registered, non-empty), the images validated (``validate_images``, see
    :func:`drop_bad_images`) and the boxes sanitized (:func:`sanitize_boxes`); images left
    with no annotation are then dropped when ``filter_empty``. ``key`` names the config
    entry in error messages."""
    names = [names] if isinstance(names, str) else list(names)
    check_registered(names, key)
    label = ", ".join(names)
    try:
        dicts = get_detection_dataset_dicts(names, filter_empty=False)
    except AssertionError as e:  # detectron2: "Dataset 'x' is empty!"
        raise DatasetConfigError(f"{key}: {e} Check its files, or leave it out of {key}.") from e
    if not isinstance(dicts, list):  # datasets registered as torch Datasets: not inspected
        return dicts
    # Shallow copies: what the registered loader returned (maybe a list it keeps) stays as is.
    dicts = [dict(d) for d in dicts]
    if validate_images:
        dicts = _main_process_first(lambda: drop_bad_images(
            dicts, label, on_bad_image=on_bad_image, cache_file=cache_file))
    sanitize_boxes(dicts, label)
    if filter_empty and "annotations" in dicts[0]:
        dicts = filter_images_with_only_crowd_annotations(dicts)
    return dicts


def check_class_count(names: Sequence[str], num_classes: int, key: str,
                      more_ok: bool = False) -> None:
    """DatasetConfigError unless each dataset's ``thing_classes`` (when it has them) counts
    ``num_classes`` (MODEL.YOLOV7.NUM_CLASSES). With ``more_ok`` (training sets), a model of
    more classes than the dataset is only warned about: it trains, the extra classes are never
    positive. The evaluation cannot map predictions of classes the dataset lacks."""
    for name in names:
        classes = MetadataCatalog.get(name).get("thing_classes", None)
        if more_ok and classes is not None and len(classes) < num_classes:
            logger.warning(
                "dataset %r (%s) has %d classes but MODEL.YOLOV7.NUM_CLASSES is %d: the model "
                "learns %d classes that never occur. Set MODEL.YOLOV7.NUM_CLASSES %d unless "
                "that is meant.", name, key, len(classes), num_classes,
                num_classes - len(classes), len(classes))
        elif classes is not None and len(classes) != num_classes:
            shown = ", ".join(map(str, classes[:10])) + (", ..." if len(classes) > 10 else "")
            raise DatasetConfigError(
                f"dataset {name!r} ({key}) has {len(classes)} classes (thing_classes: {shown}) "
                f"but MODEL.YOLOV7.NUM_CLASSES is {num_classes}: set MODEL.YOLOV7.NUM_CLASSES "
                f"{len(classes)}, or name a dataset with {num_classes} classes in {key}.")


def _check_category_ids(dicts: Sequence[dict], num_classes: int, label: str, key: str) -> None:
    top = max((a["category_id"] for d in dicts for a in d.get("annotations", [])), default=-1)
    if top >= num_classes:
        raise DatasetConfigError(
            f"dataset {label} ({key}) has category_id {top} but MODEL.YOLOV7.NUM_CLASSES is "
            f"{num_classes}: ids must be contiguous in [0, NUM_CLASSES); raise "
            "MODEL.YOLOV7.NUM_CLASSES or map the ids.")


def image_check_cache(cfg) -> str:
    """DATASETS.YOLOV7.IMAGE_CHECK_CACHE, or ``OUTPUT_DIR/image_checks.json`` when empty."""
    return cfg.DATASETS.YOLOV7.IMAGE_CHECK_CACHE or os.path.join(cfg.OUTPUT_DIR, CACHE_NAME)


def dataset_dicts_from_config(cfg, names: Sequence[str], key: str,
                              filter_empty: bool = False) -> List[dict]:
    """:func:`load_dataset_dicts` of ``names`` (the datasets of config entry ``key``) with the
    DATASETS.YOLOV7 keys; their category ids must be below MODEL.YOLOV7.NUM_CLASSES."""
    names = list(names)
    num_classes = cfg.MODEL.YOLOV7.NUM_CLASSES
    options = cfg.DATASETS.YOLOV7
    dicts = load_dataset_dicts(names, filter_empty=filter_empty,
                               validate_images=options.VALIDATE_IMAGES,
                               on_bad_image=options.ON_BAD_IMAGE,
                               cache_file=image_check_cache(cfg), key=key)
    if isinstance(dicts, list):
        _check_category_ids(dicts, num_classes, ", ".join(names), key)
    return dicts


def check_datasets(cfg) -> None:
    """Before training: DATASETS.TRAIN and DATASETS.TEST name registered datasets whose
    ``thing_classes`` count MODEL.YOLOV7.NUM_CLASSES (a model of fewer classes would crash the
    loss, of another count the COCO evaluation; of more than a training set: a warning), and
    each DATASETS.TEST set is loaded and validated with :func:`dataset_dicts_from_config` now,
    not at the first evaluation (which then finds its images in the cache). The training
    images are validated when the train loader loads them
    (:meth:`~.mapper.YOLOv7MosaicMapper.from_config`)."""
    for key in ("DATASETS.TRAIN", "DATASETS.TEST"):
        names = list(cfg.DATASETS[key.split(".")[1]])
        check_registered(names, key)
        check_class_count(names, cfg.MODEL.YOLOV7.NUM_CLASSES, key,
                          more_ok=key == "DATASETS.TRAIN")
    for name in cfg.DATASETS.TEST:
        dataset_dicts_from_config(cfg, [name], "DATASETS.TEST")
