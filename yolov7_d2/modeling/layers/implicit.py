"""YOLOR implicit knowledge (Wang et al. 2021, "You Only Learn One Representation")."""
import torch
from torch import nn

__all__ = ["ImplicitA", "ImplicitM"]


class ImplicitA(nn.Module):
    """Learned additive vector (1, C, 1, 1), initialised N(0, 0.02): ``x + implicit`` on the
    input of a prediction conv, which :class:`~yolov7_d2.modeling.head.YOLOv7Head` folds
    into that conv's bias rather than computing the sum."""

    def __init__(self, channels: int, std: float = 0.02):
        super().__init__()
        self.implicit = nn.Parameter(torch.empty(1, channels, 1, 1))
        nn.init.normal_(self.implicit, mean=0.0, std=std)


class ImplicitM(nn.Module):
    """Learned multiplicative vector (1, C, 1, 1), initialised N(1, 0.02): ``x * implicit`` on
    the output of a prediction conv, which :class:`~yolov7_d2.modeling.head.YOLOv7Head` folds
    into that conv's weight and bias rather than computing the product."""

    def __init__(self, channels: int, std: float = 0.02):
        super().__init__()
        self.implicit = nn.Parameter(torch.empty(1, channels, 1, 1))
        nn.init.normal_(self.implicit, mean=1.0, std=std)
