"""The official evaluation geometry (``test.py``: ``LoadImagesAndLabels(rect=True, pad=0.5)``):
images grouped by aspect ratio into batches, each batch letterboxed, centred, to one shape
``ceil(ratio * size / stride + pad) * stride``; a 640 x 480 photo at size 640 becomes 672 x 512
with 16 px of grey on every side. The predictions are mapped back to the image.

Here evaluation runs one image at a time (detectron2's test loader), and every image gets the
shape of the official batch it would be in, so the pixels the model sees are the official
ones. :func:`rect_batch_shapes` computes the shapes, :func:`letterbox_centered` pads an image
into its shape and :func:`boxes_to_resized_image` maps the predictions back.
"""
import math
from typing import List, Sequence, Tuple

import cv2
import numpy as np
import torch

from .augment import PAD_VALUE

__all__ = ["rect_batch_shapes", "resize_long_side_official", "letterbox_centered",
           "boxes_to_resized_image"]


def rect_batch_shapes(sizes_hw: Sequence[Tuple[int, int]], image_size: int, stride: int,
                      batch_size: int = 32, pad: float = 0.5) -> List[Tuple[int, int]]:
    """The letterbox shape (height, width) of each image, in the order given.

    Args:
        sizes_hw: (height, width) of every image of the dataset, in pixels.
        image_size: the long side after resizing (INPUT.YOLOV7.IMAGE_SIZE).
        stride: the model's largest stride (32 for P5, 64 for P6).
        batch_size: images per official batch (test.py: 32).
        pad: extra padding in strides (test.py: 0.5).
    """
    ratios = np.array([h / w for h, w in sizes_hw], dtype=np.float64)
    order = np.argsort(ratios, kind="stable")
    shapes: List[Tuple[int, int]] = [(0, 0)] * len(ratios)
    for start in range(0, len(order), batch_size):
        members = order[start:start + batch_size]
        low, high = ratios[members].min(), ratios[members].max()
        relative = (high, 1.0) if high < 1 else (1.0, 1.0 / low) if low > 1 else (1.0, 1.0)
        shape = tuple(int(math.ceil(r * image_size / stride + pad)) * stride for r in relative)
        for index in members:
            shapes[index] = shape
    return shapes


def resize_long_side_official(image: np.ndarray, image_size: int) -> np.ndarray:
    """The long side to ``image_size`` as official ``load_image`` at evaluation: area
    interpolation when shrinking, bilinear when enlarging, untouched at the size. The sides
    are floored (``int(w * r)``) as there, so the pixels equal test.py's; the training
    :func:`~.augment.resize_long_side` rounds instead and keeps the long side exact."""
    h, w = image.shape[:2]
    r = image_size / max(h, w)
    if r == 1:
        return image
    interp = cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, (max(int(w * r), 1), max(int(h * r), 1)), interpolation=interp)


def letterbox_centered(image: np.ndarray, shape_hw: Tuple[int, int]
                       ) -> Tuple[np.ndarray, Tuple[int, int]]:
    """``image`` centred on a grey canvas of ``shape_hw`` (never resized: the shapes of
    :func:`rect_batch_shapes` hold their images); returns the canvas and the (left, top)
    offset. An odd margin puts its extra pixel right / below, as official ``letterbox``."""
    h, w = image.shape[:2]
    dh, dw = (shape_hw[0] - h) / 2, (shape_hw[1] - w) / 2
    if dh < 0 or dw < 0:
        raise ValueError(f"image of {h}x{w} px does not fit its letterbox {shape_hw}")
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    canvas = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT,
                                value=(PAD_VALUE,) * 3)
    return canvas, (left, top)


def boxes_to_resized_image(boxes: torch.Tensor, offset: Tuple[int, int],
                           resized_hw: Tuple[int, int]) -> torch.Tensor:
    """Boxes (N, 4) xyxy on the letterbox canvas -> on the resized image it holds (the offset
    removed, clipped to it); detectron2's ``detector_postprocess`` then scales them to the
    original image."""
    left, top = offset
    shifted = boxes - boxes.new_tensor([left, top, left, top])
    height, width = resized_hw
    shifted[:, 0::2] = shifted[:, 0::2].clamp(0, width)
    shifted[:, 1::2] = shifted[:, 1::2].clamp(0, height)
    return shifted
