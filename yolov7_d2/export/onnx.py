"""ONNX export of the deploy (re-parameterized) YOLOv7; runs with the onnxruntime predictor of
:mod:`.onnx_predictor`.

Graph contract
--------------
Input ``images``: float32 (N, 3, H, W), channels in ``INPUT.FORMAT`` order (RGB for the shipped
configs), pixel values 0..255 as detectron2 models take them; the graph normalizes with the
config's ``PIXEL_MEAN`` / ``PIXEL_STD`` (divides by 255 for the YOLO configs). This differs
from the official export (0..1 input) on purpose: the config, not the caller, owns the
normalization (a timm backbone config may use ImageNet mean / std). Pad a resized image with
grey 114 to H x W (bottom / right), as :func:`~.onnx_predictor.fit_top_left` does.

Outputs, raw (default): one map per level, ``head_p3``, ``head_p4``, ... (N, A, H_l, W_l, 5 + K),
the raw logits of :meth:`YOLOv7.forward_raw` (decode with
:func:`yolov7_d2.modeling.box_coder.decode_predictions`; anchors and strides are in the metadata).

Outputs, end-to-end (``end2end=True``): decoding, thresholds and class-wise NMS in the graph,
with the standard ``NonMaxSuppression`` op (per-class NMS over its class dimension; runs in
onnxruntime, no TensorRT plugin), padded to ``max_det``:

* ``boxes`` (N, max_det, 4) float32, xyxy in input pixels (the H x W canvas, not clipped);
* ``scores`` (N, max_det) float32, objectness x class probability, highest first;
* ``classes`` (N, max_det) int64;
* ``num_detections`` (N,) int64: rows past it are padding (boxes 0, scores 0, classes -1).

The thresholds follow :func:`~yolov7_d2.modeling.meta_arch.postprocess_single_image`:
candidates need objectness > conf and score > conf; one label per box (best class) unless
``multi_label``; at most ``max_det`` per image. Only its ``max_nms_candidates`` cap (30000
highest scores before NMS) is not in the graph.

The model's settings are stored as JSON in the ONNX metadata (key ``yolov7_d2``):
:func:`read_metadata`.
"""
import copy
import io
import json
import os
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..data.augment import PAD_VALUE
from ..modeling import reparameterize
from ..modeling.box_coder import decode_predictions
from ..modeling.box_ops import cxcywh_to_xyxy
from ..utils.io import atomic_write
from ..utils.optional import import_optional

__all__ = [
    "OPSET", "MIN_OPSET", "INPUT_NAME", "END2END_OUTPUTS", "METADATA_KEY", "ONNXExportError",
    "YOLOv7RawExport", "YOLOv7End2EndExport", "export_onnx", "read_metadata",
]

#: Default opset. Every op of the graphs exists from opset 11 (NonMaxSuppression-11, TopK-11
#: with k as an input, ScatterElements-11, Range-11), the lowest accepted; 17 is the
#: TorchScript exporter's own default, the most exercised path in onnxruntime (>= 1.12),
#: TensorRT (>= 8.5) and OpenVINO, and exports LayerNorm (timm backbones) as one op.
OPSET = 17
MIN_OPSET = 11
INPUT_NAME = "images"
END2END_OUTPUTS = ("boxes", "scores", "classes", "num_detections")
METADATA_KEY = "yolov7_d2"


class ONNXExportError(ValueError):
    """Invalid export settings or ONNX file; the message says which."""


class YOLOv7RawExport(nn.Module):
    """images (N, 3, H, W), 0..255 -> the lead head's raw maps, one per level."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.register_buffer("pixel_mean", model.pixel_mean.detach().clone().view(1, -1, 1, 1))
        self.register_buffer("pixel_std", model.pixel_std.detach().clone().view(1, -1, 1, 1))

    def raw_maps(self, images: Tensor) -> List[Tensor]:
        return self.model.forward_raw((images - self.pixel_mean) / self.pixel_std)["lead"]

    def forward(self, images: Tensor) -> Tuple[Tensor, ...]:
        return tuple(self.raw_maps(images))


class _BatchedNMS(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (opset >= 10): per batch item and class, greedy NMS of
    boxes (N, R, 4) xyxy with scores (N, C, R); keeps IoU <= iou_threshold and
    score > score_threshold, at most ``max_per_class`` per class. Returns (S, 3) int64 rows
    [batch, class, box]. The eager forward (used while tracing and to run the wrapper in
    PyTorch) computes the same with torchvision's NMS."""

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, max_per_class: int, iou_threshold: float,
                score_threshold: float) -> Tensor:
        from torchvision.ops import nms

        rows = []
        for b in range(scores.shape[0]):
            for c in range(scores.shape[1]):
                index = (scores[b, c] > score_threshold).nonzero().flatten()
                keep = index[nms(boxes[b, index], scores[b, c, index], iou_threshold)]
                keep = keep[:max_per_class]
                rows.append(torch.stack([torch.full_like(keep, b), torch.full_like(keep, c),
                                         keep], dim=1))
        if not rows:
            return torch.zeros((0, 3), dtype=torch.int64, device=boxes.device)
        return torch.cat(rows)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class, iou_threshold, score_threshold):
        def const(value, dtype):
            return g.op("Constant", value_t=torch.tensor([value], dtype=dtype))

        return g.op("NonMaxSuppression", boxes, scores, const(max_per_class, torch.int64),
                    const(iou_threshold, torch.float32), const(score_threshold, torch.float32),
                    center_point_box_i=0)


class YOLOv7End2EndExport(YOLOv7RawExport):
    """images (N, 3, H, W), 0..255 -> (boxes, scores, classes, num_detections), see the
    module documentation. Runs in PyTorch too (its NMS is then torchvision's)."""

    def __init__(self, model: nn.Module, conf_thresh: float = 0.25, iou_thresh: float = 0.45,
                 max_det: int = 100, multi_label: bool = False):
        super().__init__(model)
        if not 0.0 <= conf_thresh < 1.0:
            raise ONNXExportError(f"the score threshold must be in [0, 1), got {conf_thresh}")
        if not 0.0 <= iou_thresh <= 1.0:
            raise ONNXExportError(f"the IoU threshold must be in [0, 1], got {iou_thresh}")
        if max_det < 1:
            raise ONNXExportError(f"max_det must be at least 1, got {max_det}")
        self.conf_thresh, self.iou_thresh = float(conf_thresh), float(iou_thresh)
        self.max_det, self.multi_label = int(max_det), bool(multi_label)

    def forward(self, images: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        decoded = decode_predictions(self.raw_maps(images), self.model.anchors,
                                     self.model.strides)  # (N, R, 5 + K)
        num_classes = decoded.shape[2] - 5
        boxes = cxcywh_to_xyxy(decoded[..., :4])  # (N, R, 4)
        objectness = decoded[..., 4:5]
        # With one class the score is the objectness alone, as in postprocess_single_image.
        probs = objectness if num_classes == 1 else decoded[..., 5:] * objectness
        probs = torch.where(objectness > self.conf_thresh, probs, torch.zeros_like(probs))
        if not self.multi_label and num_classes > 1:  # only each box's best class competes
            best, best_class = probs.max(dim=2, keepdim=True)
            probs = torch.zeros_like(probs).scatter(2, best_class, best)
        scores = probs.transpose(1, 2).contiguous()  # (N, K, R), as NonMaxSuppression takes
        selected = _BatchedNMS.apply(boxes, scores, self.max_det, self.iou_thresh,
                                     self.conf_thresh)
        n, k, r = scores.shape
        flat = scores.reshape(-1)
        index = (selected[:, 0] * k + selected[:, 1]) * r + selected[:, 2]
        kept = torch.zeros_like(flat).scatter(0, index, torch.ones_like(index, dtype=flat.dtype))
        dense = (flat * kept).reshape(n, k * r)  # scores of the NMS survivors, 0 elsewhere
        if k * r < self.max_det:  # fewer (box, class) pairs than outputs: pad
            dense = nn.functional.pad(dense, (0, self.max_det - k * r))
        top_scores, top_index = dense.topk(self.max_det, dim=1)  # sorted, highest first
        top_class = torch.div(top_index, r, rounding_mode="floor")
        top_box = top_index - top_class * r
        top_boxes = boxes.gather(1, top_box.unsqueeze(2).expand(-1, -1, 4))
        valid = top_scores > 0  # survivors have score > conf >= 0
        num_detections = valid.sum(dim=1)
        top_boxes = torch.where(valid.unsqueeze(2), top_boxes, torch.zeros_like(top_boxes))
        top_class = torch.where(valid, top_class, torch.full_like(top_class, -1))
        return top_boxes, top_scores, top_class, num_detections


def _check_image_size(model: nn.Module, image_size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    divisor = model.backbone.size_divisibility
    if height <= 0 or width <= 0 or height % divisor or width % divisor:
        raise ONNXExportError(f"the input size must be positive multiples of the model's stride "
                              f"{divisor}, got {height}x{width}")
    return int(height), int(width)


def export_onnx(model: nn.Module, path: str, *, image_size: Union[int, Sequence[int]] = 640,
                batch_size: int = 1, dynamic_batch: bool = False, end2end: bool = False,
                conf_thresh: float = 0.25, iou_thresh: float = 0.45, max_det: int = 100,
                multi_label: bool = False, opset: int = OPSET, input_format: str = "RGB",
                extra_metadata: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Export a YOLOv7 model to ONNX in its deploy form (the model itself is not modified: a
    re-parameterized copy is exported, on the CPU, with the TorchScript-based exporter,
    ``torch.onnx.export(dynamo=False)``).

    Args:
        model: a :class:`~yolov7_d2.modeling.YOLOv7` (training or re-parameterized form).
        path: the .onnx file, written atomically.
        image_size: input H x W (an int: square); multiples of the model's stride.
        batch_size: the batch of a static export (and of the tracing input).
        dynamic_batch: make the batch dimension of the input and outputs symbolic ("batch").
        end2end: NMS in the graph (see the module documentation); else raw head maps.
        conf_thresh, iou_thresh, max_det, multi_label: end-to-end postprocessing (defaults:
            the demo's, as the official detect.py).
        opset: ONNX opset, at least 11 (default :data:`OPSET`).
        input_format: channel order the graph expects (the config's INPUT.FORMAT); recorded.
        extra_metadata: more entries for the metadata JSON (e.g. class names).
    Returns:
        the metadata written into the file (see :func:`read_metadata`).
    """
    onnx = import_optional("onnx", "onnx", "ONNX export")
    if opset < MIN_OPSET:
        raise ONNXExportError(f"opset {opset} is too old: NonMaxSuppression and TopK with a "
                              f"dynamic k need opset >= {MIN_OPSET}")
    if batch_size < 1:
        raise ONNXExportError(f"batch_size must be at least 1, got {batch_size}")
    height, width = _check_image_size(model, image_size)
    deploy = reparameterize(copy.deepcopy(model).to("cpu").float())
    if end2end:
        wrapper = YOLOv7End2EndExport(deploy, conf_thresh, iou_thresh, max_det, multi_label)
        output_names = list(END2END_OUTPUTS)
    else:
        wrapper = YOLOv7RawExport(deploy)
        output_names = [f"head_{name}" for name in deploy.head_in_features]
    wrapper.eval()
    images = torch.full((batch_size, 3, height, width), PAD_VALUE)
    dynamic_axes = None
    if dynamic_batch:
        dynamic_axes = {name: {0: "batch"} for name in [INPUT_NAME] + output_names}

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The legacy exporter is deprecated in favour of dynamo=True, which needs onnxscript
        # and has no equivalent of an autograd.Function's ONNX symbolic (our NMS).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(wrapper, (images,), buffer, dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=output_names,
                          dynamic_axes=dynamic_axes, do_constant_folding=True)
    onnx_model = onnx.load_from_string(buffer.getvalue())
    metadata = {
        "format": "end2end" if end2end else "raw",
        "input": {"name": INPUT_NAME, "channels": input_format, "range": "0-255",
                  "pad_value": PAD_VALUE, "height": height, "width": width,
                  "batch": "dynamic" if dynamic_batch else batch_size},
        "outputs": output_names,
        "num_classes": int(deploy.num_classes),
        "strides": [int(s) for s in deploy.strides],
        "anchors": deploy.anchors.tolist(),
        "opset": opset,
    }
    if end2end:
        metadata.update(conf_thresh=float(conf_thresh), iou_thresh=float(iou_thresh),
                        max_det=int(max_det), multi_label=bool(multi_label))
    metadata.update(extra_metadata or {})
    entry = onnx_model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    onnx_model.producer_name = "yolov7_d2"
    onnx.checker.check_model(onnx_model)

    atomic_write(path, lambda tmp: onnx.save(onnx_model, tmp))
    return metadata


def read_metadata(path_or_session) -> Dict[str, Any]:
    """The yolov7_d2 metadata of an exported file (a path or an onnxruntime session)."""
    if isinstance(path_or_session, (str, os.PathLike)):
        onnx = import_optional("onnx", "onnx", "Reading an ONNX file's metadata")
        props = {p.key: p.value for p in onnx.load(os.fspath(path_or_session),
                                                   load_external_data=False).metadata_props}
    else:
        props = path_or_session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise ONNXExportError("this ONNX file was not written by yolov7_d2's export "
                              "(tools/export_onnx.py): it has no 'yolov7_d2' metadata")
    return json.loads(props[METADATA_KEY])
