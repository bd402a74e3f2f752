#!/usr/bin/env python
"""Re-parameterize a trained YOLOv7 checkpoint into its deploy form (YOLOv7 paper, sec. 3.2):
BatchNorm folded into the convolutions, RepConv branches merged into one 3x3 convolution,
implicit knowledge (ImplicitA / ImplicitM) folded into the prediction convolutions, auxiliary
head (P6 scales) removed. The outputs of the lead head are unchanged up to float rounding.

Example:
    python tools/reparameterize.py --config-file configs/coco/yolov7-tiny.yaml \\
        output/model_final.pth output/yolov7-tiny-deploy.pth

The input is a checkpoint of this package (a training checkpoint, or a converted official
one); when it holds EMA weights (training with SOLVER.YOLOV7.EMA_DECAY > 0) those are used,
as the official code deploys its EMA model, unless --no-ema. The output holds only the fused
model ("model") and is written atomically. Load it with MODEL.YOLOV7.REPARAMETERIZED True
(tools/export_onnx.py detects it by itself):

    python demo.py --config-file configs/coco/yolov7-tiny.yaml --input photo.jpg \\
        --opts MODEL.WEIGHTS output/yolov7-tiny-deploy.pth MODEL.YOLOV7.REPARAMETERIZED True
"""
import argparse
import logging
import sys

import torch

import yolov7_d2  # noqa: F401  (applies the detectron2 compat shims, registers the model)
from yolov7_d2.checkpoint import CheckpointError, YOLOv7Checkpointer, atomic_torch_save
from yolov7_d2.config import load_config
from yolov7_d2.config_checks import ConfigError
from yolov7_d2.export.deploy import (
    checkpoint_is_reparameterized,
    count_parameters,
    deploy_checkpoint,
)
from yolov7_d2.modeling import reparameterize

from detectron2.modeling import build_model

logger = logging.getLogger("yolov7_d2.reparameterize")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reparameterize.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE",
                        help="the yolov7_d2 config the checkpoint was trained with")
    parser.add_argument("input", help="checkpoint to fuse (.pth of training or of "
                                      "tools/convert_official_weights.py)")
    parser.add_argument("output", help="where to write the deploy checkpoint (.pth)")
    parser.add_argument("--no-ema", action="store_true",
                        help="fuse the checkpoint's raw model weights even when it holds EMA "
                             "weights (default: the EMA weights, the official final model)")
    parser.add_argument("--check-size", type=int, default=256, metavar="PX",
                        help="compare the raw head outputs before and after fusing on a random "
                             "PX x PX input and print the largest difference; 0 skips it "
                             "(default: %(default)s)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                        help="config overrides as KEY VALUE pairs, e.g. "
                             "MODEL.YOLOV7.NUM_CLASSES 20; must come last")
    return parser


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = get_parser().parse_args(argv)
    try:
        cfg = load_config(args.config_file, list(args.opts) + ["MODEL.DEVICE", "cpu"])
    except ConfigError as e:  # names the file or key and the fix
        logger.error("%s", e)
        return 1
    if cfg.MODEL.YOLOV7.REPARAMETERIZED:
        logger.error("MODEL.YOLOV7.REPARAMETERIZED is True: give the config of the training "
                     "model (the input is fused here)")
        return 1
    if checkpoint_is_reparameterized(args.input):
        logger.error("%s is already re-parameterized (no BatchNorm left): nothing to do",
                     args.input)
        return 1
    model = build_model(cfg)
    try:
        YOLOv7Checkpointer(model, prefer_ema=not args.no_ema).load(args.input)
    except CheckpointError as e:
        logger.error("%s", e)
        return 1
    model.eval()
    before = count_parameters(model)
    probe = None
    if args.check_size:
        divisor = model.backbone.size_divisibility
        size = max(divisor, args.check_size // divisor * divisor)
        probe = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            expected = model.forward_raw(probe)["lead"]
    reparameterize(model)
    after = count_parameters(model)
    print(f"parameters: {before:,d} (training form) -> {after:,d} (deploy, fused)")
    if probe is not None:
        with torch.no_grad():
            fused = model.forward_raw(probe)["lead"]
        diff = max((a - b).abs().max().item() for a, b in zip(expected, fused))
        scale = max(a.abs().max().item() for a in expected)
        print(f"raw head outputs on a random {probe.shape[2]}x{probe.shape[3]} input: max "
              f"|difference| {diff:.3g} (largest output {scale:.3g})")
    atomic_torch_save(deploy_checkpoint(
        model, __author__="yolov7_d2 tools/reparameterize.py", source=args.input,
        arch=cfg.MODEL.YOLOV7.ARCH), args.output)
    print(f"wrote {args.output}; load it with MODEL.YOLOV7.REPARAMETERIZED True")
    return 0


if __name__ == "__main__":
    sys.exit(main())
