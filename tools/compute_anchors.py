#!/usr/bin/env python
"""Compute anchors for the training data of a config: k-means on the box sizes, then genetic
evolution (see yolov7_d2/anchors.py for the definitions, those of the official autoanchor).

Examples:
    python tools/compute_anchors.py --config-file configs/deepforest/yolov7-tiny-trees.yaml
    python tools/compute_anchors.py --config-file configs/coco/yolov7-tiny.yaml \\
        --yolo-data my/data.yaml --generations 300
    python tools/compute_anchors.py --config-file configs/coco/yolov7.yaml \\
        --opts INPUT.YOLOV7.IMAGE_SIZE 1280

Box sizes come from DATASETS.TRAIN (the registered datasets: DeepForest, labelme_examples,
or the one named by --yolo-data / --voc-root), each image resized to long side
INPUT.YOLOV7.IMAGE_SIZE. Prints the best possible recall (BPR) of the current anchors
(MODEL.YOLOV7.ANCHORS, or the ARCH's official ones), the new anchors and their BPR, and the
config line to use them (quote its value in a shell: it contains brackets).
"""
import argparse
import sys

import numpy as np

import yolov7_d2  # noqa: F401  (compat shims, registrations)
from yolov7_d2.anchors import (
    anchor_fitness,
    anchor_metrics,
    anchors_per_level,
    box_sizes,
    compute_anchors,
    format_anchors,
)
from yolov7_d2.config import load_config
from yolov7_d2.data import register_deepforest, register_labelme_examples
from yolov7_d2.engine import prepare_bundled_datasets
from yolov7_d2.engine.dataset_options import add_dataset_arguments, apply_dataset_arguments
from yolov7_d2.modeling.arch import get_arch

from detectron2.data import DatasetCatalog


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="a yolov7_d2 yaml config")
    parser.add_argument("--num-anchors", type=int, default=0,
                        help="anchors in total (default: as many as the config's, 9 for P5 "
                             "scales, 12 for P6); a multiple of the number of levels")
    parser.add_argument("--generations", type=int, default=1000,
                        help="generations of the genetic evolution (official: 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of k-means and evolution")
    add_dataset_arguments(parser)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides as KEY VALUE pairs")
    return parser.parse_args(argv)


def _report(label, wh, anchors, anchor_t):
    bpr, aat = anchor_metrics(wh, anchors, anchor_t)
    print(f"{label}: best possible recall {bpr:.4f}, {aat:.2f} anchors/box above threshold, "
          f"fitness {anchor_fitness(wh, anchors, anchor_t):.4f}")
    return bpr


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config_file, list(args.opts))
    register_deepforest()
    register_labelme_examples()
    apply_dataset_arguments(cfg, args)
    prepare_bundled_datasets(cfg.DATASETS.TRAIN)
    yolo = cfg.MODEL.YOLOV7
    current = [list(a) for a in (yolo.ANCHORS or get_arch(yolo.ARCH).anchors)]
    levels = len(current)
    n = args.num_anchors or sum(len(a) for a in current) // 2
    if n % levels:
        print(f"--num-anchors {n} is not a multiple of the {levels} levels", file=sys.stderr)
        return 2
    size, anchor_t = cfg.INPUT.YOLOV7.IMAGE_SIZE, yolo.LOSS.ANCHOR_T
    dicts = [d for name in cfg.DATASETS.TRAIN for d in DatasetCatalog.get(name)]
    wh = box_sizes(dicts, size)
    print(f"{len(wh)} boxes in {len(dicts)} images of {', '.join(cfg.DATASETS.TRAIN)} at image "
          f"size {size} (long side); anchor_t {anchor_t:g}")
    if len(wh) < n:
        print(f"too few boxes ({len(wh)}) for {n} anchors", file=sys.stderr)
        return 1
    print(f"current anchors {format_anchors(current)}")
    old_bpr = _report("current anchors", wh, np.array(current, dtype=float).reshape(-1, 2),
                      anchor_t)

    anchors, info = compute_anchors(wh, n, anchor_t, args.generations, seed=args.seed,
                                    progress=True)
    print(f"k-means on {info['used']} boxes (those with a side >= 2 px): fitness "
          f"{info['kmeans']:.4f}; after {args.generations} generations: {info['evolved']:.4f}")
    per_level = anchors_per_level(anchors, levels)
    new = np.array(per_level, dtype=float).reshape(-1, 2)  # the rounded anchors printed
    new_bpr = _report("new anchors", wh, new, anchor_t)
    if new_bpr < old_bpr:
        print("note: the current anchors have the higher best possible recall; keep them")
    print("config line (a KEY VALUE pair for --opts / train_net.py):")
    print(f"MODEL.YOLOV7.ANCHORS {format_anchors(per_level)}")
    print("or in the yaml config:")
    print("MODEL:\n  YOLOV7:\n    ANCHORS: "
          + "[" + ", ".join("[" + ", ".join(str(v) for v in lvl) + "]" for lvl in per_level) + "]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
