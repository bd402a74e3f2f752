"""Run artefacts written into ``cfg.OUTPUT_DIR`` (``cfg.TEST.YOLOV7.ARTIFACTS``), like the
official YOLOv7 run folder.

Per evaluation (:class:`YOLOv7ArtifactsEvaluator`, combined with the COCO evaluator by
:class:`YOLOv7Evaluators`), in ``OUTPUT_DIR/artifacts/<dataset>/iter_<NNNNNNN>/`` (``eval/``
outside training):

* ``PR_curve.png``, ``F1_curve.png``, ``P_curve.png``, ``R_curve.png``: per class and mean,
  at IoU 0.5 (precision / recall / F1 against the confidence threshold; precision against
  recall with each class's AP50 in the legend);
* ``confusion_matrix.png`` (+ ``confusion_matrix.csv`` with the counts): detections above
  confidence 0.25 matched to ground truth at IoU 0.45 whatever their class, plus a
  background row (ground truth missed) and column (detections with no ground truth);
* ``val_<k>.jpg``: the first ``NUM_VIS_IMAGES`` validation images, ground truth on the left,
  predictions above confidence 0.25 on the right.

One row per evaluation is appended to ``OUTPUT_DIR/results.csv``: dataset, iteration, the COCO
box metrics (AP, AP50, AP75, APs, APm, APl), precision / recall / F1 at the confidence of the
best mean F1 (as the official P and R), per-class AP50 of the artefact matcher, and the
training losses and learning rate (medians over the last 20 iterations) when training.

At training start (:class:`TrainingArtifactsHook`), in ``OUTPUT_DIR/artifacts/train/``:
``labels.png`` (label distribution) and ``train_batch.jpg`` (mosaic-mapper samples with
their boxes).

Matching (own implementation, :func:`match_boxes`), each box at most once, IoU at or above the
threshold: for the curves as COCOeval (detections of the same class by decreasing score, each
taking the unmatched ground truth it overlaps most), for the confusion matrix as the official
one (pairs of any class by decreasing IoU). Crowd boxes are left out. The curves' AP50 uses
COCO's 101-point interpolation over all detections (COCOeval keeps the best 100 per image and
class, and ignores detections on crowd boxes), so it is close to, not equal to, the COCO AP50
in the same row.
"""
from __future__ import annotations

import copy
import csv
import logging
import os
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine.train_loop import HookBase
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators
from detectron2.structures import BoxMode
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

from ..data.image_io import read_image
from ..utils import plots

__all__ = [
    "box_iou",
    "match_boxes",
    "confusion_matrix",
    "precision_recall_curves",
    "current_iteration",
    "append_results_row",
    "YOLOv7ArtifactsEvaluator",
    "YOLOv7Evaluators",
    "TrainingArtifactsHook",
    "draw_mapped_sample",
]

logger = logging.getLogger(__name__)

CURVE_IOU = 0.5  # IoU of the PR / F1 curves (the official plots: mAP@0.5)
CONFUSION_CONF, CONFUSION_IOU = 0.25, 0.45  # official ConfusionMatrix defaults
VIS_CONF = 0.25  # predictions drawn on the validation images (official detect.py default)
COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


# ---------------------------------------------------------------------------------- matching
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of XYXY boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match_boxes(gt_boxes, gt_classes, det_boxes, det_classes, iou_threshold: float,
                same_class: bool = True, scores=None) -> Tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching of ground truth and detections with IoU at least
    ``iou_threshold``: with ``scores``, as COCOeval (detections by decreasing score, each
    taking the unmatched ground truth it overlaps most); without, pairs by decreasing IoU
    (as the official confusion matrix).

    Returns:
        (gt_index, det_index): int arrays of the matched pairs.
    """
    iou = box_iou(gt_boxes, det_boxes)
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
    """Add one image to a (C + 1) x (C + 1) confusion matrix (rows: predicted class,
    columns: true class, index C: background) and return it.

    Detections with a score of at least ``conf_threshold`` are matched to ground truth at
    ``iou_threshold`` regardless of class: a matched pair counts at [predicted, true]; an
    unmatched ground truth at [background, true] (missed); an unmatched detection at
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
        dict with "x" (num_points,) grid on [0, 1]; "precision", "recall", "f1" (C, K) against
        the confidence threshold x (a threshold above every score: precision 1, recall 0);
        "pr" (C, K) interpolated precision (monotone envelope) against recall x; "ap" (C,)
        101-point AP (NaN for classes without ground truth); "valid" (C,) classes with
        ground truth.
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


# ---------------------------------------------------------------------------------- helpers
def current_iteration(max_iter: Optional[int] = None) -> Optional[int]:
    """Iterations completed by the running trainer, or None outside training.

    Evaluation hooks run after a step, when ``EventStorage.iter`` is that step's index: one
    less than the iterations done. The final evaluation runs in ``after_train``, where
    detectron2 has set ``EventStorage.iter`` to ``max_iter`` already: hence the cap.
    """
    try:
        done = get_event_storage().iter + 1
    except AssertionError:  # no EventStorage in use
        return None
    return min(done, max_iter) if max_iter else done


def _training_scalars() -> Dict[str, float]:
    try:
        storage = get_event_storage()
    except AssertionError:
        return {}
    out = {}
    for name, (value, _) in storage.latest_with_smoothing_hint(20).items():
        if "loss" in name or name == "lr":
            out[name] = float(value)
    return out


def append_results_row(path: str, row: Dict[str, object]) -> None:
    """Append ``row`` to the csv at ``path``; the header is the union of the columns seen so
    far (the file is rewritten when a row brings new columns)."""
    rows, header = [], []
    if os.path.exists(path):
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows = list(reader)
    new_columns = [k for k in row if k not in header]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if new_columns or not header:
        header += new_columns
        tmp = path + ".tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows + [row])
        os.replace(tmp, path)
    else:
        with open(path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=header).writerow(row)


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.6g}"
    return str(value)


def _gt_of(dataset_dict: dict) -> Tuple[np.ndarray, np.ndarray]:
    boxes, classes = [], []
    for obj in dataset_dict.get("annotations", []):
        if obj.get("iscrowd", 0):
            continue
        boxes.append(BoxMode.convert(list(obj["bbox"]), obj["bbox_mode"], BoxMode.XYXY_ABS))
        classes.append(obj["category_id"])
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes, np.int64)


def _to_rgb(image: torch.Tensor | np.ndarray, image_format: str) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        image = image.permute(1, 2, 0).cpu().numpy()
    image = np.ascontiguousarray(image.astype(np.uint8))
    return image[..., ::-1].copy() if image_format == "BGR" else image


def draw_mapped_sample(sample: dict, names: Sequence[str], image_format: str = "RGB") -> np.ndarray:
    """RGB drawing of one mapper output ("image" CHW tensor, "instances" with gt_boxes and
    gt_classes) with its boxes and class names."""
    inst = sample.get("instances")
    boxes = inst.gt_boxes.tensor.numpy() if inst is not None else np.zeros((0, 4))
    classes = inst.gt_classes.numpy() if inst is not None else np.zeros(0, np.int64)
    title = os.path.basename(str(sample.get("file_name", "")))
    return plots.draw_boxes(_to_rgb(sample["image"], image_format), boxes, classes, names,
                            title=f"{title} ({len(boxes)} boxes)")


# ---------------------------------------------------------------------------------- evaluator
class YOLOv7ArtifactsEvaluator(DatasetEvaluator):
    """Curves, confusion matrix, drawn predictions and a results row per evaluation (see the
    module doc). Needs predictions as ``Instances(pred_boxes, scores, pred_classes)`` in
    original image coordinates and the ground truth of ``dataset_name`` in DatasetCatalog.

    Args:
        dataset_name (str): registered dataset being evaluated.
        output_dir (str): the run folder (``cfg.OUTPUT_DIR``): artefacts go to
            ``output_dir/artifacts/...`` and the row to ``output_dir/results.csv``.
        num_vis_images (int): validation images drawn with their predictions.
        distributed (bool): gather predictions from all processes (main process writes).
        max_iter (int): the training length (``cfg.SOLVER.MAX_ITER``), to name the final
            evaluation's iteration right (see :func:`current_iteration`).
    """

    def __init__(self, dataset_name: str, output_dir: str, num_vis_images: int = 8,
                 distributed: bool = True, max_iter: Optional[int] = None):
        self.dataset_name = dataset_name
        self.output_dir = output_dir
        self.num_vis_images = int(num_vis_images)
        self.distributed = distributed
        self.max_iter = max_iter
        self.last_dir: Optional[str] = None
        self.last_summary: Dict[str, object] = {}
        self.reset()

    def reset(self):
        self._predictions: List[dict] = []
        self._pending_row: Optional[Dict[str, object]] = None

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            inst = out["instances"].to("cpu")
            self._predictions.append({
                "image_id": inp["image_id"],
                "file_name": inp.get("file_name"),
                "boxes": inst.pred_boxes.tensor.numpy().astype(np.float64),
                "scores": inst.scores.numpy().astype(np.float64),
                "classes": inst.pred_classes.numpy().astype(np.int64),
            })

    def _class_names(self, dataset_dicts) -> List[str]:
        names = list(MetadataCatalog.get(self.dataset_name).get("thing_classes", []) or [])
        top = max((a["category_id"] for d in dataset_dicts for a in d.get("annotations", [])),
                  default=-1)
        return names + [str(i) for i in range(len(names), top + 1)]

    def evaluate(self):
        predictions = self._predictions
        if self.distributed and comm.get_world_size() > 1:
            comm.synchronize()
            predictions = [p for part in comm.gather(predictions, dst=0) for p in part]
            if not comm.is_main_process():
                return {}
        if not predictions:
            logger.warning("[YOLOv7ArtifactsEvaluator] no predictions: no artefacts written")
            return {}
        iteration = current_iteration(self.max_iter)
        out_dir = os.path.join(self.output_dir, "artifacts", self.dataset_name,
                               "eval" if iteration is None else f"iter_{iteration:07d}")
        os.makedirs(out_dir, exist_ok=True)
        self.last_dir = out_dir

        dataset_dicts = DatasetCatalog.get(self.dataset_name)
        by_id = {d["image_id"]: d for d in dataset_dicts}
        names = self._class_names(dataset_dicts)
        nc = max(len(names), 1 + max((int(p["classes"].max()) for p in predictions
                                      if len(p["classes"])), default=-1))
        names = names + [str(i) for i in range(len(names), nc)]

        # Every image of the evaluated set counts, also those without predictions.
        seen = {p["image_id"] for p in predictions}
        empty = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "classes": np.zeros(0, np.int64)}
        all_preds = predictions + [dict(empty, image_id=i, file_name=by_id[i].get("file_name"))
                                   for i in by_id if i not in seen]
        tp, conf, pcls = [], [], []
        num_gt = np.zeros(nc, np.int64)
        matrix = np.zeros((nc + 1, nc + 1), np.int64)
        for p in all_preds:
            gt_boxes, gt_classes = _gt_of(by_id.get(p["image_id"], {}))
            num_gt += np.bincount(gt_classes, minlength=nc)[:nc]
            hits = np.zeros(len(p["scores"]), bool)
            _, di = match_boxes(gt_boxes, gt_classes, p["boxes"], p["classes"], CURVE_IOU,
                                scores=p["scores"])
            hits[di] = True
            tp.append(hits)
            conf.append(p["scores"])
            pcls.append(p["classes"])
            confusion_matrix(gt_boxes, gt_classes, p["boxes"], p["classes"], p["scores"], nc,
                             matrix=matrix)
        curves = precision_recall_curves(np.concatenate(tp), np.concatenate(conf),
                                         np.concatenate(pcls), num_gt)
        self._write_plots(out_dir, curves, matrix, names)
        self._draw_predictions(out_dir, predictions, by_id, names)

        valid = curves["valid"]
        summary: Dict[str, object] = {"P": np.nan, "R": np.nan, "F1": np.nan, "conf_F1": np.nan}
        if valid.any():
            mean_f1 = curves["f1"][valid].mean(0)
            best = int(np.argmax(mean_f1))
            summary = {"P": float(curves["precision"][valid, best].mean()),
                       "R": float(curves["recall"][valid, best].mean()),
                       "F1": float(mean_f1[best]), "conf_F1": float(curves["x"][best])}
        summary["mAP50"] = float(np.nanmean(curves["ap"])) if valid.any() else np.nan
        for c, name in enumerate(names):
            summary[f"AP50-{name}"] = float(curves["ap"][c])
        self.last_summary = dict(summary, confusion_matrix=matrix, curves=curves)
        self._pending_row = {"dataset": self.dataset_name, "iteration": iteration, **summary,
                             **_training_scalars()}
        logger.info("Artefacts of %s written to %s (P %.3f, R %.3f at confidence %.3f)",
                    self.dataset_name, out_dir, summary["P"], summary["R"], summary["conf_F1"])
        return {}

    def _write_plots(self, out_dir: str, curves: dict, matrix: np.ndarray, names: List[str]):
        x, valid, ap = curves["x"], curves["valid"], curves["ap"]
        map50 = float(np.nanmean(ap)) if valid.any() else float("nan")
        plots.plot_metric_curves(x, curves["pr"], names, os.path.join(out_dir, "PR_curve.png"),
                                 xlabel="Recall", ylabel="Precision", valid=valid,
                                 class_values=ap, mean_label=f"all classes {map50:.3f} mAP@0.5")
        for key, label, fname in (("f1", "F1", "F1_curve.png"), ("precision", "Precision", "P_curve.png"),
                                  ("recall", "Recall", "R_curve.png")):
            mean = curves[key][valid].mean(0) if valid.any() else np.zeros_like(x)
            best = int(np.argmax(mean)) if key == "f1" else None
            text = (f"all classes {mean[best]:.2f} at {x[best]:.3f}" if best is not None
                    else "all classes")
            plots.plot_metric_curves(x, curves[key], names, os.path.join(out_dir, fname),
                                     xlabel="Confidence", ylabel=label, valid=valid,
                                     mean_label=text)
        plots.plot_confusion_matrix(matrix, names, os.path.join(out_dir, "confusion_matrix.png"),
                                    title=f"Confusion matrix (conf {CONFUSION_CONF}, IoU "
                                          f"{CONFUSION_IOU}, column-normalized)")
        with open(os.path.join(out_dir, "confusion_matrix.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            labels = list(names) + ["background"]
            writer.writerow(["predicted \\ true"] + labels)
            for label, row in zip(labels, matrix.tolist()):
                writer.writerow([label] + row)

    def _draw_predictions(self, out_dir: str, predictions: List[dict], by_id: dict,
                          names: List[str]):
        for k, p in enumerate(predictions[: self.num_vis_images]):
            d = by_id.get(p["image_id"])
            file_name = p.get("file_name") or (d or {}).get("file_name")
            try:
                image = read_image(file_name, format="RGB")
            except Exception as e:  # drawing is best-effort: never fail an evaluation on it
                logger.warning("cannot draw %s: %s", file_name, e)
                continue
            gt_boxes, gt_classes = _gt_of(d or {})
            keep = p["scores"] >= VIS_CONF
            left = plots.draw_boxes(image, gt_boxes, gt_classes, names, title="ground truth")
            right = plots.draw_boxes(image, p["boxes"][keep], p["classes"][keep], names,
                                     scores=p["scores"][keep],
                                     title=f"predictions >= {VIS_CONF}")
            plots.save_image(os.path.join(out_dir, f"val_{k}.jpg"), plots.image_grid([left, right], 2))

    def write_results_row(self, results: Dict[str, Dict[str, float]]) -> None:
        """Append this evaluation's row to ``output_dir/results.csv``, with the COCO box
        metrics of ``results`` (the merged results of all evaluators) when present."""
        if self._pending_row is None:
            return
        bbox = results.get("bbox", {}) if results else {}
        row = {"dataset": self._pending_row["dataset"],
               "iteration": self._pending_row["iteration"]}
        row.update({k: bbox.get(k) for k in COCO_KEYS})
        row.update({k: v for k, v in self._pending_row.items() if k not in row})
        append_results_row(os.path.join(self.output_dir, "results.csv"),
                           {k: _format(v) for k, v in row.items()})
        self._pending_row = None


class YOLOv7Evaluators(DatasetEvaluators):
    """``DatasetEvaluators`` that, after all evaluators ran, hands the merged results to the
    :class:`YOLOv7ArtifactsEvaluator` among them, which appends its results.csv row."""

    def evaluate(self):
        results = super().evaluate()
        if comm.is_main_process():
            for evaluator in self._evaluators:
                if isinstance(evaluator, YOLOv7ArtifactsEvaluator):
                    evaluator.write_results_row(results)
        return results


# ---------------------------------------------------------------------------------- training
class TrainingArtifactsHook(HookBase):
    """At training start (main process): ``OUTPUT_DIR/artifacts/train/labels.png``, the label
    distribution of the training set, and ``train_batch.jpg``, ``num_images`` samples of the
    training mapper drawn with their boxes.

    The samples come from a shallow copy of the mapper called on seeded-random dataset
    entries, so the training data stream (which counts the mapper's calls) is not touched.

    Args:
        cfg: the training config (OUTPUT_DIR, DATASETS.TRAIN, INPUT.FORMAT).
        mapper: the training :class:`~yolov7_d2.data.YOLOv7MosaicMapper` (its ``dataset`` is
            used for the labels); None: labels from DatasetCatalog, no batch drawing.
        num_images (int): samples drawn (0: none).
    """

    def __init__(self, cfg, mapper=None, num_images: int = 8):
        self.cfg, self.mapper, self.num_images = cfg, mapper, int(num_images)
        self.out_dir = os.path.join(cfg.OUTPUT_DIR, "artifacts", "train")

    def before_train(self):
        if not comm.is_main_process():
            return
        try:
            self.write()
        except Exception:  # artefacts must never stop a training run
            logger.exception("could not write the training-start artefacts")

    def _dataset(self):
        if self.mapper is not None and getattr(self.mapper, "dataset", None) is not None:
            return self.mapper.dataset
        return [d for name in self.cfg.DATASETS.TRAIN for d in DatasetCatalog.get(name)]

    def write(self) -> List[str]:
        """Write the files; returns their paths."""
        dataset = self._dataset()
        names = list(MetadataCatalog.get(self.cfg.DATASETS.TRAIN[0]).get("thing_classes", []) or [])
        classes, boxes = [], []
        for i in range(len(dataset)):
            d = dataset[i]
            w, h = float(d.get("width", 0) or 0), float(d.get("height", 0) or 0)
            if w <= 0 or h <= 0:
                continue
            b, c = _gt_of(d)
            if len(b):
                boxes.append(np.stack([(b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h,
                                       (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h], axis=1))
                classes.append(c)
        classes = np.concatenate(classes) if classes else np.zeros(0, np.int64)
        boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4))
        written = [plots.plot_label_distribution(classes, boxes, names,
                                                 os.path.join(self.out_dir, "labels.png"))]
        if self.mapper is not None and self.num_images > 0 and len(dataset):
            mapper = copy.copy(self.mapper)  # own call counter and stats
            mapper.stats = Counter()
            rng = np.random.default_rng(max(self.cfg.SEED, 0))
            picks = rng.choice(len(dataset), size=min(self.num_images, len(dataset)), replace=False)
            drawings = [draw_mapped_sample(mapper(dataset[int(i)]), names, self.cfg.INPUT.FORMAT)
                        for i in picks]
            written.append(plots.save_image(os.path.join(self.out_dir, "train_batch.jpg"),
                                            plots.image_grid(drawings)))
        logger.info("Training artefacts written: %s", ", ".join(written))
        return written
