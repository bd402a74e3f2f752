"""Data pipeline of YOLOv7 for detectron2: the train-time mosaic mapper, the evaluation
mapper, and dataset registration (YOLO, VOC and COCO files; two bundled real datasets that
``tools/prepare_datasets.py`` fetches from package registries). Importing this package
registers nothing; call ``register_*``."""
from .datasets import (
    datasets_root,
    register_deepforest,
    register_labelme_examples,
    register_voc_dataset,
    register_yolo_dataset,
)
from .image_io import ImageLoadError
from .mapper import YOLOv7MosaicMapper, build_yolov7_train_loader
from .stream import YOLOv7TrainLoader
from .test_mapper import (
    YOLOv7LetterboxTestMapper,
    YOLOv7TestMapper,
    build_yolov7_test_loader,
    build_yolov7_test_mapper,
)

__all__ = [
    "YOLOv7MosaicMapper",
    "build_yolov7_train_loader",
    "YOLOv7TrainLoader",
    "build_yolov7_test_mapper",
    "YOLOv7LetterboxTestMapper",
    "YOLOv7TestMapper",
    "build_yolov7_test_loader",
    "ImageLoadError",
    "datasets_root",
    "register_deepforest",
    "register_labelme_examples",
    "register_yolo_dataset",
    "register_voc_dataset",
]
