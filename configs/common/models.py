"""The YOLOv7 model as a LazyConfig, built with ``LazyCall`` on the same ``@configurable``
classes as the yaml path (``configs/coco/*.yaml``).

``model`` is yolov7; ``yolov7_model(arch)`` gives the model of any official scale (the
architecture row decides the widths, head type, anchors and the auxiliary head). Single keys
to edit: ``model.num_classes``, ``model.backbone.width_multiple`` (the ELAN backbone and the
heads follow it), ``model.loss.*_gain`` (the official hyp values, rescaled when built for the
classes, levels and ``dataloader.train.mapper.image_size``, as MODEL.YOLOV7.LOSS in yaml).
"""
from yolov7_d2.lazy import neck_output_shapes, scaled_widths
from yolov7_d2.modeling import ELANBackbone, YOLOv7, YOLOv7Head, YOLOv7Loss, YOLOv7PAN, get_arch

from detectron2.config import LazyCall as L

# From inside a head's ``input_shapes`` / ``conv_channels`` node, up to the model.
_WIDTH = "${...backbone.width_multiple}"


def _head(arch_name: str, widths, aux: bool):
    arch = get_arch(arch_name)
    return L(YOLOv7Head)(
        input_shapes=L(neck_output_shapes)(arch=arch_name, width_multiple=_WIDTH, aux=aux),
        conv_channels=L(scaled_widths)(widths=list(widths), width_multiple=_WIDTH),
        # The auxiliary head is plain: Conv-BN-act 3x3, no implicit knowledge.
        conv_type="conv" if aux else arch.head_conv_type,
        num_classes="${..num_classes}",
        num_anchors=len(arch.anchors[0]) // 2,
        implicit=not aux,
        act=arch.act,
    )


def yolov7_model(arch_name: str = "yolov7"):
    """The LazyConfig of the official scale ``arch_name`` ("yolov7-tiny" ... "yolov7-e6e"),
    as ``configs/coco/<arch_name>.yaml`` builds it (80 classes, auxiliary head for P6)."""
    arch = get_arch(arch_name)
    levels = range(3, 3 + arch.num_levels)
    has_aux = bool(arch.aux_convs)
    return L(YOLOv7)(
        backbone=L(YOLOv7PAN)(
            bottom_up=L(ELANBackbone)(
                arch="${..arch}",
                in_channels=3,
                width_multiple="${..width_multiple}",
                out_features=[f"c{level}" for level in levels],
            ),
            # Bottom-up outputs read by the neck, stride 8 first (set them when replacing
            # bottom_up by another backbone, see configs/research/*.py).
            in_features=[f"c{level}" for level in levels],
            arch=L(get_arch)(name=arch_name),
            width_multiple=1.0,
            aux_outputs=has_aux,
        ),
        head=_head(arch_name, arch.head_convs, aux=False),
        aux_head=_head(arch_name, arch.aux_convs, aux=True) if has_aux else None,
        head_in_features=[f"p{level}" for level in levels],
        anchors=[list(a) for a in arch.anchors],
        num_classes=80,
        # YOLO input: RGB divided by 255.
        pixel_mean=[0.0, 0.0, 0.0],
        pixel_std=[255.0, 255.0, 255.0],
        # Official test.py evaluation.
        conf_thresh=0.001,
        nms_thresh=0.65,
        # Merge NMS off (official default); configs/deepforest/yolov7-tiny-trees.yaml: 0.65.
        merge_iou=0.0,
        max_detections=300,
        max_nms_candidates=30000,
        multi_label=True,
        loss=L(YOLOv7Loss)(
            num_classes="${..num_classes}",
            num_levels=arch.num_levels,
            image_size="${dataloader.train.mapper.image_size}",
            # hyp.scratch.p5.yaml / p6.yaml (tiny: see configs/coco/yolov7_tiny.py).
            box_gain=0.05,
            cls_gain=0.3,
            obj_gain=0.7,
            balance=None,
            anchor_t=4.0,
            label_smoothing=0.0,
            aux=has_aux,
            aux_weight=0.25,
            topk=None,
            gt_chunk=256,
        ),
        reparameterized=False,
        # NHWC weights and activations: same outputs, faster convolutions.
        channels_last=True,
        # Inference in bfloat16 on CPUs that compute it natively, float16 on CUDA
        # (TEST.YOLOV7.AMP).
        inference_amp=True,
    )


model = yolov7_model("yolov7")
