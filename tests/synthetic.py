"""Seeded synthetic detection sets (ground truth + detections) for the evaluator tests and
``tools/benchmark_coco_eval.py``: COCO-like statistics (box sizes over the small / medium /
large ranges, a few crowd boxes, many low-score detections), nothing to download."""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from detectron2.structures import BoxMode

__all__ = ["synthetic_detection_set", "to_coco_json"]


def synthetic_detection_set(num_images: int = 300, num_classes: int = 5, gt_per_image: float = 7.3,
                            dets_per_image: int = 100, crowd_fraction: float = 0.01,
                            seed: int = 0) -> Tuple[List[dict], Dict[int, dict]]:
    """Ground truth as detectron2 dataset dicts and detections per image.

    Detections: about 75% of the ground-truth boxes are found (box jittered, right class 85%
    of the time, a score that tends to be high), the rest of the ``dets_per_image`` are
    random boxes with low scores.

    Returns:
        (dataset_dicts, detections): dataset dicts with "file_name", "image_id", "height",
        "width", "annotations" (XYWH_ABS boxes, contiguous "category_id", "iscrowd");
        detections maps image_id to {"boxes": (N, 4) float32 XYXY, "scores": (N,) float32,
        "classes": (N,) int64}.
    """
    rng = np.random.default_rng(seed)
    dicts, detections = [], {}
    for image_id in range(1, num_images + 1):
        width, height = (int(v) for v in rng.integers(320, 641, size=2))
        n_gt = int(rng.poisson(gt_per_image))
        # log-uniform sides: small (< 32^2), medium and large (> 96^2) areas all occur
        wh = np.exp(rng.uniform(np.log(6), np.log(0.9 * min(width, height)), size=(n_gt, 2)))
        x0 = rng.uniform(0, width - wh[:, 0])
        y0 = rng.uniform(0, height - wh[:, 1])
        gt = np.stack([x0, y0, x0 + wh[:, 0], y0 + wh[:, 1]], axis=1)
        gt_classes = rng.integers(num_classes, size=n_gt)
        crowd = rng.random(n_gt) < crowd_fraction
        annotations = [
            {"bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
             "bbox_mode": BoxMode.XYWH_ABS, "category_id": int(c), "iscrowd": int(k)}
            for b, c, k in zip(gt, gt_classes, crowd)
        ]
        dicts.append({"file_name": f"synthetic_{image_id:06d}.jpg", "image_id": image_id,
                      "height": height, "width": width, "annotations": annotations})

        found = rng.random(n_gt) < 0.75
        tp_boxes = gt[found] + rng.normal(0, 0.08, size=(int(found.sum()), 4)) * np.repeat(
            wh[found], 2, axis=0).reshape(-1, 4)
        tp_classes = np.where(rng.random(int(found.sum())) < 0.85, gt_classes[found],
                              rng.integers(num_classes, size=int(found.sum())))
        tp_scores = rng.beta(5, 2, size=int(found.sum()))
        n_fp = max(dets_per_image - len(tp_boxes), 0)
        fwh = np.exp(rng.uniform(np.log(4), np.log(0.8 * min(width, height)), size=(n_fp, 2)))
        fx0 = rng.uniform(0, width - fwh[:, 0])
        fy0 = rng.uniform(0, height - fwh[:, 1])
        fp_boxes = np.stack([fx0, fy0, fx0 + fwh[:, 0], fy0 + fwh[:, 1]], axis=1)
        boxes = np.concatenate([tp_boxes, fp_boxes])
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        detections[image_id] = {
            "boxes": boxes.astype(np.float32),
            "scores": np.concatenate([tp_scores, rng.beta(1, 6, size=n_fp)]).astype(np.float32),
            "classes": np.concatenate([tp_classes, rng.integers(num_classes, size=n_fp)]).astype(
                np.int64),
        }
    return dicts, detections


def to_coco_json(dataset_dicts: List[dict], detections: Dict[int, dict], num_classes: int):
    """The same set as a COCO ground-truth dict and a COCO results list (category ids
    1..num_classes), for direct use with pycocotools / faster-coco-eval."""
    images, annotations, results = [], [], []
    for d in dataset_dicts:
        images.append({"id": d["image_id"], "width": d["width"], "height": d["height"],
                       "file_name": d["file_name"]})
        for a in d["annotations"]:
            x, y, w, h = a["bbox"]
            annotations.append({"id": len(annotations) + 1, "image_id": d["image_id"],
                                "category_id": a["category_id"] + 1, "bbox": [x, y, w, h],
                                "area": w * h, "iscrowd": a["iscrowd"]})
        det = detections[d["image_id"]]
        for box, score, cls in zip(det["boxes"].tolist(), det["scores"].tolist(),
                                   det["classes"].tolist()):
            results.append({"image_id": d["image_id"], "category_id": cls + 1,
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                            "score": score})
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": i + 1, "name": f"class_{i}"} for i in range(num_classes)]}
    return gt, results
