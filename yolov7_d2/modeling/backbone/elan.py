"""The YOLOv7 ELAN backbone (bottom-up part), one class for all seven scales."""
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from ..arch import DownSpec, ELANSpec, YOLOv7Arch, get_arch, scale_width
from ..layers import EELAN, ELAN, ConvBNAct, ConvPoolDown, ReOrg

__all__ = ["ELANBackbone", "build_elan_backbone", "build_down", "build_elan"]


def build_down(spec: DownSpec, in_channels: int, width: Callable[[int], int],
               act: str) -> nn.Module:
    """Build the stride-2 step described by ``spec`` reading ``in_channels``."""
    if spec.kind == "conv":
        return ConvBNAct(in_channels, width(spec.out), 3, 2, act=act)
    if spec.kind == "maxpool":
        down = nn.MaxPool2d(2, 2)
        down.out_channels = in_channels
        return down
    out = width(spec.out)
    if spec.kind == "mp":
        return ConvPoolDown(in_channels, out, out // 2, pool_branch_first=True, act=act)
    if spec.kind == "downc":
        return ConvPoolDown(in_channels, out, in_channels, pool_branch_first=False, act=act)
    raise ValueError(f"Unknown down-sampling kind {spec.kind!r}")


def build_elan(spec: ELANSpec, in_channels: int, width: Callable[[int], int], act: str,
               extended: bool) -> nn.Module:
    """Build an ELAN (or, if ``extended``, an E-ELAN) block from ``spec``."""
    block = EELAN if extended else ELAN
    return block(in_channels, width(spec.hidden), width(spec.mid), spec.depth, width(spec.out),
                 taps=spec.taps, act=act)


class ELANBackbone(Backbone):
    """YOLOv7 backbone (Wang et al. 2022, "YOLOv7: Trainable bag-of-freebies"): a stem, then
    stages of down-sampling + ELAN (E-ELAN for e6e). Stage outputs are named by log2(stride):
    "c2" (stride 4) ... "c5" (stride 32) or "c6" (stride 64, P6 scales).

    Args:
        arch: the architecture row (see :mod:`yolov7_d2.modeling.arch`).
        in_channels: image channels.
        width_multiple: scales every width, official rounding (ceil to a multiple of 8).
        out_features: which stage outputs to return; default all.
        freeze_at: see :meth:`freeze`.
    """

    def __init__(self, arch: YOLOv7Arch, in_channels: int = 3, width_multiple: float = 1.0,
                 out_features: Optional[List[str]] = None, freeze_at: int = 0):
        super().__init__()
        width = lambda c: scale_width(c, width_multiple)  # noqa: E731
        stem: List[nn.Module] = [ReOrg()] if arch.reorg else []
        channels, stride = in_channels * (4 if arch.reorg else 1), 2 if arch.reorg else 1
        for out, kernel, conv_stride in arch.stem:
            stem.append(ConvBNAct(channels, width(out), kernel, conv_stride, act=arch.act))
            channels, stride = width(out), stride * conv_stride
        self.stem = nn.Sequential(*stem)

        self.stage_names: List[str] = []
        self._out_feature_strides: Dict[str, int] = {}
        self._out_feature_channels: Dict[str, int] = {}
        for spec in arch.stages:
            down = build_down(spec.down, channels, width, arch.act)
            block = build_elan(spec.block, down.out_channels, width, arch.act, arch.e_elan)
            stride *= 2
            name = f"c{int(stride).bit_length() - 1}"
            self.add_module(name, nn.Sequential(down, block))
            self.stage_names.append(name)
            channels = block.out_channels
            self._out_feature_strides[name] = stride
            self._out_feature_channels[name] = channels
        self._out_features = list(out_features or self.stage_names)
        unknown = set(self._out_features) - set(self.stage_names)
        if unknown:
            raise ValueError(f"Unknown ELAN backbone outputs {sorted(unknown)}; "
                             f"available: {self.stage_names}")
        self.freeze(freeze_at)

    @property
    def size_divisibility(self) -> int:
        return max(self._out_feature_strides.values())

    def freeze(self, freeze_at: int = 0) -> "ELANBackbone":
        """Freeze the stem (``freeze_at`` >= 1) and the first ``freeze_at`` - 1 stages, as
        detectron2's ResNet (1: stem, 2: stem and "c2", ...; official ``--freeze`` counts
        layers instead): no gradients, and their BatchNorm statistics stay fixed in training.

        BatchNorm is kept (in eval mode, see :meth:`train`) rather than swapped for
        ``FrozenBatchNorm2d``, so the state dict, official conversion, EMA and
        re-parameterization see the same tensors as without freezing.
        """
        # Names, not modules: a list of modules as attribute would register them twice.
        self.frozen_modules: List[str] = (["stem"] + self.stage_names)[:max(freeze_at, 0)]
        for name in self.frozen_modules:
            for param in getattr(self, name).parameters():
                param.requires_grad_(False)
        return self.train(self.training)

    def train(self, mode: bool = True) -> "ELANBackbone":
        super().train(mode)
        for name in self.frozen_modules:
            getattr(self, name).eval()
        return self

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(N, C, H, W) -> {name: (N, C_name, H / stride, W / stride)} for ``out_features``."""
        x = self.stem(x)
        outputs = {}
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs


@BACKBONE_REGISTRY.register()
def build_elan_backbone(cfg, input_shape: ShapeSpec) -> ELANBackbone:
    """ELAN backbone of ``cfg.MODEL.YOLOV7.ARCH`` returning ``cfg.MODEL.YOLOV7.IN_FEATURES``
    (every stage output if empty)."""
    return ELANBackbone(
        get_arch(cfg.MODEL.YOLOV7.ARCH),
        in_channels=input_shape.channels,
        width_multiple=cfg.MODEL.YOLOV7.WIDTH_MULTIPLE,
        out_features=list(cfg.MODEL.YOLOV7.IN_FEATURES) or None,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
    )
