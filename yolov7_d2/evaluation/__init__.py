"""Evaluation: COCO metrics with a choice of backend, run artefacts (curves, confusion
matrix, results table, drawn predictions)."""
from .coco import EVAL_BACKENDS, YOLOv7COCOEvaluator, evaluate_with_faster_coco_eval

__all__ = ["EVAL_BACKENDS", "YOLOv7COCOEvaluator", "evaluate_with_faster_coco_eval"]
