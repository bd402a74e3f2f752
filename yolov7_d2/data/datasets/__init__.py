"""Real datasets reachable from package registries, prepared into a local cache
(``$YOLOV7_D2_DATASETS``, default ``datasets/`` in the checkout) and registered with
detectron2 on request: nothing is registered or downloaded at import time."""
from .coco_format import register_coco_json
from .common import ENV_VAR, datasets_root
from .deepforest import deepforest_dir, prepare_deepforest, register_deepforest
from .labelme import labelme_dir, prepare_labelme_examples, register_labelme_examples
from .voc_format import register_voc_dataset
from .yolo_format import register_yolo_dataset

__all__ = [
    "ENV_VAR",
    "datasets_root",
    "deepforest_dir",
    "prepare_deepforest",
    "register_deepforest",
    "labelme_dir",
    "prepare_labelme_examples",
    "register_labelme_examples",
    "register_yolo_dataset",
    "register_voc_dataset",
    "register_coco_json",
]
