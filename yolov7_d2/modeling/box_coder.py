"""The YOLO box parameterisation (YOLOv5 / YOLOv7), the one decode used by inference, the
label assignment, the loss and the ONNX export.

A prediction's four box logits t at a cell of a level with stride s and an anchor (w_a, h_a):

    centre = (2 sigmoid(t_xy) - 0.5 + cell) * s        (the centre may leave its cell by 0.5)
    size   = (2 sigmoid(t_wh))^2 * anchor               (0 to 4 times the anchor)
"""
from typing import List, Optional

import torch
from torch import Tensor

__all__ = ["decode_boxes", "decode_predictions"]


def decode_boxes(box_logits: Tensor, anchors: Tensor, cells: Optional[Tensor] = None,
                 stride: float = 1.0) -> Tensor:
    """Box logits -> boxes cxcywh (see the module doc).

    Args:
        box_logits: (..., 4) raw t_x, t_y, t_w, t_h.
        anchors: (..., 2) anchor (w, h), broadcastable to the logits, in the unit of the output
            sizes (pixels; grid cells for the loss).
        cells: (..., 2) cell (column, row) of each prediction; then the centres are
            ``(offset + cell) * stride`` in pixels. None: the centres are the offsets from
            their cell's corner in grid cells (what the loss compares with its targets).
        stride: pixels per cell, used with ``cells``.
    Returns:
        (..., 4) cx, cy, w, h.
    """
    xy = box_logits[..., :2].sigmoid() * 2.0 - 0.5
    if cells is not None:
        xy = (xy + cells) * stride
    wh = (box_logits[..., 2:4].sigmoid() * 2.0) ** 2 * anchors
    return torch.cat([xy, wh], -1)


def decode_predictions(predictions: List[Tensor], anchors: Tensor, strides: List[int]) -> Tensor:
    """Decode raw head maps into boxes and probabilities in input-image pixels.

    Args:
        predictions: L maps (N, A, H_l, W_l, 5 + K), raw logits (any float dtype).
        anchors: (L, A, 2) anchor (w, h) in pixels.
        strides: L strides in pixels.
    Returns:
        (N, R, 5 + K) float32: [cx, cy, w, h, objectness, class probabilities...] for all
        R = sum A * H_l * W_l priors.
    """
    decoded = []
    for level, raw in enumerate(predictions):
        # Maps of a reduced-precision forward decode in float32: bfloat16 would round box
        # coordinates of a 640 px image to 2-4 px.
        raw = raw.float()
        n, a, h, w, k = raw.shape
        gy, gx = torch.meshgrid(
            torch.arange(h, device=raw.device, dtype=raw.dtype),
            torch.arange(w, device=raw.device, dtype=raw.dtype),
            indexing="ij",
        )
        cells = torch.stack([gx, gy], dim=-1).view(1, 1, h, w, 2)
        level_anchors = anchors[level].view(1, a, 1, 1, 2).to(raw.dtype)
        boxes = decode_boxes(raw[..., :4], level_anchors, cells, strides[level])
        decoded.append(torch.cat([boxes, raw[..., 4:].sigmoid()], dim=-1).view(n, -1, k))
    return torch.cat(decoded, dim=1)
