#!/usr/bin/env python
"""Time COCO box evaluation with pycocotools and with faster-coco-eval on a COCO-sized
synthetic set (default: 5000 images, ~36k ground-truth boxes, 80 classes, 100 detections per
image), and check that both give the same 12 summary numbers.

Example:
    python tools/benchmark_coco_eval.py
    python tools/benchmark_coco_eval.py --images 500 --classes 20

Each backend is timed from the results list to the summary, as an evaluation runs it:
results loaded against the ground truth (``loadRes``), evaluate, accumulate, summarize; for
faster-coco-eval, building its ground-truth index from a copy of the pycocotools dataset (what
``YOLOv7COCOEvaluator`` does) is timed too. Single run, wall clock; not a test.
"""
import argparse
import contextlib
import copy
import io
import sys
import time
from pathlib import Path

import numpy as np

import yolov7_d2  # noqa: F401  (compat shims)

# The synthetic set is test data: it lives in the checkout's tests/, next to this tools/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from synthetic import synthetic_detection_set, to_coco_json  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000, help="images (default: %(default)s)")
    parser.add_argument("--classes", type=int, default=80, help="classes (default: %(default)s)")
    parser.add_argument("--gt-per-image", type=float, default=7.3,
                        help="mean ground-truth boxes per image (default: %(default)s, COCO val)")
    parser.add_argument("--dets-per-image", type=int, default=100,
                        help="detections per image (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import faster_coco_eval
    from pycocotools.coco import COCO

    from yolov7_d2.evaluation import evaluate_with_faster_coco_eval

    from detectron2.evaluation.coco_evaluation import _evaluate_predictions_on_coco

    t = time.perf_counter()
    dicts, dets = synthetic_detection_set(args.images, args.classes, args.gt_per_image,
                                          args.dets_per_image, seed=args.seed)
    gt, results = to_coco_json(dicts, dets, args.classes)
    print(f"synthetic set: {len(gt['images'])} images, {len(gt['annotations'])} ground-truth "
          f"boxes, {len(results)} detections, {args.classes} classes "
          f"(made in {time.perf_counter() - t:.1f} s)")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()

    res = copy.deepcopy(results)
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        slow = _evaluate_predictions_on_coco(coco_gt, res, "bbox", use_fast_impl=False)
    t_slow = time.perf_counter() - t

    res = copy.deepcopy(results)
    t = time.perf_counter()
    fast_gt = faster_coco_eval.COCO(copy.deepcopy(coco_gt.dataset))
    t_index = time.perf_counter() - t
    fast = evaluate_with_faster_coco_eval(fast_gt, res, "bbox")
    t_fast = time.perf_counter() - t

    diff = float(np.max(np.abs(np.asarray(slow.stats) - fast.stats)))
    from importlib.metadata import version

    print(f"pycocotools {version('pycocotools')} COCOeval:              {t_slow:7.2f} s")
    print(f"faster-coco-eval {version('faster-coco-eval')} COCOeval_faster: {t_fast:7.2f} s "
          f"(of which {t_index:.2f} s ground-truth index)  -> {t_slow / t_fast:.1f}x faster")
    print("AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl:")
    print("  pycocotools     ",
          np.array2string(np.asarray(slow.stats), precision=4, max_line_width=200))
    print("  faster-coco-eval", np.array2string(fast.stats, precision=4, max_line_width=200))
    print(f"max |difference| of the 12 numbers: {diff:.3g}"
          + (" (bit-for-bit equal)" if np.array_equal(slow.stats, fast.stats) else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
