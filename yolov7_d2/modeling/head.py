"""YOLOv7 detection heads: the lead head (IDetect) and the auxiliary head (IAuxDetect's m2)."""
import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec

from .arch import get_arch, scale_width
from .layers import ConvBNAct, ImplicitA, ImplicitM, RepConv

__all__ = ["YOLOv7Head", "init_prediction_bias"]


@torch.no_grad()
def init_prediction_bias(conv: nn.Conv2d, num_anchors: int, num_classes: int, stride: int) -> None:
    """Official prior for a prediction conv (Lin et al. 2017, sec. 3.3): objectness as if
    8 objects were in a 640x640 image, class probability 0.6 / (num_classes - 0.99)."""
    bias = conv.bias.view(num_anchors, -1)
    bias[:, 4] += math.log(8 / (640 / stride) ** 2)
    bias[:, 5:] += math.log(0.6 / (num_classes - 0.99))


class YOLOv7Head(nn.Module):
    """YOLOv7 detection head (Wang et al. 2022): per level a 3x3 conv (Conv-BN-act or RepConv),
    then a 1x1 prediction conv giving ``num_anchors * (5 + num_classes)`` channels.

    With ``implicit`` it is the lead head ``IDetect``: out = ImplicitM(conv1x1(ImplicitA(x)))
    (YOLOR implicit knowledge), computed as one 1x1 conv with the implicit vectors folded into
    its weight and bias (:meth:`folded_prediction`). Without, it is the deploy ``Detect`` or,
    with plain convs, the auxiliary head of the P6 models.

    Args:
        input_shapes: one ShapeSpec per level, stride 8 first.
        conv_channels: width of each level's 3x3 conv.
        conv_type: "conv" or "repconv".
        num_classes, num_anchors: prediction layout, channels ordered [x, y, w, h, obj, cls...].
        implicit: add ImplicitA/ImplicitM around the prediction conv.
        act: activation of the 3x3 convs.
    """

    @configurable
    def __init__(self, *, input_shapes: List[ShapeSpec], conv_channels: List[int],
                 conv_type: str = "conv", num_classes: int, num_anchors: int = 3,
                 implicit: bool = True, act: str = "silu"):
        super().__init__()
        if len(conv_channels) != len(input_shapes):
            raise ValueError(f"{len(input_shapes)} input levels but "
                             f"{len(conv_channels)} conv widths")
        if conv_type not in ("conv", "repconv"):
            raise ValueError(f"conv_type must be 'conv' or 'repconv', got {conv_type!r}")
        self.num_classes, self.num_anchors = num_classes, num_anchors
        outputs = num_anchors * (5 + num_classes)
        self.convs = nn.ModuleList(
            RepConv(shape.channels, c, act=act) if conv_type == "repconv"
            else ConvBNAct(shape.channels, c, 3, act=act)
            for shape, c in zip(input_shapes, conv_channels)
        )
        self.predictors = nn.ModuleList(nn.Conv2d(c, outputs, 1) for c in conv_channels)
        self.implicit_a: Optional[nn.ModuleList] = None
        self.implicit_m: Optional[nn.ModuleList] = None
        if implicit:
            self.implicit_a = nn.ModuleList(ImplicitA(c) for c in conv_channels)
            self.implicit_m = nn.ModuleList(ImplicitM(outputs) for _ in conv_channels)
        for conv, shape in zip(self.predictors, input_shapes):
            init_prediction_bias(conv, num_anchors, num_classes, shape.stride)

    @classmethod
    def from_config(cls, cfg, input_shapes: List[ShapeSpec], aux: bool = False):
        yolo = cfg.MODEL.YOLOV7
        arch = get_arch(yolo.ARCH)
        widths = arch.aux_convs if aux else arch.head_convs
        anchors = yolo.ANCHORS or arch.anchors
        return {
            "input_shapes": input_shapes,
            "conv_channels": [scale_width(c, yolo.WIDTH_MULTIPLE) for c in widths],
            "conv_type": "conv" if aux else arch.head_conv_type,
            "num_classes": yolo.NUM_CLASSES,
            "num_anchors": len(anchors[0]) // 2,
            "implicit": not aux and not yolo.DEPLOY,
            "act": arch.act,
        }

    def folded_prediction(self, level: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Weight (O, C, 1, 1) and bias (O,) of ``level``'s prediction conv with the implicit
        knowledge folded in: conv(x + a) * m = (W * m) x + (b + W a) * m (the official
        ``IDetect.fuse``). Differentiable: training computes the official ``IDetect``'s function
        and gradients without keeping x + a and the unscaled output for the backward pass
        (yolov7-tiny, 8 images at 640 px: 1,683 instead of 1,790 MiB saved for backward)."""
        conv = self.predictors[level]
        weight, bias = conv.weight, conv.bias
        if self.implicit_a is None:
            return weight, bias
        shift = torch.mv(weight.flatten(1), self.implicit_a[level].implicit.flatten())  # W a
        scale = self.implicit_m[level].implicit.flatten()
        return weight * scale.view(-1, 1, 1, 1), (bias + shift) * scale

    def forward(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        """
        Args:
            features: L maps, (N, C_l, H_l, W_l), for the L levels of this head; maps after
                them (the auxiliary head's, see ``YOLOv7.head_in_features``) are not read.
        Returns:
            L raw prediction maps (N, A, H_l, W_l, 5 + K) for A anchors and K classes, as the
            official head lays them out (no activation applied).
        """
        outputs = []
        for level, conv in enumerate(self.convs):
            x = F.conv2d(conv(features[level]), *self.folded_prediction(level))
            n, _, h, w = x.shape
            outputs.append(
                x.view(n, self.num_anchors, -1, h, w).permute(0, 1, 3, 4, 2).contiguous())
        return outputs
