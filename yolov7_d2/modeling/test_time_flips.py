"""Test-time flips: the image flipped left-right, up-down and / or transposed (x and y
swapped), the predictions of every view mapped back to the image and merged before NMS, as
the official ``augment=True`` inference merges its flipped and scaled views. For overhead
imagery, which has no up, the three generators give all 8 right-angle rotations and
reflections (the dihedral group of the square)."""
import itertools
from typing import Sequence, Tuple

import torch
from torch import Tensor

__all__ = ["FLIP_NAMES", "flip_views", "flip_images", "unflip_boxes", "flipped_predictions"]

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


def flipped_predictions(decode, images: Tensor, views: Sequence[View]) -> Tensor:
    """The decoded rows of every view, mapped back to the images and concatenated.

    Args:
        decode: images (N, C, H', W') -> (N, R, 5 + K) decoded rows (cxcywh in pixels,
            objectness, class probabilities) of the model on them.
        images: (N, C, H, W) the padded batch.
        views: the views to run.
    Returns:
        (N, len(views) * R, 5 + K) rows in the pixels of ``images``, for one NMS.
    """
    image_hw = tuple(images.shape[-2:])
    merged = []
    for view in views:
        decoded = decode(flip_images(images, view))
        merged.append(torch.cat([unflip_boxes(decoded[..., :4], view, image_hw),
                                 decoded[..., 4:]], dim=-1))
    return torch.cat(merged, dim=1)
