"""The YOLOv7 meta-architecture for detectron2."""
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import box_iou

from detectron2.config import configurable
from detectron2.layers import ShapeSpec, batched_nms
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.structures import Boxes, ImageList, Instances

from ..data.augment import PAD_VALUE
from ..data.eval_letterbox import boxes_to_resized_image
from ..utils.amp import inference_autocast_dtype
from .arch import get_arch
from .box_coder import decode_predictions
from .box_ops import cxcywh_to_xyxy
from .head import YOLOv7Head
from .layers.conv import convert_batch_norm
from .loss import YOLOv7Loss
from .reparam import reparameterize
from .test_time_views import check_scales, flip_views, view_predictions

__all__ = ["YOLOv7", "postprocess_single_image", "merged_boxes"]


@META_ARCH_REGISTRY.register()
class YOLOv7(DenseDetector):
    """YOLOv7 (Wang, Bochkovskiy, Liao 2022, "YOLOv7: Trainable bag-of-freebies sets new
    state-of-the-art for real-time object detectors") as a detectron2 ``DenseDetector``.

    Input: RGB images divided by 255, padded with grey to ``size_divisibility``. Output of
    inference: ``Instances(pred_boxes, scores, pred_classes)`` at each input's "height"/"width".
    ``DenseDetector.forward`` runs the backbone and the lead head, then
    :meth:`forward_training` (the loss, with the auxiliary head where there is one) or
    :meth:`forward_inference` (decode and NMS). :meth:`forward_raw` gives the raw head maps
    of a batch tensor (export, FLOPs).
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        head: YOLOv7Head,
        aux_head: Optional[YOLOv7Head] = None,
        head_in_features: List[str],
        anchors: List[List[float]],
        num_classes: int,
        pixel_mean,
        pixel_std,
        conf_thresh: float = 0.001,
        nms_thresh: float = 0.65,
        merge_iou: float = 0.0,
        max_detections: int = 300,
        max_nms_candidates: int = 30000,
        multi_label: bool = True,
        loss: nn.Module,
        reparameterized: bool = False,
        channels_last: bool = False,
        test_flips: Sequence[str] = (),
        test_scales: Sequence[float] = (),
        norm: str = "BN",
        inference_amp: bool = False,
    ):
        """
        Args:
            backbone: a detectron2 Backbone (normally the YOLOv7 PAN neck on an ELAN backbone).
            head: the lead head; aux_head: the auxiliary head (P6 training only) or None.
            head_in_features: backbone outputs for the lead head, stride 8 first; the auxiliary
                head reads "aux_" + each name.
            anchors: per level, flat [w1, h1, w2, h2, ...] in pixels.
            num_classes: K.
            conf_thresh: candidates need objectness and score (objectness x class probability)
                above it; nms_thresh: IoU of the class-wise NMS; max_detections: per image.
            merge_iou: above 0, each box NMS keeps becomes the score-weighted mean of the
                candidates of its class overlapping it by more than this IoU (see
                :func:`merged_boxes`); 0 (default): the kept boxes as they are.
            max_nms_candidates: highest-scoring candidates kept before NMS.
            multi_label: a box may be reported once for each class above ``conf_thresh``.
            reparameterized: build the fused deploy structure (see :func:`reparameterize`),
                to load checkpoints written by tools/reparameterize.py; eval mode only.
            channels_last: keep weights and activations in NHWC memory layout; same results,
                faster convolutions on CPU (oneDNN, about 20% per training step for tiny) and
                on tensor-core GPUs.
            norm: BatchNorm kind, one of :data:`~.layers.conv.NORMS` ("BN", "SyncBN",
                "naiveSyncBN"): every BatchNorm of the model is converted to it.
            test_flips: test-time flips ("lr", "ud", "transpose"; see
                :mod:`.test_time_views`): inference also runs every combination of them and
                merges the predictions of all views before NMS. () (default): one view.
            test_scales: test-time scales beyond 1 (official augmented inference: 0.83,
                0.67): inference also runs every flip view at each of them (the image
                resized, padded to the stride) and merges them likewise. (): none.
            loss: the training loss (a :class:`YOLOv7Loss`), called as ``loss(lead_maps,
                aux_maps_or_None, gt_boxes, gt_classes, anchors, strides)`` -> dict of losses.
            inference_amp: run inference under autocast where the device computes the
                reduced precision natively (:func:`~yolov7_d2.utils.amp.inference_autocast_dtype`:
                CUDA float16, bfloat16 on CPUs with AVX512-BF16 / AMX); decoding and NMS stay
                float32.
        """
        # The auxiliary head's features follow the lead head's in ``head_in_features``:
        # DenseDetector hands them all to forward_training, the lead head reads its own.
        names = list(head_in_features)
        if aux_head is not None:
            names += ["aux_" + f for f in head_in_features]
        super().__init__(backbone, head, names, pixel_mean=pixel_mean, pixel_std=pixel_std)
        self.num_levels = len(head_in_features)
        self.aux_head = aux_head
        self.num_classes = num_classes
        anchors_t = torch.tensor(anchors, dtype=torch.float32)
        if anchors_t.shape[0] != len(head_in_features) or anchors_t.shape[1] % 2:
            raise ValueError(
                f"MODEL.YOLOV7.ANCHORS must hold {len(head_in_features)} levels of (w, h) pairs, "
                f"got shape {tuple(anchors_t.shape)}"
            )
        # A buffer, so that anchors travel with (converted official) checkpoints.
        self.register_buffer("anchors", anchors_t.view(len(head_in_features), -1, 2))
        shapes = backbone.output_shape()
        self.strides = [shapes[f].stride for f in head_in_features]
        if (aux_head is not None) != getattr(loss, "aux", aux_head is not None):
            raise ValueError(f"the loss is built with aux={loss.aux} but the model "
                             f"{'has' if aux_head is not None else 'has no'} auxiliary head")
        self.conf_thresh, self.nms_thresh, self.merge_iou = conf_thresh, nms_thresh, merge_iou
        self.max_detections, self.max_nms_candidates = max_detections, max_nms_candidates
        self.multi_label = multi_label
        self.inference_amp = inference_amp
        self.test_views, self.test_scales = flip_views(test_flips), check_scales(test_scales)
        self.loss = loss
        convert_batch_norm(self, norm)
        if reparameterized:
            reparameterize(self)
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @classmethod
    def from_config(cls, cfg):
        yolo = cfg.MODEL.YOLOV7
        backbone = build_backbone(cfg)
        shapes: Dict[str, ShapeSpec] = backbone.output_shape()
        names = sorted((n for n in shapes if not n.startswith("aux_")),
                       key=lambda n: shapes[n].stride)
        aux_head = None
        if all("aux_" + n in shapes for n in names):  # the neck provides auxiliary features
            aux_head = YOLOv7Head(cfg, [shapes["aux_" + n] for n in names], aux=True)
        return {
            "backbone": backbone,
            "head": YOLOv7Head(cfg, [shapes[n] for n in names]),
            "aux_head": aux_head,
            "head_in_features": names,
            "anchors": [list(a) for a in (yolo.ANCHORS or get_arch(yolo.ARCH).anchors)],
            "num_classes": yolo.NUM_CLASSES,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "conf_thresh": yolo.CONF_THRESH_TEST,
            "nms_thresh": yolo.NMS_THRESH_TEST,
            "merge_iou": yolo.MERGE_IOU_TEST,
            "max_detections": cfg.TEST.DETECTIONS_PER_IMAGE,
            "max_nms_candidates": yolo.MAX_NMS_CANDIDATES_TEST,
            "multi_label": yolo.MULTI_LABEL_TEST,
            "reparameterized": yolo.REPARAMETERIZED,
            "channels_last": yolo.CHANNELS_LAST,
            "test_flips": tuple(cfg.TEST.YOLOV7.FLIPS),
            "test_scales": tuple(cfg.TEST.YOLOV7.SCALES),
            "norm": yolo.NORM,
            "inference_amp": cfg.TEST.YOLOV7.AMP,
            "loss": YOLOv7Loss(cfg, num_levels=len(names), aux=aux_head is not None),
        }

    def forward(self, batched_inputs: List[Dict[str, Tensor]]):
        """``DenseDetector.forward``; inference under autocast with ``inference_amp`` (see
        :meth:`__init__`)."""
        # Training leaves autocast to the trainer (SOLVER.AMP.ENABLED): no context here.
        dtype = None
        if self.inference_amp and not self.training:
            dtype = inference_autocast_dtype(self.device.type)
        if dtype is None:
            return super().forward(batched_inputs)
        with torch.autocast(self.device.type, dtype=dtype):
            return super().forward(batched_inputs)

    def preprocess_image(self, batched_inputs: List[Dict[str, Tensor]]) -> ImageList:
        """Normalize ("image" is (C, H, W) in INPUT.FORMAT, 0..255), pad with grey 114, and
        lay the batch out as the weights are (channels_last)."""
        if self.training and any("instances" not in x for x in batched_inputs):
            raise ValueError("YOLOv7 training needs 'instances' (gt_boxes, gt_classes) in every "
                             "input, as detectron2's DatasetMapper gives with is_train=True")
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std
                  for x in batched_inputs]
        images = ImageList.from_tensors(images, self.backbone.size_divisibility,
                                        pad_value=self.normalized_pad_value())
        # Evaluation in the official geometry: where each image sits on its canvas.
        images.letterboxes = [x.get("letterbox") for x in batched_inputs]
        if self.channels_last:
            images.tensor = images.tensor.contiguous(memory_format=torch.channels_last)
        return images

    def normalized_pad_value(self) -> float:
        """The grey of the padding (114) as the normalized input has it."""
        return float(((PAD_VALUE - self.pixel_mean) / self.pixel_std).flatten()[0])

    def forward_raw(self, images: Tensor) -> Dict[str, List[Tensor]]:
        """Raw head maps for a batch tensor (N, 3, H, W), H and W multiples of the stride.

        Returns {"lead": L maps (N, A, H_l, W_l, 5 + K)} and, with an aux head in training,
        "aux" likewise.
        """
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        features = self.backbone(images)
        features = [features[f] for f in self.head_in_features]
        outputs = {"lead": self.head(features[:self.num_levels])}
        if self.aux_head is not None and self.training:
            outputs["aux"] = self.aux_head(features[self.num_levels:])
        return outputs

    def forward_training(self, images: ImageList, features: List[Tensor],
                         predictions: List[Tensor], gt_instances: List[Instances]):
        """The loss dict of the lead head's maps ``predictions`` (L maps (N, A, H_l, W_l,
        5 + K)) and, with an auxiliary head, of its maps over ``features[L:]``.

        Class ids are not checked here (that would read them back at every step): datasets
        are checked when loaded (:func:`~yolov7_d2.data.validate.dataset_dicts_from_config`).
        """
        aux = None
        if self.aux_head is not None:
            aux = self.aux_head(features[self.num_levels:])
        return self.loss(predictions, aux, [x.gt_boxes.tensor for x in gt_instances],
                         [x.gt_classes for x in gt_instances], self.anchors, self.strides)

    def forward_inference(self, images: ImageList, features: List[Tensor],
                          predictions: List[Tensor]) -> List[Instances]:
        """Per image, Instances in the (padded batch's) input pixels; DenseDetector.forward
        rescales them to each input's "height" x "width". Decode, threshold and NMS as the
        official ``non_max_suppression``. With test-time flips or scales, the other
        views of the batch run too and their predictions join the NMS."""
        decoded = decode_predictions(predictions, self.anchors, self.strides)
        if len(self.test_views) > 1 or self.test_scales:
            views = view_predictions(self._decoded_forward, images.tensor, self.test_views,
                                     self.test_scales, stride=self.backbone.size_divisibility,
                                     pad_value=self.normalized_pad_value())
            decoded = torch.cat([decoded, views], dim=1)
        results = [self._inference_single_image(d, size)
                   for d, size in zip(decoded, images.image_sizes)]
        return [r if box is None else _on_resized_image(r, box)
                for r, box in zip(results, getattr(images, "letterboxes", [None] * len(results)))]

    def _decoded_forward(self, images: Tensor) -> Tensor:
        """(N, R, 5 + K) decoded lead-head rows of a batch tensor."""
        return decode_predictions(self.forward_raw(images)["lead"], self.anchors, self.strides)

    def _inference_single_image(self, decoded: Tensor, image_size) -> Instances:
        """decoded: (R, 5 + K) for one image -> Instances in input-image pixels."""
        return postprocess_single_image(
            decoded, image_size, num_classes=self.num_classes, conf_thresh=self.conf_thresh,
            nms_thresh=self.nms_thresh, merge_iou=self.merge_iou,
            max_detections=self.max_detections, max_nms_candidates=self.max_nms_candidates,
            multi_label=self.multi_label,
        )


def _on_resized_image(instances: Instances, letterbox) -> Instances:
    """Instances on a letterbox canvas -> on the resized image it holds (``letterbox``: left,
    top, height, width), which detector_postprocess then scales to the original image."""
    left, top, height, width = letterbox
    result = Instances((height, width))
    result.pred_boxes = Boxes(boxes_to_resized_image(instances.pred_boxes.tensor, (left, top),
                                                     (height, width)))
    result.scores, result.pred_classes = instances.scores, instances.pred_classes
    return result


def postprocess_single_image(decoded: Tensor, image_size, *, num_classes: int,
                             conf_thresh: float = 0.001, nms_thresh: float = 0.65,
                             merge_iou: float = 0.0, max_detections: int = 300,
                             max_nms_candidates: int = 30000,
                             multi_label: bool = True) -> Instances:
    """Threshold and class-wise NMS of one image's decoded predictions, as the official
    ``non_max_suppression`` (what :meth:`YOLOv7.forward_inference` runs; also used on onnxruntime
    outputs by :mod:`yolov7_d2.export.onnx`).

    Args:
        decoded: (R, 5 + K) rows of :func:`decode_predictions` for one image.
        image_size: (height, width) of the Instances.
        Other arguments: as the :class:`YOLOv7` arguments of the same names.
    Returns:
        Instances(pred_boxes xyxy in input-image pixels, scores, pred_classes), highest first.
    """
    candidates = decoded[decoded[:, 4] > conf_thresh]
    # With one class the official code scores by objectness alone (class prob. is constant).
    probs = candidates[:, 4:5] if num_classes == 1 else candidates[:, 5:] * candidates[:, 4:5]
    boxes = cxcywh_to_xyxy(candidates[:, :4])
    if multi_label and num_classes > 1:
        index, classes = (probs > conf_thresh).nonzero(as_tuple=True)
        boxes, scores = boxes[index], probs[index, classes]
    else:
        scores, classes = probs.max(dim=1)
        keep = scores > conf_thresh
        boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    if scores.numel() > max_nms_candidates:
        top = scores.topk(max_nms_candidates).indices
        boxes, scores, classes = boxes[top], scores[top], classes[top]
    keep = batched_nms(boxes, scores, classes, nms_thresh)[:max_detections]
    result = Instances(image_size)
    result.pred_boxes = Boxes(merged_boxes(keep, boxes, scores, classes, merge_iou)
                              if merge_iou > 0 else boxes[keep])
    result.scores = scores[keep]
    result.pred_classes = classes[keep]
    return result


def merged_boxes(keep: Tensor, boxes: Tensor, scores: Tensor, classes: Tensor,
                 iou_thresh: float) -> Tensor:
    """Merge NMS, the official ``non_max_suppression``'s ``merge`` option: each box NMS kept
    becomes the score-weighted mean of the candidates of its class that overlap it by more
    than ``iou_thresh`` (itself included). Averaging the near-duplicates, of one view or of
    the views of test-time flips, gives tighter boxes than the single best-scoring one.

    Departures from the official option (off and not configurable there): the IoU is its own
    setting, not the NMS IoU; kept boxes that overlap no other candidate stay (official merge
    drops them); it runs at any candidate count (official: 2 to 2,999).

    Args:
        keep: (M,) indices of the kept boxes into the candidates.
        boxes: (C, 4) xyxy candidates; scores, classes: (C,) their scores and class ids.
    Returns:
        (M, 4) merged xyxy boxes, in the order of ``keep``.
    """
    overlap = box_iou(boxes[keep], boxes) > iou_thresh
    overlap &= classes[keep, None] == classes[None, :]
    weights = overlap * scores[None, :]
    return weights @ boxes / weights.sum(dim=1, keepdim=True)
