"""Test-time views: the image flipped left-right, up-down and / or transposed (x and y
swapped), at its own scale and at others, the predictions of every view mapped back to the
image and merged before NMS, as the official ``augment=True`` inference merges its flipped
and scaled views (scales 1, 0.83, 0.67). For overhead imagery, which has no up, the three
flips give all 8 right-angle rotations and reflections (the dihedral group of the square)."""
import itertools
import math
from typing import Callable, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["FLIP_NAMES", "flip_views", "check_scales", "flip_images", "scale_images",
           "unflip_boxes", "view_predictions"]

#: The generators: "lr" reverses x, "ud" reverses y, "transpose" swaps x and y.
FLIP_NAMES = ("lr", "ud", "transpose")

#: A view: (lr, ud, transpose) applied to the image in this order.
View = Tuple[bool, bool, bool]


def flip_views(flips: Sequence[str]) -> Tuple[View, ...]:
    """Every combination of the named generators, identity first (2 ** len(flips) views)."""
    unknown = set(flips) - set(FLIP_NAMES)
    if unknown:
        raise ValueError(f"unknown test-time flips {sorted(unknown)}; choose from {FLIP_NAMES}")
    on = [name in flips for name in FLIP_NAMES]
    return tuple(view for view in itertools.product(*[(False, True) if o else (False,)
                                                      for o in on]))


def flip_images(images: Tensor, view: View) -> Tensor:
    """images (N, C, H, W) as seen in ``view``: (N, C, W, H) when transposed."""
    lr, ud, transpose = view
    if lr:
        images = images.flip(-1)
    if ud:
        images = images.flip(-2)
    if transpose:
        images = images.transpose(-1, -2)
    return images


def unflip_boxes(boxes: Tensor, view: View, image_hw: Tuple[int, int]) -> Tensor:
    """Boxes (..., 4) cxcywh predicted on the ``view`` of an image of ``image_hw`` (the padded
    batch's height and width, before the view) mapped back to the image."""
    lr, ud, transpose = view
    boxes = boxes.clone()
    if transpose:
        boxes = boxes[..., [1, 0, 3, 2]]
    height, width = image_hw
    if ud:
        boxes[..., 1] = height - boxes[..., 1]
    if lr:
        boxes[..., 0] = width - boxes[..., 0]
    return boxes


def check_scales(scales: Sequence[float]) -> Tuple[float, ...]:
    """The test-time scales beyond 1 (which always runs) as a tuple; ValueError naming a scale
    that is not positive, or is 1."""
    scales = tuple(float(s) for s in scales)
    for scale in scales:
        if not scale > 0 or scale == 1.0:
            raise ValueError(f"test-time scale {scale} must be positive and not 1 (the image's "
                             "own scale always runs), e.g. (0.83, 0.67) as official")
    return scales


def scale_images(images: Tensor, scale: float, stride: int, pad_value: float) -> Tensor:
    """images (N, C, H, W) resized by ``scale`` (bilinear, to int(H * scale) x int(W *
    scale)) and padded at the bottom and right with ``pad_value`` to ceil(H * scale / stride)
    strides high and likewise wide, as the official ``scale_img`` of its augmented inference.
    Boxes predicted on the result map back to ``images`` divided by ``scale``."""
    height, width = images.shape[-2:]
    size = (max(1, int(height * scale)), max(1, int(width * scale)))
    scaled = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    padded = [math.ceil(side * scale / stride) * stride for side in (height, width)]
    return F.pad(scaled, (0, padded[1] - size[1], 0, padded[0] - size[0]), value=pad_value)


def view_predictions(decode: Callable[[Tensor], Tensor], images: Tensor,
                     views: Sequence[View], scales: Sequence[float], *, stride: int,
                     pad_value: float) -> Tensor:
    """The decoded rows of every flip view at every scale, mapped back to the images and
    concatenated; at scale 1 the identity view is left out (it is the plain forward). A view
    is flipped, then scaled (:func:`scale_images`), as official.

    Args:
        decode: images (N, C, H', W') -> (N, R', 5 + K) decoded rows (cxcywh in pixels,
            objectness, class probabilities) of the model on them.
        images: (N, C, H, W) the padded batch (H, W multiples of ``stride``).
        views: the flip views (:func:`flip_views`), identity first.
        scales: the scales beyond 1 (:func:`check_scales`).
        stride, pad_value: for :func:`scale_images`.
    Returns:
        (N, R_all, 5 + K) rows in the pixels of ``images``, for one NMS with the plain
        forward's. Call it only with a second view or a scale: there is nothing to add else.
    """
    image_hw = tuple(images.shape[-2:])
    merged = []
    for scale in (1.0, *scales):
        for view in views[1:] if scale == 1.0 else views:
            flipped = flip_images(images, view)
            if scale != 1.0:
                flipped = scale_images(flipped, scale, stride, pad_value)
            decoded = decode(flipped)
            merged.append(torch.cat([unflip_boxes(decoded[..., :4] / scale, view, image_hw),
                                     decoded[..., 4:]], dim=-1))
    return torch.cat(merged, dim=1)
