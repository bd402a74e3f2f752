"""Run artefacts written into ``cfg.OUTPUT_DIR`` (``cfg.TEST.YOLOV7.ARTIFACTS``), like the
official YOLOv7 run folder. The numbers come from :mod:`.metrics`; the training-start files
(``artifacts/train/``) from :class:`~yolov7_d2.engine.hooks.TrainingArtifactsHook`.

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
best mean F1 (as the official P and R), per-class AP50 of the artefact matcher (close to, not
equal to, the COCO AP50: see :mod:`.metrics`), and the training losses and learning rate
(medians over the last 20 iterations) when training.
"""
from __future__ import annotations

import csv
import logging
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

from ..data.image_io import read_image
from ..utils import plots
from ..utils.io import atomic_write
from .metrics import (
    CONFUSION_CONF,
    CONFUSION_IOU,
    best_f1_summary,
    detection_metrics,
    ground_truth_of,
)

__all__ = [
    "current_iteration",
    "append_results_row",
    "YOLOv7ArtifactsEvaluator",
    "YOLOv7Evaluators",
    "draw_mapped_sample",
]

logger = logging.getLogger(__name__)

VIS_CONF = 0.25  # predictions drawn on the validation images (official detect.py default)
COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


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
    if new_columns or not header:  # also a new file: atomic_write creates its folder
        header += new_columns

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=header)
                writer.writeheader()
                writer.writerows(rows + [row])

        atomic_write(path, write)
    else:
        with open(path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=header).writerow(row)


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.6g}"
    return str(value)


def _to_rgb(image: torch.Tensor | np.ndarray, image_format: str) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        image = image.permute(1, 2, 0).cpu().numpy()
    image = np.ascontiguousarray(image.astype(np.uint8))
    return image[..., ::-1].copy() if image_format == "BGR" else image


def draw_mapped_sample(sample: dict, names: Sequence[str], image_format: str = "RGB"
                       ) -> np.ndarray:
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
        images = [(*ground_truth_of(by_id.get(p["image_id"], {})), p["boxes"], p["scores"],
                   p["classes"]) for p in all_preds]
        curves, matrix = detection_metrics(images, nc)
        summary: Dict[str, object] = dict(best_f1_summary(curves))
        for c, name in enumerate(names):
            summary[f"AP50-{name}"] = float(curves["ap"][c])
        self._write_plots(out_dir, curves, summary["mAP50"], matrix, names)
        self._draw_predictions(out_dir, predictions, by_id, names)
        self.last_summary = dict(summary, confusion_matrix=matrix, curves=curves)
        self._pending_row = {"dataset": self.dataset_name, "iteration": iteration, **summary,
                             **_training_scalars()}
        logger.info("Artefacts of %s written to %s (P %.3f, R %.3f at confidence %.3f)",
                    self.dataset_name, out_dir, summary["P"], summary["R"], summary["conf_F1"])
        return {}

    def _write_plots(self, out_dir: str, curves: dict, map50: float, matrix: np.ndarray,
                     names: List[str]):
        x, valid, ap = curves["x"], curves["valid"], curves["ap"]
        plots.plot_metric_curves(x, curves["pr"], names, os.path.join(out_dir, "PR_curve.png"),
                                 xlabel="Recall", ylabel="Precision", valid=valid,
                                 class_values=ap, mean_label=f"all classes {map50:.3f} mAP@0.5")
        for key, label, fname in (("f1", "F1", "F1_curve.png"),
                                  ("precision", "Precision", "P_curve.png"),
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
            gt_boxes, gt_classes = ground_truth_of(d or {})
            keep = p["scores"] >= VIS_CONF
            left = plots.draw_boxes(image, gt_boxes, gt_classes, names, title="ground truth")
            right = plots.draw_boxes(image, p["boxes"][keep], p["classes"][keep], names,
                                     scores=p["scores"][keep],
                                     title=f"predictions >= {VIS_CONF}")
            plots.save_image(os.path.join(out_dir, f"val_{k}.jpg"),
                             plots.image_grid([left, right], 2))

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
