"""COCO box evaluation with a choice of COCOeval implementation.

:class:`YOLOv7COCOEvaluator` is detectron2's ``COCOEvaluator`` (same inputs, same results dict,
same files in ``output_dir``) whose metric computation runs on one of:

* ``"pycocotools"``: detectron2's own path: the official Python ``COCOeval`` of pycocotools,
  or detectron2's C++ ``COCOeval_opt`` when detectron2 has its compiled ``detectron2._C``;
* ``"faster_coco_eval"``: ``COCOeval_faster`` of PyPI ``faster-coco-eval`` (extra
  ``fast-eval``; C++ evaluate and accumulate, no detectron2 build needed); it reproduces
  pycocotools' numbers (``tests/test_evaluation.py`` checks the 12 summary statistics and the
  per-class APs) and is several times faster on COCO-sized sets
  (``tools/benchmark_coco_eval.py``).

The backend is chosen per evaluator instance: no module-level state of detectron2 or
pycocotools is patched.
"""
from __future__ import annotations

import copy
import itertools
import json
import logging
import os
from typing import Optional, Sequence

import numpy as np

from detectron2.evaluation import COCOEvaluator
from detectron2.utils.file_io import PathManager

from .. import compat
from ..utils.optional import import_optional

__all__ = ["EVAL_BACKENDS", "YOLOv7COCOEvaluator", "evaluate_with_faster_coco_eval"]

logger = logging.getLogger(__name__)

#: Accepted values of ``cfg.TEST.YOLOV7.EVAL_BACKEND``.
EVAL_BACKENDS = ("pycocotools", "faster_coco_eval")


def _import_faster_coco_eval():
    return import_optional("faster_coco_eval", "fast-eval",
                           "TEST.YOLOV7.EVAL_BACKEND 'faster_coco_eval'",
                           alternative="set TEST.YOLOV7.EVAL_BACKEND pycocotools")


def evaluate_with_faster_coco_eval(coco_gt, coco_results: Sequence[dict], iou_type: str, *,
                                   kpt_oks_sigmas=None, img_ids=None,
                                   max_dets_per_image: Optional[Sequence[int]] = None):
    """detectron2's ``_evaluate_predictions_on_coco`` with faster-coco-eval's ``COCOeval_faster``.

    Args:
        coco_gt: a ``faster_coco_eval.COCO`` of the ground truth.
        coco_results (list[dict]): COCO-format results (dataset category ids); not empty.
        iou_type (str): "bbox", "segm" or "keypoints".
        kpt_oks_sigmas, img_ids, max_dets_per_image: as detectron2's function.

    Returns:
        the evaluated, accumulated and summarized ``COCOeval_faster`` (``stats``, ``eval``,
        ``params`` as pycocotools' COCOeval).
    """
    fce = _import_faster_coco_eval()
    assert len(coco_results) > 0
    coco_results = list(coco_results)
    if iou_type == "segm":
        # As detectron2: mask AP must use the mask area, not the box area.
        coco_results = [{k: v for k, v in r.items() if k != "bbox"} for r in coco_results]
    coco_dt = coco_gt.loadRes(coco_results)
    coco_eval = fce.COCOeval_faster(coco_gt, coco_dt, iou_type, print_function=logger.debug,
                                    kpt_oks_sigmas=kpt_oks_sigmas)
    if max_dets_per_image is None:
        max_dets_per_image = [1, 10, 100]  # pycocotools' default
    elif len(max_dets_per_image) < 3:
        raise ValueError("COCOeval needs max_dets_per_image with at least 3 entries, got "
                         f"{list(max_dets_per_image)}")
    if iou_type != "keypoints":
        # COCOeval_faster summarizes AP at maxDets[-1], as detectron2's COCOevalMaxDets.
        coco_eval.params.maxDets = list(max_dets_per_image)
    if img_ids is not None:
        coco_eval.params.imgIds = img_ids
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    # The standard 12 numbers first, as pycocotools (faster-coco-eval also keeps AR50/AR75
    # in ``all_stats``).
    coco_eval.stats = np.asarray(coco_eval.stats, dtype=np.float64)
    return coco_eval


class YOLOv7COCOEvaluator(COCOEvaluator):
    """detectron2's ``COCOEvaluator`` with a selectable COCOeval backend.

    Args:
        dataset_name, tasks, distributed, output_dir, max_dets_per_image, **kwargs: as
            ``COCOEvaluator`` (``use_fast_impl`` is chosen from ``backend``).
        backend (str): one of :data:`EVAL_BACKENDS` (``cfg.TEST.YOLOV7.EVAL_BACKEND``).
    """

    def __init__(self, dataset_name, tasks=None, distributed=True, output_dir=None, *,
                 backend: str = "pycocotools", **kwargs):
        if backend not in EVAL_BACKENDS:
            raise ValueError(f"unknown COCO evaluation backend {backend!r} "
                             f"(TEST.YOLOV7.EVAL_BACKEND); choose one of {EVAL_BACKENDS}")
        if backend == "faster_coco_eval":
            _import_faster_coco_eval()  # fail at construction, not after inference
        kwargs.setdefault("use_fast_impl", compat.HAS_D2_C and backend == "pycocotools")
        super().__init__(dataset_name, tasks, distributed, output_dir, **kwargs)
        self.backend = backend
        self._faster_gt = None

    def _faster_coco_gt(self):
        """The ground truth as a ``faster_coco_eval.COCO`` (built once, from a copy of the
        pycocotools one's dataset, so that neither API sees the other's bookkeeping)."""
        if self._faster_gt is None:
            fce = _import_faster_coco_eval()
            self._faster_gt = fce.COCO(copy.deepcopy(self._coco_api.dataset),
                                       print_function=logger.debug)
        return self._faster_gt

    def _eval_predictions(self, predictions, img_ids=None):
        if self.backend != "faster_coco_eval":
            return super()._eval_predictions(predictions, img_ids=img_ids)
        # detectron2 0.6's COCOEvaluator._eval_predictions, with faster-coco-eval evaluating.
        self._logger.info("Preparing results for COCO format ...")
        coco_results = list(itertools.chain(*[x["instances"] for x in predictions]))
        tasks = self._tasks or self._tasks_from_predictions(coco_results)

        if hasattr(self._metadata, "thing_dataset_id_to_contiguous_id"):
            dataset_id_to_contiguous_id = self._metadata.thing_dataset_id_to_contiguous_id
            num_classes = len(dataset_id_to_contiguous_id)
            reverse_id_mapping = {v: k for k, v in dataset_id_to_contiguous_id.items()}
            for result in coco_results:
                category_id = result["category_id"]
                if not 0 <= category_id < num_classes:
                    raise ValueError(f"A prediction has class={category_id}, but the dataset "
                                     f"only has {num_classes} classes.")
                result["category_id"] = reverse_id_mapping[category_id]

        if self._output_dir:
            file_path = os.path.join(self._output_dir, "coco_instances_results.json")
            self._logger.info("Saving results to {}".format(file_path))
            with PathManager.open(file_path, "w") as f:
                f.write(json.dumps(coco_results))
                f.flush()

        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return

        self._logger.info("Evaluating predictions with faster-coco-eval ...")
        for task in sorted(tasks):
            if task not in {"bbox", "segm", "keypoints"}:
                raise ValueError(f"unknown COCO task {task!r}")
            coco_eval = (
                evaluate_with_faster_coco_eval(
                    self._faster_coco_gt(), coco_results, task,
                    kpt_oks_sigmas=self._kpt_oks_sigmas or None, img_ids=img_ids,
                    max_dets_per_image=self._max_dets_per_image,
                )
                if len(coco_results) > 0
                else None  # as detectron2: no results, no COCOeval
            )
            res = self._derive_coco_results(coco_eval, task,
                                            class_names=self._metadata.get("thing_classes"))
            self._results[task] = res
