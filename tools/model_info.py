#!/usr/bin/env python
"""Print the parameter count and GFLOPs of the model of a config, in training and deploy form.

Example:
    python tools/model_info.py --config-file configs/coco/yolov7.yaml
    python tools/model_info.py --config-file configs/coco/yolov7-e6e.yaml --size 1280

GFLOPs follow the official convention (2 x multiply-accumulates, as thop reports them),
counted with fvcore. Counting runs at a small size and is scaled by the pixel ratio, which is
exact for a fully convolutional network whose feature maps divide evenly.
"""
import argparse
import sys

import torch

import yolov7_d2  # noqa: F401  (compat shims, registrations)
from yolov7_d2.config import load_config
from yolov7_d2.modeling import reparameterize
from yolov7_d2.modeling.flops import count_gflops

from detectron2.modeling import build_model


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="a yolov7_d2 yaml config")
    parser.add_argument("--size", type=int, default=0,
                        help="square input size for GFLOPs (default: INPUT.MAX_SIZE_TEST)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides as KEY VALUE pairs")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config_file, list(args.opts) + ["MODEL.DEVICE", "cpu"])
    size = args.size or cfg.INPUT.MAX_SIZE_TEST
    model = build_model(cfg).eval()
    print(f"{cfg.MODEL.YOLOV7.ARCH} ({args.config_file}), input {size}x{size}")
    for form in ("training", "deploy (fused)"):
        if form != "training":
            reparameterize(model)
        params = sum(p.numel() for p in model.parameters())
        print(f"  {form:15s} parameters {params:>13,d}   GFLOPs {count_gflops(model, size):8.1f}")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
