"""Data loaders of the YOLOv7 LazyConfigs: official mosaic training pipeline
(:class:`YOLOv7MosaicMapper`, hyp.scratch.p5.yaml values) and the evaluation resize, on COCO.

The training image size is ``dataloader.train.mapper.image_size``; the evaluation resize and
the loss gains follow it. Mosaic partners are drawn from the same loaded dataset the sampler
draws from (``yolov7_train_loader``). Both datasets are validated when instantiated
(``load_dataset_dicts``: every image decoded once, cached in ``image_checks.json`` of the
output directory; unreadable images and bad boxes left out with warnings).
"""
from omegaconf import OmegaConf

from yolov7_d2.data import YOLOv7LetterboxTestMapper, YOLOv7MosaicMapper, build_yolov7_test_loader
from yolov7_d2.data.mapper import BoxFilter, FlipProbs, MixProbs, PerspectiveRange
from yolov7_d2.data.validate import load_dataset_dicts
from yolov7_d2.evaluation import YOLOv7COCOEvaluator
from yolov7_d2.lazy import yolov7_train_loader

from detectron2.config import LazyCall as L

dataloader = OmegaConf.create()

dataloader.train = L(yolov7_train_loader)(
    mapper=L(YOLOv7MosaicMapper)(
        is_train=True,
        dataset_dicts=L(load_dataset_dicts)(
            names="coco_2017_train",
            filter_empty=False,  # official: keep background images
            # on_bad_image="error" raises, listing every unreadable image, instead.
            on_bad_image="skip",
            cache_file="${train.output_dir}/image_checks.json",
            key="dataloader.train.mapper.dataset_dicts.names",  # named in error messages
        ),
        image_size=640,
        image_format="RGB",
        mix=L(MixProbs)(mosaic=1.0, mosaic9=0.2, mixup=0.15, paste_in=0.15),
        perspective=L(PerspectiveRange)(
            degrees=0.0, translate=0.2, scale=0.9, shear=0.0, perspective=0.0
        ),
        hsv_gains=[0.015, 0.7, 0.4],
        # transpose: swap x and y with this probability (not official; for overhead imagery).
        flips=L(FlipProbs)(lr=0.5, ud=0.0, transpose=0.0),
        box_filter=L(BoxFilter)(min_size=2.0, max_aspect=20.0, min_area_ratio=0.1),
        # Mosaic, mixup and paste-in off for this many last iterations (0: never).
        close_mosaic_iters=0,
        max_iter="${train.max_iter}",
        # Side of the window cut from each mosaic, objects at image_size scale (0: image_size).
        mosaic_crop_size=0,
        # An int makes the augmentation reproducible; None draws a seed.
        seed=None,
        # Keep decoded, resized images in memory (official --cache-images).
        cache_images=False,
        # Decode JPEGs 2, 4 or 8 times the image size or more at that fraction (not official).
        reduced_jpeg_decode=True,
    ),
    total_batch_size=64,
    num_workers=4,
)

# The official test.py geometry: long side resized to the training size, each image centred
# in the shape of its official aspect-ratio batch (32 images, half a stride of grey 114
# around; stride 64 for P6). An image that cannot be read is skipped with a warning.
dataloader.test = L(build_yolov7_test_loader)(
    dataset=L(load_dataset_dicts)(
        names="coco_2017_val",
        filter_empty=False,
        on_bad_image="${dataloader.train.mapper.dataset_dicts.on_bad_image}",
        cache_file="${dataloader.train.mapper.dataset_dicts.cache_file}",
        key="dataloader.test.dataset.names",
    ),
    mapper=L(YOLOv7LetterboxTestMapper)(
        image_size="${dataloader.train.mapper.image_size}",
        stride=32,
        image_format="${dataloader.train.mapper.image_format}",
        batch_size=32,
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
