"""Box operations of the YOLOv7 model, in the spirit of DETR's ``util/box_ops.py``.

Boxes are (..., 4) tensors, either "cxcywh" (centre x, centre y, width, height) or "xyxy"
(left, top, right, bottom), in one unit (pixels or grid cells). detectron2's own
``pairwise_iou`` (on ``Boxes``) serves the unbatched cases; :func:`batched_pairwise_iou` is the
per-image (N, P, Q) form the label assignment needs.
"""
import math

import torch
from torch import Tensor

__all__ = ["cxcywh_to_xyxy", "xyxy_to_cxcywh", "batched_pairwise_iou", "complete_iou"]


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(..., 4) cx, cy, w, h -> (..., 4) x0, y0, x1, y1."""
    xy, wh = boxes[..., :2], boxes[..., 2:]
    return torch.cat([xy - wh / 2, xy + wh / 2], -1)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(..., 4) x0, y0, x1, y1 -> (..., 4) cx, cy, w, h."""
    lo, hi = boxes[..., :2], boxes[..., 2:]
    return torch.cat([(lo + hi) / 2, hi - lo], -1)


def batched_pairwise_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of every box of ``boxes1`` (N, P, 4) with every box of ``boxes2`` (N, Q, 4), both
    xyxy, per batch element -> (N, P, Q). Computed in place: not differentiable."""
    a, b = boxes1[:, :, None], boxes2[:, None]
    # One axis at a time and in place: at most three (N, P, Q) tensors alive, where x and y
    # stacked took eight (in dense scenes, P x Q is 256 GT rows x 45 slots per GT).
    width = torch.minimum(a[..., 2], b[..., 2]).sub_(torch.maximum(a[..., 0], b[..., 0]))
    height = torch.minimum(a[..., 3], b[..., 3]).sub_(torch.maximum(a[..., 1], b[..., 1]))
    inter = width.clamp_(min=0).mul_(height.clamp_(min=0))
    area1 = (boxes1[..., 2:] - boxes1[..., :2]).prod(-1)
    area2 = (boxes2[..., 2:] - boxes2[..., :2]).prod(-1)
    # The official box_iou has no guard; this one keeps degenerate (padding) boxes at 0, not NaN.
    union = (area1[:, :, None] + area2[:, None, :]).sub_(inter).clamp_(min=1e-9)
    return inter.div_(union)


def complete_iou(pred: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    """CIoU (Zheng et al. 2020, "Distance-IoU Loss") of matching boxes (..., 4) cxcywh.

    As in the official code (and the DIoU authors' code) the trade-off weight alpha is
    treated as a constant in the backward pass.
    """
    p_lo, p_hi = pred[..., :2] - pred[..., 2:] / 2, pred[..., :2] + pred[..., 2:] / 2
    t_lo, t_hi = target[..., :2] - target[..., 2:] / 2, target[..., :2] + target[..., 2:] / 2
    inter = (torch.minimum(p_hi, t_hi) - torch.maximum(p_lo, t_lo)).clamp(min=0).prod(-1)
    pw, ph = pred[..., 2], pred[..., 3] + eps
    tw, th = target[..., 2], target[..., 3] + eps
    iou = inter / (pw * ph + tw * th - inter + eps)
    enclosing = torch.maximum(p_hi, t_hi) - torch.minimum(p_lo, t_lo)
    diagonal2 = enclosing.pow(2).sum(-1) + eps
    centre2 = (target[..., :2] - pred[..., :2]).pow(2).sum(-1)
    v = (4 / math.pi**2) * (torch.atan(tw / (th + eps)) - torch.atan(pw / (ph + eps))).pow(2)
    with torch.no_grad():
        # Clamped: corner rounding can put the IoU of identical boxes a hair above 1 (0 / 0).
        alpha = v / (v - iou + (1 + eps)).clamp(min=eps)
    return iou - (centre2 / diagonal2 + v * alpha)
