"""YOLOv7 label assignment: YOLOv5-style candidate cells, then SimOTA on the lead head.

YOLOv7 (Wang et al. 2022, sec. 4.2) assigns both heads from the *lead* head's predictions
("lead guided" assignment): the fine assignment (3 cells per GT and anchor) trains the lead
head, the coarse one (5 cells) trains the auxiliary head. Each is the YOLOv5 candidate
search followed by SimOTA (Ge et al. 2021, "YOLOX").

Unlike the official ``build_targets``, which loops over images and GT boxes, everything here
is batched: GT boxes are padded to (N, M) with a mask and every candidate lives in a fixed
"slot" (level, neighbour, anchor, GT). SimOTA then runs on the slots that hold a candidate,
compacted in slot order. The only loop is over levels and over chunks of GT rows (to bound
memory); the hot path reads one value back to the host (the most candidates in an image).
"""
from typing import List, NamedTuple, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from detectron2.utils.memory import retry_if_cuda_oom

from .box_coder import decode_boxes
from .box_ops import batched_pairwise_iou, cxcywh_to_xyxy

__all__ = ["LevelAssignment", "Assignment", "YOLOv7Assigner", "candidate_cells"]

# Candidate neighbours in the official order: the centre cell, then the cell to the left,
# above, to the right, below. Each is (axis, direction); the centre has no axis.
NEIGHBOURS = ((None, 0), (0, -1), (1, -1), (0, 1), (1, 1))


class LevelAssignment(NamedTuple):
    """The candidate slots of one level: S = 5 * A * M per image, ordered (neighbour, anchor,
    GT) like the official candidate list, so that ties are met in the same order.

    anchor: (S,) anchor index of each slot (the same in every image).
    gj, gi: (N, S) cell row and column (clamped to the grid).
    positive: (N, S) the slot is a positive of this assignment.
    gt_index: (N, S) index into the M padded ground truths of the matched GT (0 elsewhere).
    """

    anchor: Tensor
    gj: Tensor
    gi: Tensor
    positive: Tensor
    gt_index: Tensor


class Assignment(NamedTuple):
    """levels: one LevelAssignment per level; dynamic_k: (N, M), 0 for padding GT rows."""

    levels: List[LevelAssignment]
    dynamic_k: Tensor


def candidate_cells(
    gt_boxes: Tensor,
    gt_mask: Tensor,
    anchors: Tensor,
    stride: int,
    grid_size: Tuple[int, int],
    anchor_t: float,
    offset: float,
) -> Tuple[Tensor, Tensor, Tensor]:
    """YOLOv5 candidates of one level (the official ``find_3_positive`` / ``find_5_positive``).

    A (GT, anchor) pair is kept when the GT's width and height are within a factor
    ``anchor_t`` of the anchor's. Its cells are the one holding the GT centre plus, per axis,
    the neighbour(s) whose border lies within ``offset`` cells of the centre: offset 0.5 gives
    the nearer neighbour on each axis (3 cells), 1.0 all four (5 cells). Neighbours need the
    centre more than one cell inside the grid, as in the official code.

    Args:
        gt_boxes: (N, M, 4) xyxy in input pixels; gt_mask: (N, M) real (not padding) rows.
        anchors: (A, 2) anchor (w, h) in pixels; stride: of the level, pixels.
        grid_size: (H, W) of the level's prediction map.
    Returns:
        valid (N, 5, A, M) bool, gj and gi (N, 5, A, M) long cell indices clamped to the grid.
    """
    height, width = grid_size
    # GT boxes stay in pixels and are divided by the stride. The official code scales
    # normalised targets by the image *height* (``imgs[b].shape[1]``), which is only right for
    # square images; with pixels x and y are each in their own unit. Parity: square images.
    centre = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / (2 * stride)  # (N, M, 2) grid units
    size = (gt_boxes[..., 2:] - gt_boxes[..., :2]) / stride
    ratio = size[:, None] / (anchors / stride)[None, :, None]  # (N, A, M, 2)
    anchor_ok = torch.max(ratio, 1.0 / ratio).amax(-1) < anchor_t  # (N, A, M)

    limits = centre.new_tensor([width, height])
    from_far_side = limits - centre  # distance to the right / bottom edge
    valid, cells = [], []
    for axis, direction in NEIGHBOURS:
        shift = torch.zeros_like(centre)
        if axis is None:
            ok = torch.ones_like(gt_mask)
        else:
            near = centre[..., axis] if direction < 0 else from_far_side[..., axis]
            ok = (near % 1.0 < offset) & (near > 1.0)
            shift[..., axis] = direction * offset
        valid.append(ok)
        cells.append((centre + shift).floor())  # floor == the official trunc once clamped
    valid = torch.stack(valid, 1)[:, :, None] & anchor_ok[:, None] & gt_mask[:, None, None]
    cells = torch.stack(cells, 1).long()  # (N, 5, M, 2)
    gi = cells[..., 0].clamp(0, width - 1)[:, :, None].expand_as(valid)
    gj = cells[..., 1].clamp(0, height - 1)[:, :, None].expand_as(valid)
    return valid, gj, gi


def _gather_cells(raw: Tensor, anchor: Tensor, gj: Tensor, gi: Tensor) -> Tensor:
    """raw (N, A, H, W, C) at slots (anchor (S,), gj/gi (N, S)) -> (N, S, C)."""
    batch = torch.arange(raw.shape[0], device=raw.device)[:, None]
    return raw[batch, anchor[None, :], gj, gi]


def _candidate_order(valid: Tensor) -> Tensor:
    """(N, W) slot indices of each image's candidates (``valid`` (N, S)) in slot order, so that
    ties resolve as over all slots, then slots without one; W = the most candidates in an
    image (at least 1). Reads W back to the host: free on the CPU, one sync on CUDA."""
    width = max(int(valid.sum(1).max()), 1)
    return torch.argsort((~valid).to(torch.int8), dim=1, stable=True)[:, :width]


def _cheapest(cost: Tensor, k: Tensor, q: int) -> Tensor:
    """Mask of the k[r] cheapest entries of each row of ``cost`` (..., C), k <= q; among equal
    costs the earlier column wins. (The official ``torch.topk`` leaves the order of ties
    unspecified, and ties are common: a cell found for several GTs is a candidate once per GT.)
    """
    kth = cost.topk(q, dim=-1, largest=False).values.gather(-1, (k - 1).clamp(min=0)[..., None])
    below = cost < kth
    tied = cost == kth
    room = k[..., None] - below.sum(-1, keepdim=True)
    return below | (tied & (tied.cumsum(-1, dtype=torch.int32) <= room))


def _simota(
    cand_boxes: Tensor,
    cand_logits: Tensor,
    cand_valid: Tensor,
    gt_boxes: Tensor,
    gt_classes: Tensor,
    gt_mask: Tensor,
    topk: int,
    gt_chunk: int,
) -> Tuple[Tensor, Tensor, Tensor]:
    """SimOTA over the candidates of each image (the official ``build_targets`` core).

    Every GT of an image is scored against every candidate of that image (also those found
    for other GTs; no centre prior). dynamic_k = max(1, int(sum of the top-``topk`` IoUs));
    cost = BCE(sqrt(p_cls * p_obj), one-hot) summed over classes + 3 * -log(IoU + 1e-8);
    each GT claims its dynamic_k cheapest candidates, and a candidate claimed more than once
    goes to the GT of lowest cost (over *all* GTs of the image, as in the official code).

    Args:
        cand_boxes: (N, C, 4) decoded lead predictions (xyxy pixels) at the C candidate slots.
        cand_logits: (N, C, 1 + K) their objectness and class logits.
        cand_valid: (N, C) the slot holds a candidate.
        gt_boxes (N, M, 4) xyxy pixels, gt_classes (N, M) long, gt_mask (N, M) bool.
        topk: IoUs summed for the dynamic k; gt_chunk: GT rows per cost matrix.
    Returns:
        positive (N, C) bool, gt_index (N, C) long, dynamic_k (N, M) long.
    """
    n, c = cand_valid.shape
    cand_logits = cand_logits.float()
    # Class cost without an (M, C, K) tensor: with y = sqrt(p_cls * p_obj) per class, the BCE
    # against a one-hot target is sum_k -log(1 - y_k) plus, for the GT class, -log(y) + log(1 - y).
    log_y = 0.5 * (F.logsigmoid(cand_logits[..., 1:]) + F.logsigmoid(cand_logits[..., :1]))
    # y == 1 (both logits > ~17) would give inf - inf; the official gets NaN there.
    neg = -torch.log1p(-log_y.exp().clamp(max=1.0 - 1e-6))  # (N, C, K)
    neg_total = neg.sum(-1)  # (N, C)
    own_class = (-log_y - neg).transpose(1, 2)  # (N, K, C)

    q = min(topk, c)  # dynamic_k <= q since IoU <= 1: the k-th cheapest is in a top-q pick
    claims = torch.zeros(n, c, dtype=torch.long, device=cand_boxes.device)
    claimant = torch.zeros(n, c, dtype=torch.int32, device=cand_boxes.device)  # GT row + 1
    best_cost = torch.full((n, c), float("inf"), device=cand_boxes.device)
    best_gt = torch.zeros_like(claims)
    dynamic_k = []
    for start in range(0, gt_boxes.shape[1], gt_chunk):  # a loop over chunks, not boxes
        rows = slice(start, start + gt_chunk)
        row_ok = gt_mask[:, rows]
        iou = batched_pairwise_iou(gt_boxes[:, rows].float(), cand_boxes)
        iou.masked_fill_(~cand_valid[:, None], 0.0)
        k = iou.topk(q, dim=2).values.sum(2).long().clamp(min=1) * row_ok  # trunc like int()
        dynamic_k.append(k)

        # neg_total + own class cost - 3 log(iou + 1e-8), in place (the same floats): at most
        # three (N, chunk, C) tensors alive, the memory peak of dense scenes.
        cls_index = gt_classes[:, rows, None].expand(-1, -1, c)
        cost = own_class.gather(1, cls_index).add_(neg_total[:, None])
        cost -= (iou + 1e-8).log_().mul_(3.0)
        cost.masked_fill_(~(row_ok[:, :, None] & cand_valid[:, None]), float("inf"))

        take = _cheapest(cost, k, q) & cand_valid[:, None]  # (N, chunk, C)
        claims += take.sum(1)
        row_id = torch.arange(start + 1, start + 1 + cost.shape[1], device=cost.device,
                              dtype=torch.int32)
        claimant = torch.maximum(claimant, (take * row_id[:, None]).amax(1))  # unique if 1 claim

        chunk_cost, chunk_gt = cost.min(dim=1)
        better = chunk_cost < best_cost  # strict: the first GT wins ties, as torch.min does
        best_cost = torch.where(better, chunk_cost, best_cost)
        best_gt = torch.where(better, chunk_gt + start, best_gt)
    positive = claims > 0
    gt_index = torch.where(claims > 1, best_gt, (claimant.long() - 1).clamp(min=0)) * positive
    return positive, gt_index, torch.cat(dynamic_k, 1)


class YOLOv7Assigner:
    """One YOLOv7 label assignment (Wang et al. 2022): YOLOv5 candidates with neighbour
    ``offset`` (0.5: fine/lead, 1.0: coarse/aux), then SimOTA on the *lead* predictions.

    Args:
        anchor_t: max ratio between GT and anchor sides for a candidate (official 4.0).
        offset: neighbour offset g of the candidate search.
        topk: IoUs summed for the dynamic k (official 10, 20 in the aux-head loss).
        gt_chunk: GT rows per cost matrix; memory is O(N * gt_chunk * candidates), at most
            3 * L * A * M candidates per image (5 * L * A * M with offset 1).
    """

    def __init__(self, *, anchor_t: float = 4.0, offset: float = 0.5, topk: int = 10,
                 gt_chunk: int = 256):
        self.anchor_t, self.offset, self.topk, self.gt_chunk = anchor_t, offset, topk, gt_chunk

    @torch.no_grad()
    def __call__(
        self,
        lead_maps: Sequence[Tensor],
        gt_boxes: Tensor,
        gt_classes: Tensor,
        gt_mask: Tensor,
        anchors: Tensor,
        strides: Sequence[int],
    ) -> Assignment:
        """
        Args:
            lead_maps: L raw lead-head maps (N, A, H_l, W_l, 5 + K): N images, A anchors.
            gt_boxes: (N, M, 4) xyxy in input pixels, M = most GT boxes in one image.
            gt_classes: (N, M) long in [0, K); gt_mask: (N, M) bool, False for padding.
            anchors: (L, A, 2) anchor sizes in pixels; strides: L strides in pixels.
        """
        n, m = gt_mask.shape
        device = lead_maps[0].device
        num_anchors = anchors.shape[1]
        anchor_ids = torch.arange(num_anchors, device=device).view(1, -1, 1).expand(5, -1, m)
        anchor_ids = anchor_ids.flatten()  # slot order (neighbour, anchor, GT)
        # An image without GT has only padding rows: no valid slot, dynamic k 0, no positive.
        if m == 0:
            # No GT in the whole batch: every level gets zero slots. (The official code builds
            # its empty tensors on a hard-coded 'cuda:0'; these stay on the maps' device.)
            empty = torch.zeros(n, 0, dtype=torch.long, device=device)
            level = LevelAssignment(anchor_ids, empty, empty, empty.bool(), empty)
            return Assignment([level] * len(lead_maps), empty)

        valid, gj, gi, boxes, logits = [], [], [], [], []
        for raw, level_anchors, stride in zip(lead_maps, anchors, strides):
            ok, rows, cols = candidate_cells(gt_boxes, gt_mask, level_anchors, stride,
                                             raw.shape[2:4], self.anchor_t, self.offset)
            ok, rows, cols = ok.flatten(1), rows.flatten(1), cols.flatten(1)
            pred = _gather_cells(raw, anchor_ids, rows, cols).float()  # (N, S, 5 + K)
            boxes.append(cxcywh_to_xyxy(decode_boxes(
                pred[..., :4], level_anchors[anchor_ids].float(), torch.stack([cols, rows], -1),
                stride)))
            logits.append(pred[..., 4:])
            valid.append(ok), gj.append(rows), gi.append(cols)

        # SimOTA costs O(M x slots): it sees only the slots that hold a candidate (at most 3 of
        # the 5 neighbours, and only the anchors a box fits).
        valid_all = torch.cat(valid, 1)  # (N, S_total)
        order = _candidate_order(valid_all)
        boxes, logits = torch.cat(boxes, 1), torch.cat(logits, 1)
        # Under CUDA OOM (dense scenes) detectron2 retries the matching on the CPU.
        positive, gt_index, dynamic_k = retry_if_cuda_oom(_simota)(
            boxes.gather(1, order[..., None].expand(-1, -1, boxes.shape[2])),
            logits.gather(1, order[..., None].expand(-1, -1, logits.shape[2])),
            valid_all.gather(1, order), gt_boxes, gt_classes, gt_mask, self.topk,
            self.gt_chunk,
        )
        # Back to slot order; the compacted columns past an image's candidates are not
        # positive and scatter False / 0 onto slots without a candidate.
        order = order.to(positive.device)
        positive = torch.zeros(valid_all.shape, dtype=torch.bool, device=order.device).scatter_(
            1, order, positive).to(device)
        gt_index = torch.zeros(valid_all.shape, dtype=torch.long, device=order.device).scatter_(
            1, order, gt_index).to(device)
        sizes = [v.shape[1] for v in valid]
        levels = [
            LevelAssignment(anchor_ids, rows, cols, pos, idx)
            for rows, cols, pos, idx in zip(
                gj, gi, positive.split(sizes, 1), gt_index.split(sizes, 1)
            )
        ]
        return Assignment(levels, dynamic_k.to(device))
