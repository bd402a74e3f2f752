"""The YOLOv7 training loss (official ``ComputeLossOTA`` / ``ComputeLossAuxOTA``)."""
import math
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detectron2.config import configurable
from detectron2.utils.events import get_event_storage

from .assigner import Assignment, LevelAssignment, YOLOv7Assigner
from .box_coder import decode_boxes
from .box_ops import complete_iou, xyxy_to_cxcywh

__all__ = ["YOLOv7Loss", "pad_ground_truth"]

# Official objectness weights per level, stride 8 first (``ComputeLossOTA.balance``).
DEFAULT_BALANCE = {3: [4.0, 1.0, 0.4]}
DEFAULT_BALANCE_OTHER = [4.0, 1.0, 0.25, 0.06, 0.02]


def pad_ground_truth(gt_boxes: Sequence[Tensor], gt_classes: Sequence[Tensor], device):
    """Per-image lists (M_i, 4), (M_i,) -> boxes (N, M, 4), classes (N, M), mask (N, M),
    M = max M_i (may be 0), on ``device``; padding rows are zero boxes of class 0."""
    counts = [len(b) for b in gt_boxes]
    n, m = len(counts), max(counts, default=0)
    boxes = torch.zeros(n, m, 4, device=device)
    classes = torch.zeros(n, m, dtype=torch.long, device=device)
    mask = torch.zeros(n, m, dtype=torch.bool, device=device)
    if sum(counts):
        # One copy of each to the device; the slot indices come from the (host) lengths.
        image = torch.repeat_interleave(torch.arange(n), torch.tensor(counts)).to(device)
        row = torch.cat([torch.arange(c) for c in counts]).to(device)
        boxes[image, row] = torch.cat(list(gt_boxes)).to(device=device, dtype=torch.float32)
        classes[image, row] = torch.cat(list(gt_classes)).to(device=device, dtype=torch.long)
        mask[image, row] = True
    return boxes, classes, mask


class YOLOv7Loss(nn.Module):
    """YOLOv7 loss (Wang et al. 2022): lead-guided SimOTA assignment, CIoU box loss,
    objectness BCE against the detached CIoU, class BCE; plus the auxiliary (coarse) head's
    terms for the P6 models.

    The gains are the hyp-file values (MODEL.YOLOV7.LOSS.*_GAIN), rescaled here as official
    ``train.py`` does (:meth:`official_gains`); the attributes ``box_gain``, ``obj_gain`` and
    ``cls_gain`` hold the rescaled values. Every returned term is multiplied by the batch
    size, so the sum of the dict is the official total ``(box * lbox + obj * lobj + cls *
    lcls) * bs``; with an aux head the official terms are split into "loss_x" (lead) and
    "loss_x_aux" (aux, already weighted by ``aux_weight``), whose sums are the official lbox,
    lobj, lcls.

    Args:
        num_classes: K; the class loss is skipped when K == 1, as official.
        num_levels: L, levels of the head; image_size: training image size (pixels).
        box_gain, obj_gain, cls_gain: the hyp gains, before train.py's rescaling.
        balance: per-level objectness weights, stride 8 first; None: official for L levels.
        anchor_t: candidate anchor-ratio threshold. label_smoothing: epsilon (targets
            1 - eps/2 and eps/2).
        aux: the model has an auxiliary head (P6 scales): its maps are passed to ``forward``
            and get the coarse assignment. aux_weight: weight of its terms.
        topk: IoUs summed for SimOTA's dynamic k; None: official 10, or 20 with an aux head
            (``ComputeLossAuxOTA`` uses 20 for both its assignments).
        gt_chunk: GT rows per SimOTA cost matrix (memory bound in dense scenes).
    """

    @configurable
    def __init__(
        self,
        *,
        num_classes: int,
        num_levels: int = 3,
        image_size: int = 640,
        box_gain: float = 0.05,
        obj_gain: float = 0.7,
        cls_gain: float = 0.3,
        balance: Optional[List[float]] = None,
        anchor_t: float = 4.0,
        label_smoothing: float = 0.0,
        aux: bool = False,
        aux_weight: float = 0.25,
        topk: Optional[int] = None,
        gt_chunk: int = 256,
    ):
        super().__init__()
        self.num_classes, self.num_levels, self.aux = num_classes, num_levels, aux
        gains = self.official_gains(num_classes, num_levels, image_size, box_gain, cls_gain,
                                    obj_gain)
        self.box_gain, self.obj_gain, self.cls_gain = (gains["box_gain"], gains["obj_gain"],
                                                       gains["cls_gain"])
        self.balance = list(balance) if balance else None
        self.level_balance(num_levels)  # enough weights for the levels
        self.anchor_t, self.aux_weight = anchor_t, aux_weight
        self.topk, self.gt_chunk = topk, gt_chunk
        self.cls_pos, self.cls_neg = 1.0 - 0.5 * label_smoothing, 0.5 * label_smoothing
        # Both assignments are made from the lead head's predictions (lead guided): the fine
        # one (3 cells) for the lead head, the coarse one (5 cells) for the auxiliary head.
        topk = topk or (20 if aux else 10)
        self.lead_assigner = YOLOv7Assigner(anchor_t=anchor_t, offset=0.5, topk=topk,
                                            gt_chunk=gt_chunk)
        self.aux_assigner = YOLOv7Assigner(anchor_t=anchor_t, offset=1.0, topk=topk,
                                           gt_chunk=gt_chunk) if aux else None

    @staticmethod
    def official_gains(num_classes: int, num_levels: int, image_size: int = 640,
                       box: float = 0.05, cls: float = 0.3, obj: float = 0.7) -> Dict[str, float]:
        """The hyp gains rescaled as official train.py does: box *= 3 / L,
        cls *= K / 80 * 3 / L, obj *= (image size / 640)^2 * 3 / L."""
        level_scale = 3.0 / num_levels
        return {
            "box_gain": box * level_scale,
            "cls_gain": cls * num_classes / 80 * level_scale,
            "obj_gain": obj * (image_size / 640) ** 2 * level_scale,
        }

    @classmethod
    def from_config(cls, cfg, num_levels: int, aux: bool = False):
        """cfg.MODEL.YOLOV7.LOSS for a head of ``num_levels`` levels (``aux``: with an
        auxiliary head), trained at INPUT.YOLOV7.IMAGE_SIZE."""
        loss = cfg.MODEL.YOLOV7.LOSS
        return {
            "num_classes": cfg.MODEL.YOLOV7.NUM_CLASSES,
            "num_levels": num_levels,
            "image_size": cfg.INPUT.YOLOV7.IMAGE_SIZE,
            "box_gain": loss.BOX_GAIN,
            "obj_gain": loss.OBJ_GAIN,
            "cls_gain": loss.CLS_GAIN,
            "balance": list(loss.BALANCE) or None,
            "anchor_t": loss.ANCHOR_T,
            "label_smoothing": loss.LABEL_SMOOTHING,
            "aux": aux,
            "aux_weight": loss.AUX_WEIGHT,
            "topk": loss.TOPK or None,
            "gt_chunk": loss.GT_CHUNK,
        }

    def level_balance(self, num_levels: int) -> List[float]:
        balance = self.balance or DEFAULT_BALANCE.get(num_levels, DEFAULT_BALANCE_OTHER)
        if len(balance) < num_levels:
            raise ValueError(f"{num_levels} levels but only {len(balance)} objectness weights")
        return balance[:num_levels]

    def forward(
        self,
        lead_maps: List[Tensor],
        aux_maps: Optional[List[Tensor]],
        gt_boxes: Sequence[Tensor],
        gt_classes: Sequence[Tensor],
        anchors: Tensor,
        strides: Sequence[int],
    ) -> Dict[str, Tensor]:
        """
        Args:
            lead_maps: L raw maps (N, A, H_l, W_l, 5 + K); aux_maps: same for the aux head or None.
            gt_boxes: N tensors (M_i, 4), xyxy in input pixels; gt_classes: N tensors (M_i,).
            anchors: (L, A, 2) in pixels; strides: L strides in pixels.
        Returns:
            {"loss_box", "loss_obj", "loss_cls"} and, with aux maps, the same with "_aux".
        """
        if (aux_maps is not None) != self.aux:
            raise ValueError("auxiliary-head maps must be given exactly when the loss is built "
                             f"with aux=True (it was built with aux={self.aux})")
        device = lead_maps[0].device
        # Mixed precision stops at the head: in half precision, decoded boxes lose whole pixels
        # (bfloat16 keeps 8 significant bits: steps of 2 px at 416), so the assignment and the
        # losses run in float32 whatever autocast says.
        lead_maps = [m.float() for m in lead_maps]
        aux_maps = None if aux_maps is None else [m.float() for m in aux_maps]
        with torch.autocast(device.type, enabled=False):
            return self._losses(lead_maps, aux_maps, gt_boxes, gt_classes, anchors, strides)

    def _losses(self, lead_maps, aux_maps, gt_boxes, gt_classes, anchors, strides):
        device = lead_maps[0].device
        boxes, classes, mask = pad_ground_truth(gt_boxes, gt_classes, device)
        anchors = anchors.to(device)
        heads = [("", lead_maps, self.lead_assigner, 1.0)]
        if aux_maps is not None:
            heads.append(("_aux", aux_maps, self.aux_assigner, self.aux_weight))
        losses, stats = {}, {}
        for suffix, maps, assigner, weight in heads:
            assignment = assigner(lead_maps, boxes, classes, mask, anchors, strides)
            box, obj, cls, num_pos = self._head_losses(maps, assignment, boxes, classes,
                                                       anchors, strides)
            batch = lead_maps[0].shape[0]
            losses["loss_box" + suffix] = box * (self.box_gain * weight * batch)
            losses["loss_obj" + suffix] = obj * (self.obj_gain * weight * batch)
            losses["loss_cls" + suffix] = cls * (self.cls_gain * weight * batch)
            stats[suffix] = (num_pos, assignment.dynamic_k, mask)
        self._put_diagnostics(stats, strides)
        return losses

    def _head_losses(self, maps, assignment: Assignment, boxes, classes, anchors, strides):
        """Unweighted sums over levels of box, balanced objectness and class losses."""
        box = obj = cls = maps[0].new_zeros((), dtype=torch.float32)
        balance = self.level_balance(len(maps))
        num_pos = []
        for level, (raw, slots) in enumerate(zip(maps, assignment.levels)):
            level_box, level_obj, level_cls, n = self._level_losses(
                raw, slots, boxes, classes, anchors[level], strides[level])
            box, cls = box + level_box, cls + level_cls
            obj = obj + balance[level] * level_obj
            num_pos.append(n)
        return box, obj, cls, torch.stack(num_pos)

    def _level_losses(self, raw: Tensor, slots: LevelAssignment, boxes, classes, anchors,
                      stride: int):
        """Losses of one level of one head. All S candidate slots are computed and masked
        (rather than gathering the positives), which keeps the step free of host syncs."""
        n, a, h, w, _ = raw.shape
        batch = torch.arange(n, device=raw.device)[:, None]
        pred = raw[batch, slots.anchor[None], slots.gj, slots.gi].float()  # (N, S, 5 + K)
        pos = slots.positive
        num_pos = pos.sum()
        denominator = num_pos.clamp(min=1)

        # Box: the matched GT in grid units relative to the cell; slots that are not positive
        # get a harmless unit box so that no NaN can reach the gradient through the mask.
        target = xyxy_to_cxcywh(boxes[batch, slots.gt_index] / stride)  # (N, S, 4) grid units
        target[..., :2] -= torch.stack([slots.gi, slots.gj], -1)  # centre offset in its cell
        target = torch.where(pos[..., None], target, target.new_tensor([0.5, 0.5, 1.0, 1.0]))
        ciou = complete_iou(decode_boxes(pred[..., :4], anchors[slots.anchor] / stride), target)
        box = ((1.0 - ciou) * pos).sum() / denominator

        # Objectness target: the CIoU (gr = 1) at positive cells. When several positives hit
        # one prediction the official write keeps an unspecified one; here the largest wins.
        flat = ((batch * a + slots.anchor[None]) * h + slots.gj) * w + slots.gi
        tobj = raw.new_zeros(n * a * h * w, dtype=torch.float32)
        tobj.scatter_reduce_(0, flat.flatten(), (ciou.detach().clamp(min=0) * pos).flatten(),
                             "amax")
        obj = F.binary_cross_entropy_with_logits(raw[..., 4].float(), tobj.view(n, a, h, w))

        cls = box.new_zeros(())
        if self.num_classes > 1:
            target_cls = torch.full_like(pred[..., 5:], self.cls_neg)
            target_cls.scatter_(-1, classes[batch, slots.gt_index][..., None], self.cls_pos)
            bce = F.binary_cross_entropy_with_logits(pred[..., 5:], target_cls, reduction="none")
            cls = (bce.sum(-1) * pos).sum() / (denominator * self.num_classes)
        return box, obj, cls, num_pos

    @staticmethod
    def _put_diagnostics(stats, strides) -> None:
        """Positives per image, level and head, and the mean dynamic k, to the EventStorage."""
        try:
            storage = get_event_storage()
        except (AssertionError, IndexError):  # outside an EventStorage (e.g. a plain forward)
            return
        names, values = [], []
        for suffix, (num_pos, dynamic_k, mask) in stats.items():
            head = "aux" if suffix else "lead"
            images = mask.shape[0]
            for stride, n in zip(strides, num_pos):
                names.append(f"yolov7/num_pos_{head}_p{int(math.log2(stride))}")
                values.append(n.float() / images)
            names.append(f"yolov7/dynamic_k_{head}")
            values.append(dynamic_k.sum().float() / mask.sum().clamp(min=1))
        for name, value in zip(names, torch.stack(values).tolist()):  # one host sync
            storage.put_scalar(name, value)
