"""Datasets as detectron2 registrations: YOLO ``data.yaml``, Pascal VOC folders, COCO json
files, and two bundled real datasets (DeepForest tiles, labelme examples) whose prepared
copies live in a local cache (``$YOLOV7_D2_DATASETS``, default ``datasets/`` in the
checkout). Nothing is registered at import time, and neither registering nor loading
downloads anything: a bundled dataset is prepared by ``tools/prepare_datasets.py``, which
train_net.py and the tools run for the ones they use on first use."""
from .coco_format import register_coco_json
from .deepforest import deepforest_dir, register_deepforest
from .labelme import labelme_dir, register_labelme_examples
from .prepared import ENV_VAR, BundledDataset, datasets_root
from .voc_format import register_voc_dataset
from .yolo_format import register_yolo_dataset

__all__ = [
    "ENV_VAR",
    "BundledDataset",
    "datasets_root",
    "deepforest_dir",
    "register_deepforest",
    "labelme_dir",
    "register_labelme_examples",
    "register_yolo_dataset",
    "register_voc_dataset",
    "register_coco_json",
]
