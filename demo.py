#!/usr/bin/env python
"""YOLOv7 detection demo on images or a video, in the style of detectron2's demo/demo.py.

    python demo.py --config-file configs/coco/yolov7-tiny.yaml --input photos/ \
        --output out/ --opts MODEL.WEIGHTS yolov7-tiny.pth

Prints the detections of every image (class, score, box) with timings and, with --output,
writes the images (or the video) with the detections drawn by detectron2's Visualizer.
"""
import argparse
import glob
import logging
import os
import sys
import time
from typing import List, Optional, Sequence, Tuple

import numpy as np

# Applies yolov7_d2.compat (before detectron2's submodules are imported) and registers YOLOv7.
import yolov7_d2
from yolov7_d2.checkpoint import CheckpointError
from yolov7_d2.config_checks import ConfigError
from yolov7_d2.data import register_deepforest, register_labelme_examples

logger = logging.getLogger("yolov7_d2.demo")

#: Files a folder or a glob pattern contributes; anything else there is ignored.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v")

DESCRIPTION = __doc__.split("\n\n")[0] + """

Inputs: --input takes image files, folders (their image files, not recursive) and quoted glob
patterns ("photos/*.jpg"). A missing path stops the demo before the model is built, with an
error naming it (exit status 1); so does no image at all. An image that cannot be read is
skipped with a warning naming it: every other image is processed, then the demo lists the
images that failed and exits with status 1. Grayscale, 16-bit and RGBA images are read as
8-bit BGR (alpha dropped); any image size works (1 x 1, 10000 x 10).

Without MODEL.WEIGHTS the model keeps its random initialization: it runs, but its detections
are meaningless (a warning says so).
"""


class DemoError(Exception):
    """A user error; main() prints it and returns 1."""


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="demo.py", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config-file", default="configs/coco/yolov7-tiny.yaml", metavar="FILE",
        help="YOLOv7 config file; a relative path not found from the current directory is "
             "looked up next to demo.py (default: %(default)s).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input", nargs="+", metavar="PATH",
        help="image files, folders of images and/or quoted glob patterns such as "
             "'photos/*.jpg'.",
    )
    source.add_argument(
        "--video-input", metavar="FILE",
        help="a video file (read with cv2.VideoCapture); every frame is detected. For a long "
             "video, --opts TEST.YOLOV7.COMPILE True compiles the model (torch.compile) once "
             "for its frame size: 25-55 s first, then each frame 0.86-0.99x the time.",
    )
    parser.add_argument(
        "--output", metavar="PATH",
        help="where to write the visualizations. Images: a folder (created if needed; one "
             "file per input with the input's name) or, for a single input image, a file path "
             "ending in an image extension. Video: a folder (the output is NAME.mp4) or a "
             "file path ending in a video extension; written with the mp4v codec. Without "
             "it, detections are only printed.",
    )
    parser.add_argument(
        "--confidence-threshold", type=float, default=0.25, metavar="T",
        help="minimum score (objectness x class probability) of a detection; overrides "
             "MODEL.YOLOV7.CONF_THRESH_TEST (default: %(default)s, as the official detect.py).",
    )
    parser.add_argument(
        "--nms-threshold", type=float, default=0.45, metavar="T",
        help="IoU threshold of the class-wise NMS; overrides MODEL.YOLOV7.NMS_THRESH_TEST "
             "(default: %(default)s, as the official detect.py).",
    )
    parser.add_argument(
        "--onnx", metavar="FILE",
        help="run an ONNX model written by tools/export_onnx.py with onnxruntime instead of "
             "the PyTorch model (MODEL.WEIGHTS is then not used; the config still gives the "
             "class names and NUM_CLASSES, which must match). Each image is resized to fit "
             "the ONNX input (aspect kept) and padded with grey 114. A raw export is decoded "
             "and NMS'd with the thresholds below; an --end2end export uses the NMS it was "
             "exported with (a higher --confidence-threshold is applied on top).",
    )
    parser.add_argument(
        "--opts", default=[], nargs=argparse.REMAINDER, metavar="KEY VALUE",
        help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS model.pth "
             "MODEL.DEVICE cpu. MODEL.DEVICE defaults to cuda; when CUDA is not available and "
             "MODEL.DEVICE is not given here, the demo runs on the CPU (and logs so). The demo "
             "reports one class per box (MODEL.YOLOV7.MULTI_LABEL_TEST False, as detect.py) "
             "unless that key is given here. Must come last.",
    )
    return parser


def setup_cfg(args):
    """The frozen config: file, demo defaults, --opts, then the threshold flags."""
    import torch

    if not os.path.isfile(args.config_file):
        # a relative path such as the default may be meant from the repository root
        beside = os.path.join(os.path.dirname(os.path.abspath(__file__)), args.config_file)
        if os.path.isabs(args.config_file) or not os.path.isfile(beside):
            raise DemoError(f"config file {args.config_file!r} does not exist")
        args.config_file = beside
    if len(args.opts) % 2:
        raise DemoError(f"--opts needs KEY VALUE pairs, got an odd number of items: {args.opts}")
    for flag in ("confidence_threshold", "nms_threshold"):
        value = getattr(args, flag)
        if not 0.0 <= value <= 1.0:
            raise DemoError(f"--{flag.replace('_', '-')} must be in [0, 1], got {value}")
    try:
        # The official detect.py reports each box once, with its best class (--opts may differ).
        cfg = yolov7_d2.load_config(args.config_file,
                                    ["MODEL.YOLOV7.MULTI_LABEL_TEST", "False", *args.opts])
    except ConfigError as e:  # names the file or key and the fix
        raise DemoError(str(e)) from e
    cfg.MODEL.YOLOV7.CONF_THRESH_TEST = args.confidence_threshold
    cfg.MODEL.YOLOV7.NMS_THRESH_TEST = args.nms_threshold

    device_explicit = "MODEL.DEVICE" in args.opts[0::2]
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        if device_explicit:
            raise DemoError(f"MODEL.DEVICE is {cfg.MODEL.DEVICE!r} (from --opts) but CUDA is not "
                            "available on this machine; use --opts MODEL.DEVICE cpu")
        logger.info("CUDA is not available: running on the CPU (MODEL.DEVICE was %r; set it "
                    "with --opts MODEL.DEVICE to choose).", cfg.MODEL.DEVICE)
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def collect_images(inputs: Sequence[str]) -> List[str]:
    """Every image named by --input, in order and without repeats."""
    found, seen = [], set()

    def add(path):
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            found.append(path)

    for item in inputs:
        path = os.path.expanduser(item)
        if os.path.isdir(path):
            names = sorted(os.listdir(path))
            files = [os.path.join(path, n) for n in names
                     if n.lower().endswith(IMAGE_EXTENSIONS)
                     and os.path.isfile(os.path.join(path, n))]
            if not files:
                logger.warning("Folder %r holds no image file (%s).", item,
                               " ".join(IMAGE_EXTENSIONS))
            for f in files:
                add(f)
        elif glob.has_magic(path):
            matches = sorted(p for p in glob.glob(path) if os.path.isfile(p)
                             and p.lower().endswith(IMAGE_EXTENSIONS))
            if not matches:
                logger.warning("Pattern %r matches no image file.", item)
            for f in matches:
                add(f)
        elif os.path.isfile(path):
            add(path)
        else:
            raise DemoError(f"input {item!r} does not exist")
    if not found:
        raise DemoError(f"no image found in --input {' '.join(inputs)} (image files: "
                        f"{' '.join(IMAGE_EXTENSIONS)})")
    return found


def read_bgr(path: str) -> np.ndarray:
    """An (H, W, 3) uint8 BGR image, read as in training and evaluation (EXIF orientation
    applied, 16-bit and grayscale images to 8-bit, 3 channels); DemoError naming the file."""
    from yolov7_d2.data.image_io import ImageLoadError, read_image

    try:
        return read_image(path, format="BGR")
    except ImageLoadError as e:  # missing, truncated, not an image, ...
        raise DemoError(str(e)) from e


def output_paths(images: List[str], output: str) -> List[str]:
    """One output file per image: inside the folder ``output``, or ``output`` itself for a
    single image when it ends in an image extension."""
    if len(images) == 1 and output.lower().endswith(IMAGE_EXTENSIONS) \
            and not os.path.isdir(output):
        parent = os.path.dirname(os.path.abspath(output))
        os.makedirs(parent, exist_ok=True)
        paths = [output]
    else:
        if os.path.isfile(output):
            raise DemoError(f"--output {output!r} is a file; {len(images)} images need a folder")
        os.makedirs(output, exist_ok=True)
        paths, used = [], set()
        for image in images:
            stem, ext = os.path.splitext(os.path.basename(image))
            ext = ext if ext.lower() in IMAGE_EXTENSIONS else ".png"
            name, n = stem + ext, 1
            while name in used:  # same name from different folders
                name, n = f"{stem}_{n}{ext}", n + 1
            used.add(name)
            paths.append(os.path.join(output, name))
    for image, out in zip(images, paths):
        if os.path.realpath(image) == os.path.realpath(out):
            raise DemoError(f"--output would overwrite the input {image!r}")
    return paths


def format_detections(instances, class_names: Optional[List[str]]) -> List[str]:
    """One line per detection: '  NAME  SCORE  [x0, y0, x1, y1]' (pixels of the input)."""
    lines = []
    boxes = instances.pred_boxes.tensor.tolist()
    for box, score, cls in zip(boxes, instances.scores.tolist(), instances.pred_classes.tolist()):
        name = class_names[cls] if class_names and cls < len(class_names) else f"class {cls}"
        lines.append(f"  {name}  {score:.4g}  [{', '.join(f'{v:.1f}' for v in box)}]")
    return lines


def detect(predictor, path: str) -> Tuple[np.ndarray, object, float]:
    """(BGR image, Instances, seconds in the model) of the image file ``path``; DemoError
    naming it when it cannot be read or the predictor refuses it."""
    image = read_bgr(path)
    t = time.perf_counter()
    try:
        instances = predictor(image)["instances"]
    except ValueError as e:  # e.g. an image shape the model cannot take
        raise DemoError(f"cannot detect objects in {path!r}: {e}") from e
    return image, instances, time.perf_counter() - t


def run_on_images(predictor, images: List[str], outputs: List[Optional[str]]) -> List[str]:
    """Detects, prints and (where ``outputs`` has a path) draws each of ``images``; an image
    that fails is skipped with a warning. Returns the failures, one line each."""
    import cv2

    from detectron2.utils.visualizer import Visualizer

    done, failed, model_time, start = 0, [], 0.0, time.perf_counter()
    for path, out_path in zip(images, outputs):
        try:
            image, instances, seconds = detect(predictor, path)
        except DemoError as e:
            logger.warning("%s; skipping it.", e)
            failed.append(str(e))
            continue
        model_time += seconds
        height, width = image.shape[:2]
        print(f"{path} ({width}x{height}): {len(instances)} detections in {seconds:.3f}s")
        for line in format_detections(instances, predictor.class_names):
            print(line)
        if out_path:
            visualizer = Visualizer(image[:, :, ::-1], predictor.metadata)
            drawn = visualizer.draw_instance_predictions(instances).get_image()[:, :, ::-1]
            if not cv2.imwrite(out_path, np.ascontiguousarray(drawn)):
                raise DemoError(f"cannot write {out_path!r}")
            print(f"  -> {out_path}")
        done += 1
    if done:
        total = time.perf_counter() - start
        print(f"{done} image{'s' * (done != 1)} in {total:.2f}s (model {model_time:.2f}s, "
              f"{1000 * model_time / done:.1f} ms/image)"
              + (f"; {len(failed)} failed (listed on stderr)" if failed else ""))
    return failed


def video_output_path(video: str, output: Optional[str]) -> Optional[str]:
    """``output`` itself when it ends in a video extension, else ``output``/NAME.mp4."""
    if not output:
        return None
    if output.lower().endswith(VIDEO_EXTENSIONS) and not os.path.isdir(output):
        out_path = output
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    else:
        if os.path.isfile(output):
            raise DemoError(f"--output {output!r} is a file without a video extension "
                            f"({' '.join(VIDEO_EXTENSIONS)})")
        os.makedirs(output, exist_ok=True)
        out_path = os.path.join(output, os.path.splitext(os.path.basename(video))[0] + ".mp4")
    if os.path.realpath(out_path) == os.path.realpath(video):
        raise DemoError(f"--output would overwrite the input {video!r}")
    return out_path


def open_video(video: str):
    """A cv2.VideoCapture of ``video``; DemoError naming it when missing or unreadable."""
    import cv2

    if not os.path.isfile(video):
        raise DemoError(f"video {video!r} does not exist")
    capture = cv2.VideoCapture(video)
    if not capture.isOpened():
        raise DemoError(f"cannot open video {video!r}")
    return capture


def run_on_video(predictor, video: str, capture, out_path: Optional[str]) -> None:
    """Detects every frame of ``capture`` (opened from ``video``), prints per-frame counts
    and, with ``out_path``, writes the annotated frames as an mp4v video."""
    import cv2

    from detectron2.utils.video_visualizer import VideoVisualizer

    writer = None
    try:
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        fps = capture.get(cv2.CAP_PROP_FPS)
        fps = fps if fps and fps == fps and fps > 0 else 30.0  # NaN or 0: unknown
        visualizer = VideoVisualizer(predictor.metadata)
        frames, model_time, start = 0, 0.0, time.perf_counter()
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            t = time.perf_counter()
            instances = predictor(frame)["instances"]
            seconds = time.perf_counter() - t
            model_time += seconds
            frames += 1
            print(f"frame {frames}{f'/{total}' if total else ''}: {len(instances)} detections "
                  f"in {seconds:.3f}s")
            if out_path:
                if writer is None:
                    height, width = frame.shape[:2]
                    writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                             (width, height))
                    if not writer.isOpened():
                        raise DemoError(f"cannot write video {out_path!r} (mp4v codec)")
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                drawn = visualizer.draw_instance_predictions(rgb, instances).get_image()
                writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        if not frames:
            raise DemoError(f"cannot read any frame of video {video!r}")
        elapsed = time.perf_counter() - start
        print(f"{frames} frames in {elapsed:.2f}s (model {model_time:.2f}s, "
              f"{1000 * model_time / frames:.1f} ms/frame)"
              + (f" -> {out_path}" if out_path else ""))
    finally:
        if writer is not None:
            writer.release()


def onnx_predictor(path: str, cfg):
    """A yolov7_d2.export.onnx_predictor.ONNXPredictor (same interface as YOLOv7Predictor);
    DemoError when onnxruntime is missing or the file cannot be used."""
    try:
        import onnxruntime  # noqa: F401

        from yolov7_d2.export.onnx import ONNXExportError
        from yolov7_d2.export.onnx_predictor import ONNXPredictor
    except ImportError as e:
        raise DemoError(f"--onnx needs onnx and onnxruntime ({e}); install them with the "
                        "'onnx' extra: pip install -e '.[onnx]'") from e
    try:
        return ONNXPredictor(path, cfg)
    except ONNXExportError as e:
        raise DemoError(str(e)) from e


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the demo; returns the exit status (0 ok, 1 error). argparse errors exit with 2."""
    args = get_parser().parse_args(argv)
    capture = None
    # Class names of the built-in datasets (registration is lazy: nothing is fetched here).
    register_deepforest()
    register_labelme_examples()
    try:
        cfg = setup_cfg(args)
        # Input errors before the model is built.
        if args.video_input:
            capture = open_video(args.video_input)
            out_video = video_output_path(args.video_input, args.output)
        else:
            images = collect_images(args.input)
            outputs = (output_paths(images, args.output) if args.output
                       else [None] * len(images))
        t = time.perf_counter()
        if args.onnx:
            predictor = onnx_predictor(args.onnx, cfg)
            logger.info("ONNX model %s (%s outputs) ready in onnxruntime in %.2fs", args.onnx,
                        predictor.info["format"], time.perf_counter() - t)
        else:
            from yolov7_d2.predictor import YOLOv7Predictor

            predictor = YOLOv7Predictor(cfg)
            logger.info("Model %s on %s ready in %.2fs (weights: %s)", cfg.MODEL.YOLOV7.ARCH,
                        cfg.MODEL.DEVICE, time.perf_counter() - t, cfg.MODEL.WEIGHTS or "random")
        if capture is not None:
            run_on_video(predictor, args.video_input, capture, out_video)
        else:
            failed = run_on_images(predictor, images, outputs)
            if failed:
                raise DemoError(f"{len(failed)} of {len(images)} images failed:\n  "
                                + "\n  ".join(failed))
    except (DemoError, CheckpointError) as e:
        print(f"demo.py: error: {e}", file=sys.stderr)
        return 1
    finally:
        if capture is not None:
            capture.release()
    return 0


if __name__ == "__main__":
    from detectron2.utils.logger import setup_logger

    setup_logger(name="fvcore")
    setup_logger()
    setup_logger(name="yolov7_d2", abbrev_name="yolov7")
    sys.exit(main())
