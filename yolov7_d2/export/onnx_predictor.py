"""Running an exported ONNX file (:mod:`.onnx`) with onnxruntime: :class:`ONNXPredictor`,
:class:`~yolov7_d2.predictor.YOLOv7Predictor`'s interface (``demo.py --onnx``), its input
preprocessing :func:`fit_top_left`, and :func:`create_session`. Needs ``onnxruntime``
(extra ``onnx``, ``pip install -e '.[onnx]'``), imported only when a session is created."""
import logging
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from detectron2.modeling import detector_postprocess
from detectron2.structures import Boxes, Instances

from ..data.augment import PAD_VALUE
from ..data.test_mapper import FittedResize, ResizeLongSide
from ..modeling.box_coder import decode_predictions
from ..modeling.meta_arch import postprocess_single_image
from ..predictor import class_names_metadata
from ..utils.optional import import_optional
from .onnx import INPUT_NAME, ONNXExportError, read_metadata

__all__ = ["fit_top_left", "create_session", "ONNXPredictor"]

logger = logging.getLogger(__name__)


def fit_top_left(image: np.ndarray, height: int, width: int
                 ) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Resize an (h, w, 3) uint8 image to fit ``height`` x ``width`` (aspect kept; for a
    square canvas the evaluation mapper's :class:`~yolov7_d2.data.test_mapper.ResizeLongSide`, as
    the predictor's ``ResizeShortestEdge``) and pad it bottom / right with grey 114. Both
    sides keep at least 1 px. Returns the (3, height, width) float32 canvas and the resized
    (h', w')."""
    h, w = image.shape[:2]
    if height == width:
        resize = ResizeLongSide(height).get_transform(image)
    else:
        scale = min(height / h, width / w)
        resize = FittedResize(h, w, min(height, int(h * scale + 0.5)),
                              min(width, int(w * scale + 0.5)))
    new_h, new_w = resize.new_h, resize.new_w
    canvas = np.full((3, height, width), PAD_VALUE, dtype=np.float32)
    canvas[:, :new_h, :new_w] = resize.apply_image(image).transpose(2, 0, 1)
    return canvas, (new_h, new_w)


def create_session(path: str, num_threads: Optional[int] = None):
    """An onnxruntime CPU session. ``num_threads`` None: as many intra-op threads as torch
    uses (``torch.get_num_threads()``, so OMP_NUM_THREADS applies to both)."""
    ort = import_optional("onnxruntime", "onnx", "Running an ONNX file with onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


class ONNXPredictor:
    """:class:`~yolov7_d2.predictor.YOLOv7Predictor`'s interface on an exported ONNX file,
    run with onnxruntime: one BGR image in, ``{"instances": Instances}`` at its original size.

    The image is converted to the exported channel order, resized to fit the ONNX input
    (long side to its size for a square input, like the predictor) and padded with grey 114.
    End-to-end files: their detections are used (thresholds as exported; a higher
    ``CONF_THRESH_TEST`` or a lower ``TEST.DETECTIONS_PER_IMAGE`` in ``cfg`` is applied on
    top, which is exact). Raw files: decoded and NMS'd
    with :func:`~yolov7_d2.modeling.meta_arch.postprocess_single_image` and the thresholds of
    ``cfg`` (``MODEL.YOLOV7.CONF_THRESH_TEST``, ``MERGE_IOU_TEST`` etc.), as the PyTorch model
    would. One view of each image: test-time flips and scales (``TEST.YOLOV7.FLIPS``,
    ``SCALES``) are not run, and a warning says so where ``cfg`` asks for them.

    Args:
        path: the .onnx file of tools/export_onnx.py.
        cfg: a yolov7_d2 config: class names (``DATASETS.TEST``) and postprocessing.
        num_threads: see :func:`create_session`.
    """

    def __init__(self, path: str, cfg, num_threads: Optional[int] = None):
        if not os.path.isfile(path):
            raise ONNXExportError(f"ONNX file {path!r} does not exist")
        try:
            self.session = create_session(path, num_threads)
        except Exception as e:  # onnxruntime raises its own exception types
            raise ONNXExportError(f"cannot load ONNX file {path!r}: {type(e).__name__}: "
                                  f"{str(e)[:300]}") from e
        self.info = read_metadata(self.session)
        self.path, self.end2end = path, self.info["format"] == "end2end"
        yolo = cfg.MODEL.YOLOV7
        if yolo.NUM_CLASSES != self.info["num_classes"]:
            raise ONNXExportError(
                f"{path!r} predicts {self.info['num_classes']} classes but the config has "
                f"MODEL.YOLOV7.NUM_CLASSES {yolo.NUM_CLASSES}: use the config it was exported "
                "with")
        batch = self.info["input"]["batch"]
        if batch not in (1, "dynamic"):
            raise ONNXExportError(f"{path!r} was exported for batches of {batch}; export with "
                                  "--batch 1 or --dynamic-batch to run it on single images")
        self.height, self.width = self.info["input"]["height"], self.info["input"]["width"]
        self.input_format = self.info["input"]["channels"]
        self.conf_thresh, self.nms_thresh = yolo.CONF_THRESH_TEST, yolo.NMS_THRESH_TEST
        self.merge_iou = yolo.MERGE_IOU_TEST
        for key in ("FLIPS", "SCALES"):
            if cfg.TEST.YOLOV7.get(key):
                logger.warning("%s runs one view of each image: TEST.YOLOV7.%s %s (test-time "
                               "views) are not run by the onnxruntime predictor", path, key,
                               tuple(cfg.TEST.YOLOV7.get(key)))
        self.multi_label, self.max_detections = yolo.MULTI_LABEL_TEST, cfg.TEST.DETECTIONS_PER_IMAGE
        self.max_nms_candidates = yolo.MAX_NMS_CANDIDATES_TEST
        self.metadata = class_names_metadata(cfg)
        if self.end2end:
            exported = (self.info["conf_thresh"], self.info["iou_thresh"],
                        self.info["multi_label"])
            if self.conf_thresh < exported[0]:
                logger.warning("%s keeps scores above %g (set at export): a lower threshold "
                               "(%g) needs a new export", path, exported[0], self.conf_thresh)
            if self.max_detections > self.info["max_det"]:
                logger.info("%s reports at most %d detections per image (set at export; "
                            "TEST.DETECTIONS_PER_IMAGE is %d)", path, self.info["max_det"],
                            self.max_detections)
            if (self.nms_thresh, bool(self.multi_label)) != exported[1:]:
                logger.warning("%s runs the NMS exported with IoU %g and multi-label %s (asked: "
                               "%g, %s); re-export to change them", path, exported[1],
                               exported[2], self.nms_thresh, bool(self.multi_label))
            if self.merge_iou > 0:
                logger.warning("%s runs the NMS exported into it, which does not merge boxes "
                               "(MODEL.YOLOV7.MERGE_IOU_TEST %g is not applied); export without "
                               "--end2end to merge them", path, self.merge_iou)
        self.anchors = torch.tensor(self.info["anchors"], dtype=torch.float32)

    @property
    def class_names(self) -> Optional[List[str]]:
        return self.metadata.get("thing_classes", None)

    def preprocess(self, original_image: np.ndarray) -> Tuple[np.ndarray, Tuple[int, int]]:
        """(1, 3, H, W) float32 input and the resized image's (h', w') of one BGR image."""
        if original_image.ndim != 3 or original_image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) BGR image, got shape {original_image.shape}")
        image = original_image[:, :, ::-1] if self.input_format == "RGB" else original_image
        canvas, size = fit_top_left(np.ascontiguousarray(image), self.height, self.width)
        return canvas[None], size

    def __call__(self, original_image: np.ndarray) -> Dict:
        images, size = self.preprocess(original_image)
        outputs = self.session.run(None, {INPUT_NAME: images})
        if self.end2end:
            boxes, scores, classes, count = outputs
            n = int(count[0])
            n = min(n, self.max_detections)  # sorted: exact on top of the exported max_det
            keep = scores[0, :n] > self.conf_thresh  # exact on top of the exported threshold
            result = Instances(size)
            result.pred_boxes = Boxes(torch.from_numpy(boxes[0, :n][keep].copy()))
            result.scores = torch.from_numpy(scores[0, :n][keep].copy())
            result.pred_classes = torch.from_numpy(classes[0, :n][keep].copy())
        else:
            maps = [torch.from_numpy(m) for m in outputs]
            decoded = decode_predictions(maps, self.anchors, self.info["strides"])[0]
            result = postprocess_single_image(
                decoded, size, num_classes=self.info["num_classes"],
                conf_thresh=self.conf_thresh, nms_thresh=self.nms_thresh,
                merge_iou=self.merge_iou, max_detections=self.max_detections,
                max_nms_candidates=self.max_nms_candidates,
                multi_label=self.multi_label)
        height, width = original_image.shape[:2]
        return {"instances": detector_postprocess(result, height, width)}
