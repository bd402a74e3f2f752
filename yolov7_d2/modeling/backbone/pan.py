"""The YOLOv7 neck: SPPCSPC, a top-down FPN and a bottom-up PAN of ELAN-H blocks."""
from typing import Callable, Dict, List, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from ..arch import BottomUpSpec, TopDownSpec, YOLOv7Arch, get_arch, scale_width
from ..layers import SPPCSPC, ConvBNAct, SPPTiny
from .elan import build_down, build_elan

__all__ = ["YOLOv7PAN", "build_yolov7_pan_backbone"]


class TopDownFusion(nn.Module):
    """One FPN level: block(cat[lateral(fine), up2x(reduce(coarse))])."""

    def __init__(self, spec: TopDownSpec, coarse_channels: int, fine_channels: int,
                 width: Callable[[int], int], act: str, extended: bool):
        super().__init__()
        self.reduce = ConvBNAct(coarse_channels, width(spec.reduce), 1, act=act)
        self.lateral = ConvBNAct(fine_channels, width(spec.lateral), 1, act=act)
        in_channels = width(spec.reduce) + width(spec.lateral)
        self.block = build_elan(spec.block, in_channels, width, act, extended)
        self.out_channels = self.block.out_channels

    def forward(self, coarse: torch.Tensor,
                fine: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns (output, auxiliary-head tap) at the resolution of ``fine``."""
        up = F.interpolate(self.reduce(coarse), scale_factor=2.0, mode="nearest")
        return self.block.forward_with_aux_tap(torch.cat([self.lateral(fine), up], dim=1))


class BottomUpFusion(nn.Module):
    """One PAN level: block(cat[down(fine), lateral]) at the resolution of ``lateral``."""

    def __init__(self, spec: BottomUpSpec, fine_channels: int, lateral_channels: int,
                 width: Callable[[int], int], act: str, extended: bool):
        super().__init__()
        self.down = build_down(spec.down, fine_channels, width, act)
        in_channels = self.down.out_channels + lateral_channels
        self.block = build_elan(spec.block, in_channels, width, act, extended)
        self.out_channels = self.block.out_channels

    def forward(self, fine: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.down(fine), lateral], dim=1))


class YOLOv7PAN(Backbone):
    """YOLOv7 neck (Wang et al. 2022) wrapping a bottom-up backbone, as detectron2's ``FPN``.

    SPP on the coarsest input, top-down FPN levels, bottom-up PAN levels. Outputs "p3".."pK"
    (stride 2^k) feed the lead head: the FPN output at stride 8 and the PAN outputs above it.
    With ``aux_outputs``, "aux_p3".."aux_pK" also come out for the auxiliary head: the FPN
    outputs (for e6e the second E-ELAN branch, before the sum) and the SPP output.

    Args:
        bottom_up: a detectron2 ``Backbone`` (ELAN, or any other: ResNet, timm, ...).
        in_features: its outputs to read, finest first (stride 8 ... coarsest).
        arch: architecture row giving the neck widths.
        width_multiple: scales every width as the official ``width_multiple``.
        aux_outputs: also return the auxiliary-head features.
    """

    def __init__(self, bottom_up: Backbone, in_features: List[str], arch: YOLOv7Arch,
                 width_multiple: float = 1.0, aux_outputs: bool = False):
        super().__init__()
        levels = len(in_features)
        if levels != len(arch.top_down) + 1 or levels != len(arch.bottom_up) + 1:
            raise ValueError(
                f"The YOLOv7 neck of this architecture takes {len(arch.top_down) + 1} inputs, "
                f"got IN_FEATURES={in_features}"
            )
        self.bottom_up, self.in_features, self.aux_outputs = (
            bottom_up, list(in_features), aux_outputs)
        shapes = bottom_up.output_shape()
        missing = [f for f in in_features if f not in shapes]
        if missing:
            raise ValueError(f"Bottom-up backbone has no outputs {missing}; it has {list(shapes)}")
        in_channels = [shapes[f].channels for f in in_features]
        strides = [shapes[f].stride for f in in_features]
        width = lambda c: scale_width(c, width_multiple)  # noqa: E731
        kind, spp_width = arch.spp
        spp_cls = SPPCSPC if kind == "sppcspc" else SPPTiny
        self.spp = spp_cls(in_channels[-1], width(spp_width), act=arch.act)

        # top_down[j] fuses into level levels-2-j (the coarsest FPN level first).
        self.top_down = nn.ModuleList()
        coarse = self.spp.out_channels
        fpn_channels = [0] * (levels - 1) + [self.spp.out_channels]
        for j, spec in enumerate(arch.top_down):
            level = levels - 2 - j
            fusion = TopDownFusion(spec, coarse, in_channels[level], width, arch.act, arch.e_elan)
            self.top_down.append(fusion)
            coarse = fpn_channels[level] = fusion.out_channels

        self.bottom_up_path = nn.ModuleList()
        fine = fpn_channels[0]
        out_channels = [fine]
        for level, spec in enumerate(arch.bottom_up, start=1):
            fusion = BottomUpFusion(spec, fine, fpn_channels[level], width, arch.act, arch.e_elan)
            self.bottom_up_path.append(fusion)
            fine = fusion.out_channels
            out_channels.append(fine)

        names = [f"p{int(s).bit_length() - 1}" for s in strides]
        self._out_features = list(names)
        self._out_feature_strides = dict(zip(names, strides))
        self._out_feature_channels = dict(zip(names, out_channels))
        if aux_outputs:
            for name, stride, channels in zip(names, strides, fpn_channels):
                self._out_features.append(f"aux_{name}")
                self._out_feature_strides[f"aux_{name}"] = stride
                self._out_feature_channels[f"aux_{name}"] = channels
        self._size_divisibility = max(strides)

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    def disable_aux_outputs(self) -> None:
        """Stop returning the auxiliary-head features (deploy form)."""
        self.aux_outputs = False
        self._out_features = [f for f in self._out_features if not f.startswith("aux_")]

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(N, C, H, W) image -> {"p3": (N, C3, H/8, W/8), ...} (+ "aux_p*" if enabled)."""
        bottom_up = self.bottom_up(x)
        inputs = [bottom_up[f] for f in self.in_features]
        levels = len(inputs)
        fpn: List[torch.Tensor] = [None] * levels
        aux: List[torch.Tensor] = [None] * levels
        fpn[-1] = aux[-1] = self.spp(inputs[-1])
        for j, fusion in enumerate(self.top_down):
            level = levels - 2 - j
            fpn[level], aux[level] = fusion(fpn[level + 1], inputs[level])
        outputs = [fpn[0]]
        for level, fusion in enumerate(self.bottom_up_path, start=1):
            outputs.append(fusion(outputs[-1], fpn[level]))
        names = self._out_features[:levels]
        results = dict(zip(names, outputs))
        if self.aux_outputs:
            results.update({f"aux_{name}": feature for name, feature in zip(names, aux)})
        return results


@BACKBONE_REGISTRY.register()
def build_yolov7_pan_backbone(cfg, input_shape: ShapeSpec) -> YOLOv7PAN:
    """YOLOv7 neck on the bottom-up backbone named by ``cfg.MODEL.YOLOV7.BOTTOM_UP``."""
    yolo = cfg.MODEL.YOLOV7
    arch = get_arch(yolo.ARCH)
    bottom_up = BACKBONE_REGISTRY.get(yolo.BOTTOM_UP)(cfg, input_shape)
    in_features = list(yolo.IN_FEATURES) or [f"c{i}" for i in range(3, 3 + arch.num_levels)]
    return YOLOv7PAN(
        bottom_up,
        in_features,
        arch,
        width_multiple=yolo.WIDTH_MULTIPLE,
        aux_outputs=yolo.AUX_HEAD and not yolo.DEPLOY and bool(arch.aux_convs),
    )
