"""Data loaders of the YOLOv7 LazyConfigs: official mosaic training pipeline
(:class:`YOLOv7MosaicMapper`, hyp.scratch.p5.yaml values) and the evaluation resize, on COCO.

The training image size is ``dataloader.train.mapper.image_size``; the evaluation resize and
the loss gains follow it. Mosaic partners are drawn from the same loaded dataset the sampler
draws from (``yolov7_train_loader``).
"""
from detectron2.config import LazyCall as L
from detectron2.data import DatasetMapper, build_detection_test_loader, get_detection_dataset_dicts
from detectron2.data import transforms as T
from omegaconf import OmegaConf
from yolov7_d2.data import YOLOv7MosaicMapper
from yolov7_d2.evaluation import YOLOv7COCOEvaluator
from yolov7_d2.lazy import yolov7_train_loader

dataloader = OmegaConf.create()

dataloader.train = L(yolov7_train_loader)(
    mapper=L(YOLOv7MosaicMapper)(
        is_train=True,
        dataset_dicts=L(get_detection_dataset_dicts)(names="coco_2017_train", filter_empty=False),  # official: keep background images
        image_size=640,
        image_format="RGB",
        mosaic_prob=1.0,
        mosaic9_prob=0.2,
        mixup_prob=0.15,
        paste_in_prob=0.15,
        degrees=0.0,
        translate=0.2,
        scale=0.9,
        shear=0.0,
        perspective=0.0,
        hsv_gains=[0.015, 0.7, 0.4],
        flip_lr=0.5,
        flip_ud=0.0,
        # Swap x and y with this probability (not official; for overhead imagery).
        transpose=0.0,
        box_min_size=2.0,
        box_max_aspect=20.0,
        box_min_area_ratio=0.1,
        # Mosaic, mixup and paste-in off for this many last iterations (0: never).
        close_mosaic_iters=0,
        max_iter="${train.max_iter}",
        # An int makes the augmentation reproducible; None draws a seed.
        seed=None,
        # Keep decoded, resized images in memory (official --cache-images).
        cache_images=False,
    ),
    total_batch_size=64,
    aspect_ratio_grouping=True,
    num_workers=4,
)

# Long side resized to the training size, aspect kept; the model pads with grey 114.
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_val", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[
            L(T.ResizeShortestEdge)(
                short_edge_length="${dataloader.train.mapper.image_size}",
                max_size="${dataloader.train.mapper.image_size}",
            ),
        ],
        image_format="${dataloader.train.mapper.image_format}",
    ),
    num_workers=4,
)

# COCO metrics; backend "faster_coco_eval" gives the same numbers several times faster
# (as TEST.YOLOV7.EVAL_BACKEND in yaml).
dataloader.evaluator = L(YOLOv7COCOEvaluator)(
    dataset_name="${dataloader.test.dataset.names}",
    output_dir="${train.output_dir}/inference/${dataloader.test.dataset.names}",
    backend="pycocotools",
)
