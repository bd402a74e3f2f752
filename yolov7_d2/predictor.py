"""Single-image inference for demos: :class:`YOLOv7Predictor`, the YOLOv7 counterpart of
detectron2's ``DefaultPredictor``, and :func:`class_names_metadata` for visualization."""
import logging
import os
from typing import Dict, List, Optional, Union

import numpy as np
import torch

# The package's __init__ (always imported first) has applied yolov7_d2.compat.
import detectron2.data.transforms as T
from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.modeling import build_model

from .checkpoint import YOLOv7Checkpointer
from .data.augment import channels_first
from .data.image_io import read_image
from .data.test_mapper import fitted_resize
from .export.deploy import checkpoint_is_reparameterized
from .modeling.reparam import inference_form

__all__ = ["YOLOv7Predictor", "class_names_metadata", "as_bgr_image", "compile_for_inference"]

logger = logging.getLogger(__name__)

RANDOM_WEIGHTS_WARNING = (
    "MODEL.WEIGHTS is empty: the model keeps its random initialization and its detections are "
    "meaningless. Pass a checkpoint with --opts MODEL.WEIGHTS path/to/model.pth (convert "
    "official YOLOv7 .pt files first with tools/convert_official_weights.py)."
)


def class_names_metadata(cfg) -> Metadata:
    """Metadata with ``thing_classes`` for drawing and printing detections: that of
    ``cfg.DATASETS.TEST[0]`` when it is registered with one name per class of
    ``cfg.MODEL.YOLOV7.NUM_CLASSES`` (e.g. detectron2's builtin ``coco_2017_val``), else
    names "class 0", "class 1", ..."""
    num_classes = cfg.MODEL.YOLOV7.NUM_CLASSES
    if len(cfg.DATASETS.TEST) and cfg.DATASETS.TEST[0] in MetadataCatalog.list():
        name = cfg.DATASETS.TEST[0]
        metadata = MetadataCatalog.get(name)
        classes = metadata.get("thing_classes", None)
        if classes is not None and len(classes) == num_classes:
            return metadata
        logger.info(
            "Metadata of %r has %s class names but MODEL.YOLOV7.NUM_CLASSES is %d; "
            "naming classes 'class N'.", name, "no" if classes is None else len(classes),
            num_classes,
        )
    return Metadata(name="__yolov7_d2_unnamed__",
                    thing_classes=[f"class {i}" for i in range(num_classes)])


def as_bgr_image(image: np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 BGR image from the arrays OpenCV reads: grayscale (H, W) or
    (H, W, 1) repeated over 3 channels, BGRA with its alpha dropped, 16-bit samples to 8 bits
    (the high byte, as :func:`~yolov7_d2.data.image_io.read_image`). ValueError naming the
    shape or dtype of anything else, an empty image included (TypeError: not an array)."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected an image file name or a numpy array, got "
                        f"{type(image).__name__}")
    if image.size == 0:
        raise ValueError(f"the image is empty (shape {image.shape}): nothing to detect")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W, 3) BGR image (or (H, W) grayscale, (H, W, 4) "
                         f"BGRA), got shape {image.shape}")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"expected uint8 (or uint16) pixel values, got {image.dtype}; convert "
                         "0..255 values with image.astype(np.uint8)")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image[:, :, :3]


def compile_for_inference(model: torch.nn.Module) -> None:
    """``torch.compile`` the backbone and head of ``model`` (a YOLOv7 in its inference form)
    in place, its weights frozen into the graph (inductor's ``freezing``: on the CPU each
    convolution's weight is packed once and LeakyReLU runs inside the convolution), for a
    model whose weights no longer change, as the predictor's. Outputs equal the eager ones.

    Each new input size compiles first (``dynamic=False``: a graph per size; 25-55 s for
    yolov7-tiny or yolov7 on 2 cores). Then a 640x480 photo end to end took 0.86-0.99x the
    eager time with yolov7-tiny and 0.93-0.98x with yolov7 in float32 on AVX2, 0.89-0.93x
    and 0.93-0.94x in bfloat16 on AVX512 (2 cores; README, "Speed against the official
    code"). RuntimeError naming the fix where the CPU has no C++ compiler.
    """
    if model.device.type == "cpu":
        from torch._inductor import cpp_builder, exc

        try:
            cpp_builder.get_cpp_compiler()
        except exc.InvalidCxxCompiler as e:
            raise RuntimeError(
                "TEST.YOLOV7.COMPILE needs a C++ compiler on the CPU (torch.compile builds "
                "its kernels with one) and none was found: install one (e.g. apt install "
                "g++, or set CXX) or set TEST.YOLOV7.COMPILE False") from e
    for module in (model.backbone, model.head):
        module.compile(dynamic=False, options={"freezing": True})
    logger.info("TEST.YOLOV7.COMPILE: the model compiles on its first input of each size "
                "(25-55 s on 2 cores; test-time flips and scales add sizes), then runs "
                "faster.")


class YOLOv7Predictor:
    """Builds the model of ``cfg``, loads ``cfg.MODEL.WEIGHTS`` with
    :class:`~yolov7_d2.checkpoint.YOLOv7Checkpointer` (so that a wrong checkpoint raises
    :class:`~yolov7_d2.checkpoint.CheckpointError` instead of a warning) and runs one BGR image
    at a time (or an image file, read as in training and evaluation: 16-bit and grayscale
    images to 8-bit BGR, EXIF orientation applied), like detectron2's ``DefaultPredictor``:
    resize with ``ResizeShortestEdge([INPUT.MIN_SIZE_TEST] * 2, INPUT.MAX_SIZE_TEST)`` (the
    long side to 640 for the YOLO configs, aspect kept), convert to ``INPUT.FORMAT``, and return
    ``{"instances": Instances}`` at the original resolution, on the CPU.

    Attributes:
        cfg: a clone of the config; model: the model in eval mode, in its deploy form
        (re-parameterized, channels_last; compiled with ``TEST.YOLOV7.COMPILE``, see
        :func:`compile_for_inference`); metadata: see
        :func:`class_names_metadata`; random_weights: True when MODEL.WEIGHTS was empty.

    Arrays other than (H, W, 3) uint8 BGR are converted by :func:`as_bgr_image` (grayscale,
    BGRA, 16-bit) or refused with a ValueError naming their shape (empty images included).
    Any image size is accepted: a very long one (10000 x 10) keeps at least one pixel on each
    side after the resize.

    Example::

        predictor = YOLOv7Predictor(cfg)
        instances = predictor("input.jpg")["instances"]  # or predictor(bgr_array)
    """

    def __init__(self, cfg):
        self.cfg = cfg.clone()  # cfg can be modified by model
        weights = self.cfg.MODEL.WEIGHTS
        if weights and os.path.isfile(weights) and checkpoint_is_reparameterized(weights):
            # A deploy checkpoint of tools/reparameterize.py needs the fused structure.
            self.cfg.defrost()
            self.cfg.MODEL.YOLOV7.REPARAMETERIZED = True
        self.model = build_model(self.cfg)
        self.model.eval()
        self.metadata = class_names_metadata(self.cfg)
        self.random_weights = not self.cfg.MODEL.WEIGHTS
        if self.random_weights:
            logger.warning(RANDOM_WEIGHTS_WARNING)
        else:
            # Training checkpoints carry EMA weights: those are the final model (official).
            YOLOv7Checkpointer(self.model, prefer_ema=True).load(weights)
        inference_form(self.model)
        if self.cfg.TEST.YOLOV7.COMPILE:
            compile_for_inference(self.model)
        self.aug = T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )
        self.input_format = cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be 'RGB' or 'BGR', got {self.input_format!r}")

    def resize(self, image: np.ndarray) -> np.ndarray:
        """``self.aug`` applied to ``image`` as a
        :class:`~yolov7_d2.data.test_mapper.FittedResize`: at least one pixel on each side
        (it would make a 10000 x 10 image 640 x 0), no copy of an image at its size."""
        return fitted_resize(self.aug.get_transform(image)).apply_image(image)

    def preprocess(self, original_image: Union[np.ndarray, str, os.PathLike]) -> Dict:
        """The model input dict of one BGR image (see :func:`as_bgr_image`) or image file."""
        if isinstance(original_image, (str, os.PathLike)):
            original_image = read_image(original_image, format="BGR")
        original_image = as_bgr_image(original_image)
        height, width = original_image.shape[:2]
        # uint8 (C, H, W) in INPUT.FORMAT, as the training mapper gives: the model normalizes.
        image = channels_first(self.resize(original_image), reverse=self.input_format == "RGB")
        return {"image": torch.from_numpy(image), "height": height, "width": width}

    @torch.inference_mode()
    def __call__(self, original_image: Union[np.ndarray, str, os.PathLike]) -> Dict:
        """
        Args:
            original_image: an (H, W, 3) uint8 image in BGR order (as cv2.imread gives; or
                grayscale, BGRA, 16-bit: :func:`as_bgr_image`), or the path of an image file
                (:class:`~yolov7_d2.data.ImageLoadError` if it cannot be read).
        Returns:
            {"instances": Instances(pred_boxes, scores, pred_classes)} in original-image pixels,
            on the CPU, highest score first.
        """
        return self.predict_batch([original_image])[0]

    @torch.inference_mode()
    def predict_batch(self, images: List[Union[np.ndarray, str, os.PathLike]]) -> List[Dict]:
        """:meth:`__call__` for several BGR images (or files) in one forward pass."""
        outputs = self.model([self.preprocess(image) for image in images])
        return [{"instances": out["instances"].to("cpu")} for out in outputs]

    @property
    def class_names(self) -> Optional[List[str]]:
        return self.metadata.get("thing_classes", None)
