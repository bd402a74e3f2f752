"""FLOP counting in the official YOLOv7 convention."""
import math

import torch
from torch import nn

__all__ = ["count_gflops"]


def _batch_norm_macs(inputs, outputs) -> int:
    """thop (the official counter) counts 4 operations per element of an affine BatchNorm
    (fvcore: 2), which the official GFLOPs then double like every other count."""
    from fvcore.nn.jit_handles import get_shape

    return 4 * math.prod(get_shape(inputs[0]))


class _RawForward(nn.Module):
    """Traceable wrapper: image tensor -> the lead head's raw maps."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        return tuple(self.model.forward_raw(images)["lead"])


@torch.no_grad()
def count_gflops(model: nn.Module, size: int, count_size: int = 256) -> float:
    """GFLOPs (2 x multiply-accumulates, BatchNorm as 4 per element: the official thop-based
    counter) of one ``size`` x ``size`` image through backbone and lead head.

    Counted with fvcore at ``count_size`` (a multiple of the largest stride) and scaled by
    (size / count_size)^2, exact for a fully convolutional network.
    """
    from fvcore.nn import FlopCountAnalysis

    stride = model.backbone.size_divisibility
    if size % stride or count_size % stride:
        raise ValueError(f"size {size} and count_size {count_size} must be multiples of {stride}")
    was_training = model.training
    model.eval()
    images = torch.zeros(1, 3, count_size, count_size, device=model.device)
    analysis = FlopCountAnalysis(_RawForward(model), images)
    analysis.set_op_handle("aten::batch_norm", _batch_norm_macs)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    macs = analysis.total()
    model.train(was_training)
    return 2.0 * macs * (size / count_size) ** 2 / 1e9
