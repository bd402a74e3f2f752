"""Convolution units of YOLOv7: Conv-BN-activation and the re-parameterizable RepConv."""
from typing import Optional

import torch
from torch import nn

__all__ = ["BN_EPS", "BN_MOMENTUM", "NORMS", "build_activation", "convert_batch_norm", "ConvBNAct",
           "RepConv", "fuse_conv_bn"]

# The official `initialize_weights` resets every BatchNorm2d to these values after building.
BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def build_activation(name: str) -> nn.Module:
    """Return the activation module named ``name``: "silu", "leaky_relu" (slope 0.1, as
    yolov7-tiny) or "identity"."""
    if name == "silu":
        return nn.SiLU(inplace=True)
    if name == "leaky_relu":
        return nn.LeakyReLU(0.1, inplace=True)
    if name == "identity":
        return nn.Identity()
    raise ValueError(f"Unknown activation {name!r}; expected 'silu', 'leaky_relu' or 'identity'.")


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


#: MODEL.YOLOV7.NORM values, detectron2's names: per-process BatchNorm, torch's SyncBatchNorm
#: (CUDA; the official --sync-bn), detectron2's NaiveSyncBatchNorm (any device, gloo too).
NORMS = ("BN", "SyncBN", "naiveSyncBN")


def convert_batch_norm(module: nn.Module, norm: str) -> nn.Module:
    """``module`` with every ``nn.BatchNorm2d`` replaced, in place, by the kind of
    :data:`NORMS` named ``norm``, keeping eps, momentum, the affine weights and the running
    statistics. The synchronized kinds normalise over the images of all processes of a
    distributed training step (one process: plain BatchNorm)."""
    if norm == "BN":
        return module
    if norm == "SyncBN":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if norm != "naiveSyncBN":
        raise ValueError(f"MODEL.YOLOV7.NORM {norm!r}: expected one of {NORMS}")
    from detectron2.layers import NaiveSyncBatchNorm

    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            synced = NaiveSyncBatchNorm(child.num_features, eps=child.eps,
                                        momentum=child.momentum).to(child.weight.device)
            synced.load_state_dict(child.state_dict())
            setattr(module, name, synced)
        else:
            convert_batch_norm(child, norm)
    return module


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Fold an eval-mode BatchNorm into the preceding convolution.

    Returns a new Conv2d with bias computing ``bn(conv(x))`` exactly (up to float rounding).
    """
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
    ).to(conv.weight.device, conv.weight.dtype)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    conv_bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_(bn.bias + (conv_bias - bn.running_mean) * scale)
    return fused


class ConvBNAct(nn.Module):
    """Conv2d (no bias, "same" padding) -> BatchNorm2d -> activation: the official ``Conv``.

    After :meth:`fuse` the BatchNorm is folded into a biased convolution (deploy form).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 act: str = "silu"):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False
        )
        self.bn: Optional[nn.BatchNorm2d] = _batch_norm(out_channels)
        self.act = build_activation(act)

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)

    def fuse(self) -> None:
        """Fold the BatchNorm into the convolution in place (use in eval mode)."""
        if self.bn is not None:
            self.conv = fuse_conv_bn(self.conv, self.bn)
            self.bn = None


class RepConv(nn.Module):
    """RepVGG-style block (Ding et al. 2021) as used by yolov7 (L) before its heads.

    Training form: ``act(BN(conv3x3(x)) + BN(conv1x1(x)) [+ BN(x)])``; the identity branch
    exists only when in == out channels and stride 1, so the three official head RepConvs
    (128->256, 256->512, 512->1024) are the paper's "RepConvN". :meth:`fuse` merges all
    branches into one biased 3x3 convolution (deploy form).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, act: str = "silu"):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.act = build_activation(act)
        # Registration order mirrors the official module so checkpoints map one to one.
        self.identity = (
            _batch_norm(in_channels) if in_channels == out_channels and stride == 1 else None
        )
        self.dense = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
            _batch_norm(out_channels),
        )
        self.pointwise = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride, 0, bias=False),
            _batch_norm(out_channels),
        )
        self.fused: Optional[nn.Conv2d] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.act(self.fused(x))
        y = self.dense(x) + self.pointwise(x)
        if self.identity is not None:
            y = y + self.identity(x)
        return self.act(y)

    @torch.no_grad()
    def fuse(self) -> None:
        """Merge the branches into a single 3x3 convolution in place (use in eval mode)."""
        if self.fused is not None:
            return
        dense = fuse_conv_bn(self.dense[0], self.dense[1])
        pointwise = fuse_conv_bn(self.pointwise[0], self.pointwise[1])
        weight = dense.weight + nn.functional.pad(pointwise.weight, [1, 1, 1, 1])
        bias = dense.bias + pointwise.bias
        if self.identity is not None:
            eye = torch.zeros_like(dense.weight)
            eye[torch.arange(self.in_channels), torch.arange(self.in_channels), 1, 1] = 1.0
            identity_conv = nn.Conv2d(self.in_channels, self.in_channels, 3, 1, 1, bias=False)
            identity_conv = identity_conv.to(eye.device, eye.dtype)
            identity_conv.weight.copy_(eye)
            identity = fuse_conv_bn(identity_conv, self.identity)
            weight, bias = weight + identity.weight, bias + identity.bias
        dense.weight.copy_(weight)
        dense.bias.copy_(bias)
        self.fused = dense
        del self.dense, self.pointwise
        self.identity = None
