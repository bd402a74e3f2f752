"""Detection metrics of the run artefacts: predictions matched to ground truth, per-class
precision / recall / F1 curves with their AP, and the confusion matrix. Pure functions on
numpy arrays (no files, no trainer state); :mod:`.artifacts` plots and writes them.

Matching (:func:`match_boxes`), each box at most once, IoU at or above the threshold: for the
curves as COCOeval (detections of the same class by decreasing score, each taking the
unmatched ground truth it overlaps most), for the confusion matrix as the official one (pairs
of any class by decreasing IoU). Crowd boxes are left out (:func:`ground_truth_of`). The AP
uses COCO's 101-point interpolation over all detections (COCOeval keeps the best 100 per image
and class, and ignores detections on crowd boxes), so it is close to, not equal to, COCO's AP50.
"""
from typing import Dict, Iterable, Optional, Tuple

import numpy as np
import torch

from detectron2.structures import BoxMode

from ..modeling.box_ops import batched_pairwise_iou

__all__ = [
    "CURVE_IOU",
    "CONFUSION_CONF",
    "CONFUSION_IOU",
    "ground_truth_of",
    "match_boxes",
    "confusion_matrix",
    "precision_recall_curves",
    "detection_metrics",
    "best_f1_summary",
]

CURVE_IOU = 0.5  # IoU of the PR / F1 curves (the official plots: mAP@0.5)
CONFUSION_CONF, CONFUSION_IOU = 0.25, 0.45  # official ConfusionMatrix defaults


def ground_truth_of(dataset_dict: dict) -> Tuple[np.ndarray, np.ndarray]:
    """The non-crowd annotations of a detectron2 dataset dict: boxes (M, 4) float64 XYXY_ABS
    and classes (M,) int64."""
    boxes, classes = [], []
    for obj in dataset_dict.get("annotations", []):
        if obj.get("iscrowd", 0):
            continue
        boxes.append(BoxMode.convert(list(obj["bbox"]), obj["bbox_mode"], BoxMode.XYXY_ABS))
        classes.append(obj["category_id"])
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes, np.int64)


def _pairwise_iou(a, b) -> np.ndarray:
    """IoU matrix (len(a), len(b)) float64 of XYXY boxes (M, 4) and (N, 4)."""
    a = torch.from_numpy(np.asarray(a, dtype=np.float64).reshape(-1, 4))
    b = torch.from_numpy(np.asarray(b, dtype=np.float64).reshape(-1, 4))
    return batched_pairwise_iou(a[None], b[None])[0].numpy()


def match_boxes(gt_boxes, gt_classes, det_boxes, det_classes, iou_threshold: float,
                same_class: bool = True, scores=None) -> Tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching of ground truth and detections with IoU at least
    ``iou_threshold``: with ``scores``, as COCOeval (detections by decreasing score, each
    taking the unmatched ground truth it overlaps most); without, pairs by decreasing IoU
    (as the official confusion matrix).

    Args:
        gt_boxes (M, 4), det_boxes (N, 4): XYXY boxes; gt_classes (M,), det_classes (N,):
            their classes; same_class: only boxes of one class match; scores (N,): the
            detections' scores, or None.

    Returns:
        (gt_index, det_index): int64 arrays (K,) of the matched pairs.
    """
    iou = _pairwise_iou(gt_boxes, det_boxes)
    if same_class and iou.size:
        iou[np.asarray(gt_classes)[:, None] != np.asarray(det_classes)[None, :]] = 0.0
    if scores is not None:
        iou = np.where(iou >= iou_threshold, iou, -1.0)
        candidates = np.flatnonzero(iou.max(0, initial=-1.0) >= 0)
        order = candidates[np.argsort(-np.asarray(scores)[candidates], kind="stable")]
        pairs = []
        for d in order.tolist():
            g = int(np.argmax(iou[:, d]))
            if iou[g, d] >= 0:
                pairs.append((g, d))
                iou[g, :] = -1.0  # this ground truth is taken
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        return pairs[:, 0], pairs[:, 1]
    gi, di = np.nonzero(iou >= iou_threshold)
    if len(gi) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.argsort(-iou[gi, di], kind="stable")
    used_gt, used_det, pairs = set(), set(), []
    for g, d in zip(gi[order].tolist(), di[order].tolist()):
        if g not in used_gt and d not in used_det:
            used_gt.add(g)
            used_det.add(d)
            pairs.append((g, d))
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def confusion_matrix(gt_boxes, gt_classes, det_boxes, det_classes, det_scores, num_classes: int,
                     conf_threshold: float = CONFUSION_CONF, iou_threshold: float = CONFUSION_IOU,
                     matrix: Optional[np.ndarray] = None) -> np.ndarray:
    """Add one image to a (C + 1, C + 1) int64 confusion matrix (rows: predicted class,
    columns: true class, index C: background) and return it.

    Detections (N,) with a score of at least ``conf_threshold`` are matched to ground truth
    (M,) at ``iou_threshold`` regardless of class: a matched pair counts at [predicted, true];
    an unmatched ground truth at [background, true] (missed); an unmatched detection at
    [predicted, background] (false positive).
    """
    if matrix is None:
        matrix = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    gt_classes = np.asarray(gt_classes, np.int64).reshape(-1)
    keep = np.asarray(det_scores).reshape(-1) >= conf_threshold
    det_boxes = np.asarray(det_boxes).reshape(-1, 4)[keep]
    det_classes = np.asarray(det_classes, np.int64).reshape(-1)[keep]
    gi, di = match_boxes(gt_boxes, gt_classes, det_boxes, det_classes, iou_threshold,
                         same_class=False)
    np.add.at(matrix, (det_classes[di], gt_classes[gi]), 1)
    missed = np.ones(len(gt_classes), bool)
    missed[gi] = False
    np.add.at(matrix, (num_classes, gt_classes[missed]), 1)
    spurious = np.ones(len(det_classes), bool)
    spurious[di] = False
    np.add.at(matrix, (det_classes[spurious], num_classes), 1)
    return matrix


def precision_recall_curves(tp: np.ndarray, conf: np.ndarray, pred_classes: np.ndarray,
                            num_gt: np.ndarray, num_points: int = 1000) -> Dict[str, np.ndarray]:
    """Per-class curves from all detections of a dataset.

    Args:
        tp (N,): whether each detection is a true positive; conf (N,): its score;
        pred_classes (N,): its class; num_gt (C,): ground-truth boxes per class.

    Returns:
        dict with "x" (K,) grid on [0, 1], K = ``num_points``; "precision", "recall", "f1"
        (C, K) against the confidence threshold x (a threshold above every score: precision
        1, recall 0); "pr" (C, K) interpolated precision (monotone envelope) against recall x;
        "ap" (C,) 101-point AP (NaN for classes without ground truth); "valid" (C,) bool,
        classes with ground truth.
    """
    tp = np.asarray(tp, np.float64).reshape(-1)
    conf = np.asarray(conf, np.float64).reshape(-1)
    pred_classes = np.asarray(pred_classes, np.int64).reshape(-1)
    num_gt = np.asarray(num_gt, np.int64).reshape(-1)
    nc = len(num_gt)
    order = np.argsort(-conf, kind="stable")
    tp, conf, pred_classes = tp[order], conf[order], pred_classes[order]
    x = np.linspace(0, 1, num_points)
    precision, recall, pr = (np.zeros((nc, num_points)) for _ in range(3))
    ap = np.full(nc, np.nan)
    rec_thresholds = np.linspace(0, 1, 101)
    for c in range(nc):
        if num_gt[c] == 0:
            continue
        sel = pred_classes == c
        if not sel.any():
            ap[c] = 0.0
            precision[c] = 1.0  # no detection: no false positive
            continue
        tpc = np.cumsum(tp[sel])
        fpc = np.cumsum(1.0 - tp[sel])
        rec = tpc / num_gt[c]
        prec = tpc / (tpc + fpc)
        # against the confidence threshold x: the detections scoring at least x (exact step
        # functions; conf is decreasing, so -conf increases)
        kept = np.searchsorted(-conf[sel], -x, side="right")
        last = np.maximum(kept - 1, 0)
        recall[c] = np.where(kept > 0, rec[last], 0.0)
        precision[c] = np.where(kept > 0, prec[last], 1.0)
        # monotone envelope, then COCO's 101-point AP
        envelope = np.maximum.accumulate(prec[::-1])[::-1]
        idx = np.searchsorted(rec, rec_thresholds, side="left")
        ap[c] = np.where(idx < len(rec), envelope[np.minimum(idx, len(rec) - 1)], 0.0).mean()
        mrec = np.concatenate([[0.0], rec, [rec[-1]]])
        mpre = np.concatenate([[envelope[0]], envelope, [0.0]])
        pr[c] = np.interp(x, mrec, mpre, right=0.0)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-16)
    return {"x": x, "precision": precision, "recall": recall, "f1": f1, "pr": pr, "ap": ap,
            "valid": num_gt > 0}


def detection_metrics(images: Iterable[Tuple[np.ndarray, ...]], num_classes: int,
                      iou_threshold: float = CURVE_IOU
                      ) -> Tuple[Dict[str, np.ndarray], np.ndarray]:
    """The curves and the confusion matrix of a dataset.

    Args:
        images: per image (gt_boxes (M, 4), gt_classes (M,), det_boxes (N, 4) XYXY,
            det_scores (N,), det_classes (N,)); every image of the set, also those without
            detections (their ground truth counts as missed).
        num_classes: C; ground truth of a class id >= C is left out of the curves.
        iou_threshold: IoU of a true positive on the curves (the confusion matrix uses
            :data:`CONFUSION_IOU`).

    Returns:
        (curves, matrix): :func:`precision_recall_curves` of all detections (matched per
        image by score, as COCOeval) and the (C + 1, C + 1) :func:`confusion_matrix`.
    """
    # (empty first entries: no image gives empty curves, not an error)
    tp, conf, pred_classes = [np.zeros(0, bool)], [np.zeros(0)], [np.zeros(0, np.int64)]
    num_gt = np.zeros(num_classes, np.int64)
    matrix = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    for gt_boxes, gt_classes, det_boxes, det_scores, det_classes in images:
        num_gt += np.bincount(gt_classes, minlength=num_classes)[:num_classes]
        hits = np.zeros(len(det_scores), bool)
        _, di = match_boxes(gt_boxes, gt_classes, det_boxes, det_classes, iou_threshold,
                            scores=det_scores)
        hits[di] = True
        tp.append(hits)
        conf.append(det_scores)
        pred_classes.append(det_classes)
        confusion_matrix(gt_boxes, gt_classes, det_boxes, det_classes, det_scores, num_classes,
                         matrix=matrix)
    curves = precision_recall_curves(np.concatenate(tp), np.concatenate(conf),
                                     np.concatenate(pred_classes), num_gt)
    return curves, matrix


def best_f1_summary(curves: Dict[str, np.ndarray]) -> Dict[str, float]:
    """The official P and R: mean precision "P", recall "R" and "F1" over the classes with
    ground truth at the confidence "conf_F1" of the best mean F1; "mAP50", the mean AP of
    those classes. All NaN without ground truth."""
    valid = curves["valid"]
    if not valid.any():
        return {"P": np.nan, "R": np.nan, "F1": np.nan, "conf_F1": np.nan, "mAP50": np.nan}
    mean_f1 = curves["f1"][valid].mean(0)
    best = int(np.argmax(mean_f1))
    return {"P": float(curves["precision"][valid, best].mean()),
            "R": float(curves["recall"][valid, best].mean()),
            "F1": float(mean_f1[best]), "conf_F1": float(curves["x"][best]),
            "mAP50": float(np.nanmean(curves["ap"]))}
