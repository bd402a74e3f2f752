#!/usr/bin/env python
"""Convert an official YOLOv7 checkpoint (WongKinYiu/yolov7 .pt, or its plain state dict)
into a detectron2 checkpoint for the model of a yolov7_d2 config.

Example:
    python tools/convert_official_weights.py --config-file configs/coco/yolov7.yaml \\
        yolov7_training.pt output/yolov7_d2.pth

The official code need not be installed. Every tensor is mapped and checked; anchors and class
names come from the checkpoint. Released P6 checkpoints without auxiliary head need
``--opts MODEL.YOLOV7.AUX_HEAD False``; deploy (plain Detect) ones ``MODEL.YOLOV7.DEPLOY True``.
(MODEL.WEIGHTS may also name the official file itself: it is then converted when loaded, and
fine-tuned when training if its class count differs.)
"""
import argparse
import logging
import sys

import yolov7_d2  # noqa: F401  (applies the detectron2 compat shims, registers the model)
from yolov7_d2.checkpoint import atomic_torch_save
from yolov7_d2.config import load_config
from yolov7_d2.convert import ConversionError, load_official_checkpoint, official_to_yolov7

from detectron2.modeling import build_model

logger = logging.getLogger("yolov7_d2.convert")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True,
                        help="yolov7_d2 config of the same scale as the checkpoint")
    parser.add_argument("source", help="official .pt checkpoint or state dict")
    parser.add_argument("output", help="where to write the detectron2 checkpoint (.pth)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides as KEY VALUE pairs, "
                             "e.g. MODEL.YOLOV7.NUM_CLASSES 20")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    cfg = load_config(args.config_file, list(args.opts) + ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    try:
        official = load_official_checkpoint(args.source)
        state = official_to_yolov7(official.state, model, args.source)
    except (ConversionError, FileNotFoundError) as e:
        logger.error("Conversion failed: %s", e)
        return 1
    # The class names travel with the weights: fine-tuning can keep the classes named alike.
    atomic_torch_save({"model": state, "__author__": "official YOLOv7, converted by yolov7_d2",
                       "thing_classes": official.class_names, "matching_heuristics": False},
                      args.output)
    logger.info("Wrote %d tensors (%d parameters) to %s; anchors: %s", len(state),
                sum(p.numel() for p in model.parameters()), args.output,
                state["anchors"].flatten(1).tolist())
    return 0


if __name__ == "__main__":
    sys.exit(main())
