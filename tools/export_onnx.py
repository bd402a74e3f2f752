#!/usr/bin/env python
"""Export a YOLOv7 model to ONNX in its deploy (re-parameterized) form.

Examples:
    # raw head maps, batch 1, 640 x 640
    python tools/export_onnx.py --config-file configs/coco/yolov7-tiny.yaml \\
        --weights output/model_final.pth --output yolov7-tiny.onnx
    # NMS in the graph (standard NonMaxSuppression op, runs in onnxruntime), any batch size
    python tools/export_onnx.py --config-file configs/coco/yolov7-tiny.yaml \\
        --weights output/model_final.pth --output yolov7-tiny-e2e.onnx --end2end --dynamic-batch

Input "images": float32 (N, 3, H, W), channels in the config's INPUT.FORMAT order (RGB for
the shipped configs), pixel values 0..255 (NOT 0..1 as the official export): the graph
normalizes with the config's PIXEL_MEAN / PIXEL_STD, as the detectron2 model does. Resize the
image to fit H x W keeping its aspect ratio and pad it (bottom / right) with grey 114, as
demo.py --onnx does.

Outputs: raw: "head_p3", "head_p4", "head_p5" (+ "head_p6" for P6 scales), each
(N, A, H/stride, W/stride, 5 + K) logits [x, y, w, h, objectness, classes]; decode them with
yolov7_d2.modeling.meta_arch.decode_predictions (anchors and strides are in the ONNX metadata,
key "yolov7_d2"). --end2end: "boxes" (N, max_det, 4) xyxy in input pixels, "scores"
(N, max_det), "classes" (N, max_det) int64 and "num_detections" (N,) int64; rows past
num_detections are padding (boxes 0, scores 0, classes -1).

The checkpoint may be a training checkpoint (its EMA weights are used when present) or a
deploy checkpoint of tools/reparameterize.py (detected). Exported with the TorchScript-based
torch.onnx exporter (dynamo=False); opset 17 by default (see --opset).
"""
import argparse
import logging
import os
import sys

import torch

import yolov7_d2  # noqa: F401  (applies the detectron2 compat shims, registers the model)
from yolov7_d2.checkpoint import CheckpointError
from yolov7_d2.config import load_config
from yolov7_d2.config_checks import ConfigError
from yolov7_d2.export.deploy import build_deploy_model, count_parameters

logger = logging.getLogger("yolov7_d2.export")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="export_onnx.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE",
                        help="the yolov7_d2 config of the model")
    parser.add_argument("--weights", default=None, metavar="FILE",
                        help="checkpoint to export (default: MODEL.WEIGHTS of the config; "
                             "none at all exports random weights, with a warning)")
    parser.add_argument("--output", required=True, metavar="FILE",
                        help="the .onnx file to write (atomically)")
    parser.add_argument("--size", type=int, nargs="+", default=None, metavar="PX",
                        help="input size: one number (square) or HEIGHT WIDTH, multiples of the "
                             "model stride (32, or 64 for P6 scales); default: the config's "
                             "INPUT.MAX_SIZE_TEST, square (640 / 1280)")
    parser.add_argument("--batch", type=int, default=1, metavar="N",
                        help="batch size of a static export (default: %(default)s)")
    parser.add_argument("--dynamic-batch", action="store_true",
                        help="make the batch dimension of the input and of every output "
                             "dynamic (named 'batch'); height and width stay fixed")
    parser.add_argument("--end2end", action="store_true",
                        help="decode, threshold and NMS in the graph (ONNX NonMaxSuppression, "
                             "per class): outputs boxes, scores, classes, num_detections, "
                             "padded to --max-det; default: raw head maps")
    parser.add_argument("--conf-thres", type=float, default=0.25, metavar="T",
                        help="--end2end: keep detections with objectness and score "
                             "(objectness x class probability) above T (default: %(default)s, "
                             "as demo.py and the official detect.py)")
    parser.add_argument("--iou-thres", type=float, default=0.45, metavar="T",
                        help="--end2end: IoU threshold of the class-wise NMS "
                             "(default: %(default)s)")
    parser.add_argument("--max-det", type=int, default=100, metavar="N",
                        help="--end2end: detections per image, the outputs' second dimension "
                             "(default: %(default)s)")
    parser.add_argument("--multi-label", action="store_true",
                        help="--end2end: report a box once for every class above --conf-thres "
                             "(the evaluation's behaviour); default: its best class only")
    parser.add_argument("--opset", type=int, default=None, metavar="N",
                        help="ONNX opset, 11 or more (default: 17: the TorchScript exporter's "
                             "default, well supported by onnxruntime and TensorRT; every op "
                             "used exists from 11)")
    parser.add_argument("--no-ema", action="store_true",
                        help="export a training checkpoint's raw weights, not its EMA weights")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip running the exported file with onnxruntime against PyTorch")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                        help="config overrides as KEY VALUE pairs; must come last")
    return parser


def verify(model, path: str, metadata) -> None:
    """Run the file with onnxruntime on a grey-and-noise input and print how far it is from
    the PyTorch deploy model (raw: largest difference of the head maps; end-to-end: the
    detections)."""
    import numpy as np

    from yolov7_d2.export.onnx import INPUT_NAME, YOLOv7End2EndExport, YOLOv7RawExport
    from yolov7_d2.export.onnx_predictor import create_session

    batch = 2 if metadata["input"]["batch"] == "dynamic" else metadata["input"]["batch"]
    shape = (batch, 3, metadata["input"]["height"], metadata["input"]["width"])
    images = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 255
    outputs = create_session(path).run(None, {INPUT_NAME: images.numpy()})
    with torch.no_grad():
        if metadata["format"] == "raw":
            expected = YOLOv7RawExport(model).eval()(images)
            diff = max(float(np.abs(o - e.numpy()).max()) for o, e in zip(outputs, expected))
            print(f"verified with onnxruntime: raw head maps within {diff:.3g} of PyTorch")
            return
        wrapper = YOLOv7End2EndExport(model, metadata["conf_thresh"], metadata["iou_thresh"],
                                      metadata["max_det"], metadata["multi_label"]).eval()
        expected = [t.numpy() for t in wrapper(images)]
    same = (outputs[3] == expected[3]).all()
    print(f"verified with onnxruntime: {outputs[3].tolist()} detections "
          f"({'same as' if same else 'PyTorch finds'} {expected[3].tolist()}"
          f"{' in' if same else ''} PyTorch)")


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = get_parser().parse_args(argv)
    from yolov7_d2.export.onnx import OPSET, ONNXExportError, export_onnx

    try:
        cfg = load_config(args.config_file, list(args.opts) + ["MODEL.DEVICE", "cpu"])
    except ConfigError as e:  # names the file or key and the fix
        logger.error("%s", e)
        return 1
    weights = cfg.MODEL.WEIGHTS if args.weights is None else args.weights
    if not weights:
        logger.warning("No --weights and no MODEL.WEIGHTS: exporting random weights, whose "
                       "detections are meaningless.")
    elif not os.path.isfile(weights):
        logger.error("checkpoint %r does not exist", weights)
        return 1
    if args.size is None:
        size = (cfg.INPUT.MAX_SIZE_TEST,) * 2
    elif len(args.size) in (1, 2):
        size = tuple(args.size) * (3 - len(args.size))
    else:
        logger.error("--size takes one or two numbers, got %s", args.size)
        return 1
    try:
        model = build_deploy_model(cfg, weights, prefer_ema=not args.no_ema)
    except CheckpointError as e:
        logger.error("%s", e)
        return 1
    from yolov7_d2.predictor import class_names_metadata

    names = class_names_metadata(cfg).get("thing_classes", None)
    try:
        metadata = export_onnx(
            model, args.output, image_size=size, batch_size=args.batch,
            dynamic_batch=args.dynamic_batch, end2end=args.end2end,
            conf_thresh=args.conf_thres, iou_thresh=args.iou_thres, max_det=args.max_det,
            multi_label=args.multi_label, opset=args.opset or OPSET,
            input_format=cfg.INPUT.FORMAT,
            extra_metadata={"arch": cfg.MODEL.YOLOV7.ARCH, "class_names": names})
    except ONNXExportError as e:
        logger.error("export failed: %s", e)
        return 1
    print(f"wrote {args.output}: {cfg.MODEL.YOLOV7.ARCH}, {count_parameters(model):,d} "
          f"parameters (deploy), input {describe_input(metadata)}, outputs "
          f"{', '.join(metadata['outputs'])}, opset {metadata['opset']}")
    if not args.no_verify:
        verify(model, args.output, metadata)
    return 0


def describe_input(metadata) -> str:
    spec = metadata["input"]
    return (f"'{spec['name']}' ({spec['batch']}, 3, {spec['height']}, {spec['width']}) "
            f"{spec['channels']} 0-255")


if __name__ == "__main__":
    sys.exit(main())
