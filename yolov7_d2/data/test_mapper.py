"""Evaluation mappers of YOLOv7 for detectron2.

* :func:`build_yolov7_test_mapper`: the mapper of a config, either
  :class:`YOLOv7LetterboxTestMapper` (the official ``test.py`` geometry, the default) or
  :class:`YOLOv7TestMapper` (long side resized to ``IMAGE_SIZE``, padded bottom / right by
  the model).
* :func:`build_yolov7_test_loader`: detectron2's test loader whose unreadable images are
  skipped with a warning naming the file instead of ending the evaluation.
* :class:`FittedResize` / :class:`ResizeLongSide`: resizes that keep a pixel on each side
  of very long images and leave an image at its size untouched (also used by the
  predictors).
"""
from __future__ import annotations

import logging
from typing import List, Sequence

import numpy as np
import torch

from detectron2.data import DatasetMapper, build_detection_test_loader
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .datasets.common import image_size
from .eval_letterbox import letterbox_centered, rect_batch_shapes, resize_long_side_official
from .image_io import ImageLoadError, read_image

__all__ = [
    "YOLOv7TestMapper",
    "YOLOv7LetterboxTestMapper",
    "build_yolov7_test_mapper",
    "build_yolov7_test_loader",
    "ResizeLongSide",
    "FittedResize",
    "fitted_resize",
]

logger = logging.getLogger(__name__)


#: Key of the dict :class:`YOLOv7TestMapper` returns for a file it cannot read.
UNREADABLE = "unreadable"


class YOLOv7TestMapper(DatasetMapper):
    """detectron2's evaluation ``DatasetMapper`` (``is_train=False``, same arguments) reading
    with :func:`~.image_io.read_image`. A file that cannot be read gives
    ``{"file_name", "image_id", UNREADABLE: reason}`` instead of an error: the loader of
    :func:`build_yolov7_test_loader` leaves it out with a warning."""

    def __init__(self, is_train: bool = False, **kwargs):
        if is_train:
            raise ValueError("YOLOv7TestMapper maps evaluation images; train with "
                             "YOLOv7MosaicMapper")
        super().__init__(False, **kwargs)

    def __call__(self, dataset_dict: dict) -> dict:
        """
        Returns:
            dict: the input's keys without "annotations", with "image" (C, H, W) uint8 in
            ``image_format``, resized by the augmentations; or the unreadable marker above.
        """
        dataset_dict = {k: v for k, v in dataset_dict.items() if k != "annotations"}
        try:
            image = read_image(dataset_dict["file_name"], format=self.image_format)
            utils.check_image_size(dataset_dict, image)
        except (ImageLoadError, utils.SizeMismatchError) as e:
            return {"file_name": dataset_dict["file_name"],
                    "image_id": dataset_dict.get("image_id"), UNREADABLE: str(e)}
        image = self._transform(image, dataset_dict)
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return dataset_dict

    def _transform(self, image: np.ndarray, dataset_dict: dict) -> np.ndarray:
        """The image the model sees (the augmentations applied)."""
        aug_input = T.AugInput(image)
        self.augmentations(aug_input)
        return aug_input.image

    def with_shapes(self, dataset: Sequence[dict]) -> Sequence[dict]:
        """The dataset dicts this mapper needs (here: as they are)."""
        return dataset


class YOLOv7LetterboxTestMapper(YOLOv7TestMapper):
    """The official evaluation geometry (:mod:`.eval_letterbox`): the long side resized to
    ``image_size`` (area interpolation when shrinking, as official ``load_image``), centred
    on the grey canvas of the dict's "letterbox_shape", which :meth:`with_shapes` sets to the
    shape of the official aspect-ratio batch (``test.py``: 32 images, half a stride of
    padding). Adds "letterbox": (left, top, resized height, resized width), with which the
    model maps its predictions back to the image."""

    def __init__(self, *, image_size: int, stride: int, image_format: str = "RGB",
                 batch_size: int = 32):
        super().__init__(False, augmentations=[], image_format=image_format)
        self.image_size, self.stride, self.batch_size = image_size, stride, batch_size

    def with_shapes(self, dataset: Sequence[dict]) -> List[dict]:
        """Copies of the dicts with "letterbox_shape" (height, width), from their "height" and
        "width" (read from the file header where a dict has none)."""
        dicts = [dict(d) for d in dataset]
        for d in dicts:
            if "height" not in d or "width" not in d:
                d["width"], d["height"] = image_size(d["file_name"])
        shapes = rect_batch_shapes([(d["height"], d["width"]) for d in dicts], self.image_size,
                                   self.stride, self.batch_size)
        for d, shape in zip(dicts, shapes):
            d["letterbox_shape"] = shape
        return dicts

    def _transform(self, image: np.ndarray, dataset_dict: dict) -> np.ndarray:
        resized = resize_long_side_official(image, self.image_size)
        shape = dataset_dict.get("letterbox_shape")
        if shape is None:  # a dict not prepared by with_shapes: its own batch of one
            shape = rect_batch_shapes([resized.shape[:2]], self.image_size, self.stride)[0]
        canvas, (left, top) = letterbox_centered(resized, shape)
        dataset_dict["letterbox"] = (left, top, *resized.shape[:2])
        return canvas


class SkipUnreadable:
    """Iterates the batches of an evaluation loader without the :data:`UNREADABLE` samples
    (each logged as a warning naming the file; empty batches are left out); the summary
    count is logged at the end of each pass. Has the loader's ``len``."""

    def __init__(self, loader):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        skipped = 0
        for batch in self.loader:
            readable = [x for x in batch if UNREADABLE not in x]
            for x in batch:
                if UNREADABLE in x:
                    logger.warning("Evaluation: %s; image skipped (its objects count as "
                                   "missed in the metrics)", x[UNREADABLE])
            skipped += len(batch) - len(readable)
            if readable:
                yield readable
        if skipped:
            logger.warning("Evaluation: %d unreadable image(s) skipped", skipped)


def build_yolov7_test_loader(dataset: Sequence[dict], *, mapper: YOLOv7TestMapper,
                             num_workers: int = 0) -> SkipUnreadable:
    """detectron2's ``build_detection_test_loader`` (batch 1, each process its share) whose
    images that cannot be read are skipped with a warning instead of ending the evaluation."""
    return SkipUnreadable(build_detection_test_loader(mapper.with_shapes(dataset), mapper=mapper,
                                                      num_workers=num_workers))


class ResizeLongSide(T.ResizeShortestEdge):
    """``ResizeShortestEdge(size, max_size=size)``: long side resized to ``size``, aspect kept,
    bilinear; except that the short side is at least 1 px, where detectron2 rounds it to 0
    for an image over 2 x ``size`` times longer than wide (it could then be neither resized
    nor have its predictions mapped back to its size)."""

    def __init__(self, size: int):
        super().__init__(short_edge_length=size, max_size=size)
        self.size = size

    def get_transform(self, image: np.ndarray) -> T.Transform:
        h, w = image.shape[:2]
        new_h, new_w = self.get_output_shape(h, w, self.size, self.size)
        return FittedResize(h, w, new_h, new_w, self.interp)


class FittedResize(T.ResizeTransform):
    """detectron2's ``ResizeTransform``, except that each side is at least 1 px (detectron2's
    ``ResizeShortestEdge`` rounds the short side of a very long image, over 2 x the size
    times longer than wide, to 0, which can be neither resized nor mapped back), and that
    an image it leaves at its size is returned as it is (detectron2 would have PIL copy
    it: 1.5 ms for a 640 x 480 photo)."""

    def __init__(self, h: int, w: int, new_h: int, new_w: int, interp=None):
        super().__init__(h, w, max(new_h, 1), max(new_w, 1), interp)

    def apply_image(self, img: np.ndarray, interp=None) -> np.ndarray:
        if img.shape[:2] == (self.h, self.w) == (self.new_h, self.new_w):
            return img
        return super().apply_image(img, interp)


def fitted_resize(transform: T.Transform) -> T.Transform:
    """A ``ResizeTransform`` as a :class:`FittedResize`; any other transform unchanged."""
    if isinstance(transform, T.ResizeTransform):
        return FittedResize(transform.h, transform.w, transform.new_h, transform.new_w,
                            transform.interp)
    return transform


def build_yolov7_test_mapper(cfg) -> YOLOv7TestMapper:
    """Evaluation mapper of ``cfg``. ``TEST.YOLOV7.LETTERBOX`` (default): the official
    ``test.py`` geometry, :class:`YOLOv7LetterboxTestMapper` (images centred in the shapes of
    official aspect-ratio batches of ``TEST.YOLOV7.RECT_BATCH_SIZE``, half a stride of grey
    around them). Otherwise: long side resized to ``INPUT.YOLOV7.IMAGE_SIZE`` (bilinear) and
    no padding here: the model pads bottom / right to a multiple of its stride with grey
    :data:`~.augment.PAD_VALUE`. Either way the outputs keep the original "height"/"width",
    to which the model's postprocessing maps the predictions."""
    from ..config_checks import largest_stride

    size = cfg.INPUT.YOLOV7.IMAGE_SIZE
    if cfg.TEST.YOLOV7.LETTERBOX:
        return YOLOv7LetterboxTestMapper(
            image_size=size, stride=max(largest_stride(cfg) or 32, 32),
            image_format=cfg.INPUT.FORMAT, batch_size=cfg.TEST.YOLOV7.RECT_BATCH_SIZE)
    return YOLOv7TestMapper(augmentations=[ResizeLongSide(size)], image_format=cfg.INPUT.FORMAT)
