#!/usr/bin/env python
r"""Draw what the YOLOv7 training mapper produces: mosaic / mixup / perspective / HSV / flip
samples of the training set with their boxes and class names, one image per sample.

Examples:
    python tools/visualize_data.py --config-file configs/deepforest/yolov7-tiny-trees.yaml \
        --num 8 --output output/visualize
    python tools/visualize_data.py --config-file configs/coco/yolov7-tiny.yaml --num 4 \
        --output out/vis --opts INPUT.YOLOV7.MOSAIC_PROB 0.0
    python tools/visualize_data.py --config-file configs/coco/yolov7-tiny.yaml \
        --yolo-data my/data.yaml --output out/vis

Samples are drawn from DATASETS.TRAIN (a seeded random choice of dataset entries, each mapped
once, with the augmentation settings of INPUT.YOLOV7 after --opts). Files are written as
NNN_<image name>.jpg.
"""
import argparse
import os
import sys

import numpy as np
from tqdm import tqdm

import yolov7_d2  # noqa: F401  (compat shims, registrations)
from yolov7_d2.config import load_config
from yolov7_d2.data import YOLOv7MosaicMapper, register_deepforest, register_labelme_examples
from yolov7_d2.engine import prepare_bundled_datasets
from yolov7_d2.engine.dataset_options import add_dataset_arguments, apply_dataset_arguments
from yolov7_d2.evaluation.artifacts import draw_mapped_sample
from yolov7_d2.utils.plots import save_image

from detectron2.data import MetadataCatalog, get_detection_dataset_dicts


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="visualize_data.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE",
                        help="a yolov7_d2 yaml config (its DATASETS.TRAIN and INPUT.YOLOV7)")
    parser.add_argument("--num", type=int, default=8, metavar="N",
                        help="number of samples to draw (default: %(default)s)")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="folder for the drawings (created if needed)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the choice of dataset entries and of the mapper "
                             "(default: %(default)s)")
    add_dataset_arguments(parser)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                        help="config overrides as KEY VALUE pairs; must come last")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.num < 1:
        print("--num must be at least 1", file=sys.stderr)
        return 1
    register_deepforest()
    register_labelme_examples()
    cfg = load_config(args.config_file, list(args.opts))
    apply_dataset_arguments(cfg, args)
    cfg.SEED = args.seed
    prepare_bundled_datasets(cfg.DATASETS.TRAIN)
    dataset = get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
    mapper = YOLOv7MosaicMapper(cfg, is_train=True, dataset_dicts=dataset)
    names = list(MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("thing_classes", []) or [])
    rng = np.random.default_rng(args.seed)
    picks = rng.choice(len(dataset), size=args.num, replace=args.num > len(dataset))
    os.makedirs(args.output, exist_ok=True)
    boxes = 0
    for k, index in enumerate(tqdm(picks, desc="samples", unit="img")):
        sample = mapper(mapper.dataset[int(index)])
        boxes += len(sample["instances"])
        stem = os.path.splitext(os.path.basename(str(sample.get("file_name", "sample"))))[0]
        save_image(os.path.join(args.output, f"{k:03d}_{stem}.jpg"),
                   draw_mapped_sample(sample, names, cfg.INPUT.FORMAT))
    print(f"wrote {len(picks)} samples ({boxes} boxes) to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
