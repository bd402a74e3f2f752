"""Builders for LazyConfig files (configs/common/*.py): values that the yaml path derives from
several keys in ``from_config`` are derived here at instantiation time, so that editing one key
of a LazyConfig (width multiple, image size, batch size) keeps the model and recipe consistent.
"""
import math
from typing import List, Sequence, Union

import torch

from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone
from detectron2.utils import comm

from .data import YOLOv7MosaicMapper, YOLOv7TrainLoader
from .modeling import YOLOv7Arch, YOLOv7PAN, get_arch
from .modeling.arch import scale_width

__all__ = ["neck_output_shapes", "scaled_widths", "yolov7_train_loader"]


class _StridesOnly(Backbone):
    """A bottom-up stand-in with the given strides, to read a neck's output shapes."""

    def __init__(self, strides: Sequence[int]):
        super().__init__()
        self._out_features = [f"c{int(math.log2(s))}" for s in strides]
        self._out_feature_strides = dict(zip(self._out_features, strides))
        self._out_feature_channels = {name: 8 for name in self._out_features}

    def forward(self, x):
        raise NotImplementedError


def neck_output_shapes(arch: Union[str, YOLOv7Arch], width_multiple: float = 1.0,
                       aux: bool = False) -> List[ShapeSpec]:
    """Shapes of the YOLOv7 neck's outputs ("p3".. or, with ``aux``, "aux_p3"..), stride 8
    first: the head's ``input_shapes``. Read off a neck built on the meta device (no memory),
    so they always agree with :class:`YOLOv7PAN`; they do not depend on the bottom-up."""
    arch = get_arch(arch) if isinstance(arch, str) else arch
    strides = [8 * 2**level for level in range(arch.num_levels)]
    bottom_up = _StridesOnly(strides)
    with torch.device("meta"):
        neck = YOLOv7PAN(bottom_up, bottom_up._out_features, arch, width_multiple, aux_outputs=aux)
    shapes = neck.output_shape()
    prefix = "aux_" if aux else ""
    return [shapes[f"{prefix}p{int(math.log2(s))}"] for s in strides]


def scaled_widths(widths: Sequence[int], width_multiple: float = 1.0) -> List[int]:
    """``widths`` scaled as the official ``width_multiple`` (see :func:`scale_width`)."""
    return [scale_width(int(w), width_multiple) for w in widths]


def yolov7_train_loader(*, mapper: YOLOv7MosaicMapper, total_batch_size: int,
                        **kwargs) -> YOLOv7TrainLoader:
    """:class:`~yolov7_d2.data.YOLOv7TrainLoader` sampling the mapper's own dataset (the one
    its mosaic partners come from, loaded once), ``total_batch_size`` images per batch over
    all processes. ``kwargs``: num_workers, sampler."""
    world_size = comm.get_world_size()
    if total_batch_size % world_size:
        raise ValueError(f"total_batch_size ({total_batch_size}) must be a multiple of the "
                         f"number of processes ({world_size})")
    return YOLOv7TrainLoader(mapper, batch_size=total_batch_size // world_size, **kwargs)
