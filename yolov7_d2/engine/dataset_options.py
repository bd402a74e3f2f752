"""Command-line options of ``train_net.py`` and ``tools/`` that train on dataset files: a YOLO
``data.yaml``, a Pascal VOC folder or COCO json files. The dataset is registered and
DATASETS.TRAIN, DATASETS.TEST and MODEL.YOLOV7.NUM_CLASSES point at it, except those given
as command-line options."""
from __future__ import annotations

import logging
from typing import Dict, Iterable, Optional, Tuple

from detectron2.data import MetadataCatalog

from ..data.datasets import register_coco_json, register_voc_dataset, register_yolo_dataset
from ..data.datasets.bad_labels import check_on_bad_label

__all__ = ["COCO_TRAIN_NAME", "COCO_VAL_NAME", "add_dataset_arguments",
           "apply_dataset_arguments"]

logger = logging.getLogger(__name__)

#: Names under which ``--coco-json`` / ``--coco-val-json`` register their files.
COCO_TRAIN_NAME, COCO_VAL_NAME = "coco_json_train", "coco_json_val"


def add_dataset_arguments(parser) -> None:
    """``--yolo-data``, ``--voc-root`` (``--voc-train-split``, ``--voc-test-split``),
    ``--coco-json`` (``--coco-val-json``)."""
    group = parser.add_argument_group(
        "dataset files", "train on a YOLO data.yaml, a Pascal VOC folder or COCO json files: "
        "registers it and sets DATASETS.TRAIN / DATASETS.TEST and MODEL.YOLOV7.NUM_CLASSES, "
        "except those given as command-line options")
    exclusive = group.add_mutually_exclusive_group()
    exclusive.add_argument("--yolo-data", metavar="DATA_YAML", default="",
                           help="an Ultralytics / YOLOv7 data.yaml with YOLO txt labels")
    exclusive.add_argument("--voc-root", metavar="DIR", default="",
                           help="a VOC folder (Annotations/, JPEGImages/, ImageSets/Main/)")
    group.add_argument("--voc-train-split", default="trainval", metavar="SPLIT",
                       help="ImageSets/Main/<SPLIT>.txt for training (default: trainval)")
    group.add_argument("--voc-test-split", default="test", metavar="SPLIT",
                       help="ImageSets/Main/<SPLIT>.txt for evaluation (default: test)")
    exclusive.add_argument("--coco-json", nargs=2, metavar=("TRAIN_JSON", "IMAGE_DIR"),
                           help=f"COCO-format training annotations and their images "
                                f"(registered as {COCO_TRAIN_NAME})")
    group.add_argument("--coco-val-json", nargs=2, metavar=("VAL_JSON", "IMAGE_DIR"),
                       help=f"with --coco-json: COCO-format validation annotations and their "
                            f"images (registered as {COCO_VAL_NAME}; without it: no evaluation)")


def _opts_keys(opts: Iterable[str]) -> set:
    opts = list(opts or [])
    return {str(k) for k in opts[0::2]}


def _register_coco(args) -> Tuple[str, Optional[str]]:
    """(train name, val name or None) of ``--coco-json`` / ``--coco-val-json``."""
    classes = register_coco_json(COCO_TRAIN_NAME, *args.coco_json)
    if not args.coco_val_json:
        return COCO_TRAIN_NAME, None
    val_classes = register_coco_json(COCO_VAL_NAME, *args.coco_val_json)
    if val_classes != classes:
        raise ValueError(f"the categories of {args.coco_val_json[0]} {val_classes} differ from "
                         f"those of {args.coco_json[0]} {classes} (names by increasing id)")
    return COCO_TRAIN_NAME, COCO_VAL_NAME


def _register(cfg, args) -> Optional[Tuple[str, Optional[str]]]:
    """Registers the dataset the options name; (train name, test name or None), or None."""
    yolo_data = getattr(args, "yolo_data", "")
    voc_root = getattr(args, "voc_root", "")
    coco_json = getattr(args, "coco_json", None)
    if getattr(args, "coco_val_json", None) and not coco_json:
        raise ValueError("--coco-val-json needs --coco-json")
    given = [flag for flag, value in (("--yolo-data", yolo_data), ("--voc-root", voc_root),
                                      ("--coco-json", coco_json)) if value]
    if len(given) > 1:
        raise ValueError(f"{' and '.join(given)} exclude each other")
    if coco_json:
        return _register_coco(args)
    if not given:
        return None
    on_bad_label = check_on_bad_label(cfg.DATASETS.YOLOV7.ON_BAD_LABEL)
    if yolo_data:
        names = register_yolo_dataset(yolo_data, on_bad_label=on_bad_label)
        return names["train"], names["val"]
    train = register_voc_dataset(voc_root, args.voc_train_split, on_bad_label=on_bad_label)
    test = register_voc_dataset(voc_root, args.voc_test_split, on_bad_label=on_bad_label,
                                class_names=MetadataCatalog.get(train).thing_classes)
    return train, test


def apply_dataset_arguments(cfg, args) -> Optional[Dict[str, object]]:
    """Register the dataset named by ``args.yolo_data`` / ``args.voc_root`` /
    ``args.coco_json`` (if any) and, on the unfrozen ``cfg``, set DATASETS.TRAIN,
    DATASETS.TEST (empty without a validation split) and MODEL.YOLOV7.NUM_CLASSES unless
    ``args.opts`` sets them. Returns {"train", "test", "classes"} or None."""
    registered = _register(cfg, args)
    if registered is None:
        return None
    train, test = registered
    classes = list(MetadataCatalog.get(train).thing_classes)
    given = _opts_keys(getattr(args, "opts", []))
    if "DATASETS.TRAIN" not in given:
        cfg.DATASETS.TRAIN = (train,)
    if "DATASETS.TEST" not in given:
        cfg.DATASETS.TEST = (test,) if test else ()
    if "MODEL.YOLOV7.NUM_CLASSES" not in given:
        cfg.MODEL.YOLOV7.NUM_CLASSES = len(classes)
    elif cfg.MODEL.YOLOV7.NUM_CLASSES != len(classes):
        logger.warning("MODEL.YOLOV7.NUM_CLASSES %d (given) but the dataset has %d classes %s",
                       cfg.MODEL.YOLOV7.NUM_CLASSES, len(classes), classes)
    logger.info("dataset: train %s, test %s, %d classes %s", cfg.DATASETS.TRAIN,
                cfg.DATASETS.TEST, len(classes), classes)
    return {"train": train, "test": test, "classes": classes}
