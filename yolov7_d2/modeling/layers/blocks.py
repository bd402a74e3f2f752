"""YOLOv7 computational blocks: ELAN / ELAN-H / E-ELAN, SPPCSPC, down-sampling, ReOrg.

Every block registers its sub-modules in the order of the official layers (cfg/training/*.yaml)
so that an official checkpoint maps onto ours tensor by tensor (see ``convert/official.py``).
"""
from typing import List, Tuple

import torch
from torch import nn

from .conv import ConvBNAct

__all__ = ["ELAN", "EELAN", "SPPCSPC", "SPPTiny", "ConvPoolDown", "ReOrg"]


class ELAN(nn.Module):
    """Efficient Layer Aggregation block (YOLOv7 paper, Fig. 2c) and its head variant ELAN-H.

    Two 1x1 entry convolutions read the block input: ``short`` (a) and ``entry`` (b); a chain of
    ``depth`` 3x3 convolutions starts from b. The block concatenates, deepest first, either
    every second chain output down to b (``taps="alternate"``: backbone ELAN, yaml
    ``[-1, -3, -5, ..., -depth-2]``) or every chain output (``taps="all"``: ELAN-H and tiny),
    then a; a 1x1 transition gives ``out_channels``.

    Args:
        in_channels, hidden_channels (width of a and b), mid_channels (width of the 3x3 chain),
        depth (number of 3x3 convs), out_channels, taps ("alternate" or "all"), act.
    """

    def __init__(self, in_channels: int, hidden_channels: int, mid_channels: int, depth: int,
                 out_channels: int, taps: str = "alternate", act: str = "silu"):
        super().__init__()
        if taps not in ("alternate", "all"):
            raise ValueError(f"ELAN taps must be 'alternate' or 'all', got {taps!r}")
        step = 2 if taps == "alternate" else 1
        if depth % step:
            raise ValueError(f"ELAN with alternate taps needs an even depth, got {depth}")
        self.short = ConvBNAct(in_channels, hidden_channels, 1, act=act)
        self.entry = ConvBNAct(in_channels, hidden_channels, 1, act=act)
        widths = [hidden_channels] + [mid_channels] * depth
        self.chain = nn.ModuleList(
            ConvBNAct(widths[i], mid_channels, 3, act=act) for i in range(depth)
        )
        # Indices into [b, b1, ..., b_depth], deepest first, as the official Concat lists them.
        self.taps = list(range(depth, -1, -step))
        concat_channels = sum(widths[i] for i in self.taps) + hidden_channels
        self.transition = ConvBNAct(concat_channels, out_channels, 1, act=act)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) -> (N, out_channels, H, W)."""
        short = self.short(x)
        outputs = [self.entry(x)]
        for conv in self.chain:
            outputs.append(conv(outputs[-1]))
        return self.transition(torch.cat([outputs[i] for i in self.taps] + [short], dim=1))

    def forward_with_aux_tap(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return (output, feature for the auxiliary head); for ELAN both are the output."""
        y = self.forward(x)
        return y, y


class EELAN(nn.Module):
    """Extended ELAN as the official yolov7-e6e implements it.

    The paper's "expand, shuffle, merge cardinality" is realised in the official code as two
    identical ELAN branches on the same input, each with its own transition, summed
    (yaml ``Shortcut``). No group convolution or channel shuffle exists in that code, and the
    merge keeps the width. Arguments as :class:`ELAN`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.branch1 = ELAN(*args, **kwargs)
        self.branch2 = ELAN(*args, **kwargs)
        self.out_channels = self.branch1.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch1(x) + self.branch2(x)

    def forward_with_aux_tap(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return (sum of branches, second branch): e6e's auxiliary head reads the second
        branch's transition output, before the sum."""
        second = self.branch2(x)
        return self.branch1(x) + second, second


def _max_pool(kernel_size: int) -> nn.MaxPool2d:
    return nn.MaxPool2d(kernel_size, stride=1, padding=kernel_size // 2)


class SPPCSPC(nn.Module):
    """Spatial pyramid pooling in a cross-stage-partial block (YOLOv7's SPPCSPC).

    main = 1x1 -> 3x3 -> 1x1; y1 = 3x3(1x1(cat[main, mp5, mp9, mp13])); y2 = 1x1(x);
    out = 1x1(cat[y1, y2]). The hidden width equals ``out_channels`` as in the official code.
    """

    def __init__(self, in_channels: int, out_channels: int, act: str = "silu",
                 pool_sizes: Tuple[int, ...] = (5, 9, 13)):
        super().__init__()
        c = out_channels
        self.main_in = ConvBNAct(in_channels, c, 1, act=act)
        self.shortcut = ConvBNAct(in_channels, c, 1, act=act)
        self.main_3x3 = ConvBNAct(c, c, 3, act=act)
        self.main_1x1 = ConvBNAct(c, c, 1, act=act)
        self.pools = nn.ModuleList(_max_pool(k) for k in pool_sizes)
        self.pool_fuse = ConvBNAct((len(pool_sizes) + 1) * c, c, 1, act=act)
        self.pool_3x3 = ConvBNAct(c, c, 3, act=act)
        self.out = ConvBNAct(2 * c, out_channels, 1, act=act)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.main_1x1(self.main_3x3(self.main_in(x)))
        pooled = torch.cat([main] + [pool(main) for pool in self.pools], dim=1)
        y1 = self.pool_3x3(self.pool_fuse(pooled))
        return self.out(torch.cat([y1, self.shortcut(x)], dim=1))


class SPPTiny(nn.Module):
    """yolov7-tiny's SPP: s, t = 1x1(x); cat[mp13(t), mp9(t), mp5(t), t] -> 1x1; cat[that, s]
    -> 1x1. The pools all read t (not cascaded), largest first, as in the official yaml."""

    def __init__(self, in_channels: int, out_channels: int, act: str = "leaky_relu",
                 pool_sizes: Tuple[int, ...] = (5, 9, 13)):
        super().__init__()
        c = out_channels
        self.shortcut = ConvBNAct(in_channels, c, 1, act=act)
        self.main_in = ConvBNAct(in_channels, c, 1, act=act)
        self.pools = nn.ModuleList(_max_pool(k) for k in pool_sizes)
        self.pool_fuse = ConvBNAct((len(pool_sizes) + 1) * c, c, 1, act=act)
        self.out = ConvBNAct(2 * c, out_channels, 1, act=act)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.main_in(x)
        pooled: List[torch.Tensor] = [pool(t) for pool in reversed(self.pools)] + [t]
        y = self.pool_fuse(torch.cat(pooled, dim=1))
        return self.out(torch.cat([y, self.shortcut(x)], dim=1))


class ConvPoolDown(nn.Module):
    """Two-branch stride-2 down-sampling: cat[3x3 s2 conv after a 1x1 reduce, 1x1 conv after a
    2x2 max-pool], each branch ``out_channels // 2`` wide.

    It is both the official "MP-1" block of yolov7 / yolov7x (``reduce_channels = out/2``,
    pool branch registered first, as its yaml lists it) and ``DownC`` of E6 / D6 / E6E
    (``reduce_channels = in``, conv branch registered first, as its class defines it). The
    registration order only matters for mapping official checkpoints.
    """

    def __init__(self, in_channels: int, out_channels: int, reduce_channels: int,
                 pool_branch_first: bool, act: str = "silu"):
        super().__init__()
        half = out_channels // 2
        self.pool = nn.MaxPool2d(2, 2)
        if pool_branch_first:
            self.pool_conv = ConvBNAct(in_channels, half, 1, act=act)
        self.reduce = ConvBNAct(in_channels, reduce_channels, 1, act=act)
        self.down = ConvBNAct(reduce_channels, half, 3, 2, act=act)
        if not pool_branch_first:
            self.pool_conv = ConvBNAct(in_channels, half, 1, act=act)
        self.out_channels = 2 * half

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, out_channels, H/2, W/2)."""
        return torch.cat([self.down(self.reduce(x)), self.pool_conv(self.pool(x))], dim=1)


class ReOrg(nn.Module):
    """Space-to-depth (the P6 models' first layer): (N, C, H, W) -> (N, 4C, H/2, W/2), with the
    official channel order [even rows/even cols, odd/even, even/odd, odd/odd]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], dim=1
        )
