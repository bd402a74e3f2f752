"""Architecture table of the seven official YOLOv7 scales.

One backbone class, one neck class and one head class build every scale from the rows below,
read off the official ``cfg/training/*.yaml`` (channel widths as in the yaml, before any
``WIDTH_MULTIPLE`` scaling). Names follow the paper: ELAN in the backbone, ELAN-H (all chain
outputs concatenated) in the neck, E-ELAN (two summed ELAN branches) in e6e.
"""
import math
from dataclasses import dataclass
from typing import Dict, Tuple

__all__ = [
    "ELANSpec", "DownSpec", "StageSpec", "TopDownSpec", "BottomUpSpec", "YOLOv7Arch",
    "ARCHS", "get_arch", "scale_width",
]


@dataclass(frozen=True)
class ELANSpec:
    """An ELAN block: entry width, 3x3 chain width, chain depth, output width, concat taps."""

    hidden: int
    mid: int
    depth: int
    out: int
    taps: str = "alternate"


@dataclass(frozen=True)
class DownSpec:
    """A stride-2 step. kind: "conv" (Conv3x3 s2), "mp" (yolov7's MP-1: max-pool and conv
    branches, reduce width out/2), "downc" (DownC: reduce width = input width) or
    "maxpool" (tiny: a bare 2x2 max-pool, width unchanged, ``out`` ignored)."""

    kind: str
    out: int = 0


@dataclass(frozen=True)
class StageSpec:
    """A backbone stage: down-sampling then an ELAN block; its output has stride 2x the last."""

    down: DownSpec
    block: ELANSpec


@dataclass(frozen=True)
class TopDownSpec:
    """An FPN (top-down) level: 1x1 ``reduce`` on the coarser feature before 2x nearest
    up-sampling, 1x1 ``lateral`` on the backbone feature, then cat[lateral, up] -> block."""

    reduce: int
    lateral: int
    block: ELANSpec


@dataclass(frozen=True)
class BottomUpSpec:
    """A PAN (bottom-up) level: down-sample the finer output, cat[down, FPN feature] -> block."""

    down: DownSpec
    block: ELANSpec


@dataclass(frozen=True)
class YOLOv7Arch:
    """One official YOLOv7 scale.

    Attributes:
        stem: (out_channels, kernel, stride) Conv-BN-act layers, after ``ReOrg`` if ``reorg``.
        stages: backbone stages; the first has stride 4 ("c2"), each next doubles it.
        e_elan: every backbone and neck block is an E-ELAN (two summed ELAN branches).
        spp: ("sppcspc" | "spp_tiny", out_channels) on the coarsest backbone output.
        top_down: FPN levels from the second-coarsest down to stride 8.
        bottom_up: PAN levels from stride 16 up to the coarsest.
        head_convs / head_conv_type: the 3x3 conv ("conv" or "repconv") before each lead
            prediction conv, stride 8 first. aux_convs: same for the auxiliary head (P6 only).
        anchors: (w, h) pixel pairs per level, stride 8 first.
    """

    act: str
    stem: Tuple[Tuple[int, int, int], ...]
    reorg: bool
    stages: Tuple[StageSpec, ...]
    e_elan: bool
    spp: Tuple[str, int]
    top_down: Tuple[TopDownSpec, ...]
    bottom_up: Tuple[BottomUpSpec, ...]
    head_convs: Tuple[int, ...]
    head_conv_type: str
    aux_convs: Tuple[int, ...]
    anchors: Tuple[Tuple[float, ...], ...]

    @property
    def num_levels(self) -> int:
        return len(self.head_convs)


def scale_width(channels: int, multiple: float) -> int:
    """Official ``width_multiple`` rounding: ceil(channels * multiple / 8) * 8."""
    if multiple == 1.0:
        return channels
    return int(math.ceil(channels * multiple / 8) * 8)


def _elan(hidden, mid, depth, out, taps="alternate"):
    return ELANSpec(hidden, mid, depth, out, taps)


def _stages(down_kind, downs, blocks):
    return tuple(StageSpec(DownSpec(down_kind, d), b) for d, b in zip(downs, blocks))


_P5_ANCHORS = ((12, 16, 19, 36, 40, 28), (36, 75, 76, 55, 72, 146), (142, 110, 192, 243, 459, 401))
_P6_ANCHORS = (
    (19, 27, 44, 40, 38, 94), (96, 68, 86, 152, 180, 137),
    (140, 301, 303, 264, 238, 542), (436, 615, 739, 380, 925, 792),
)

_TINY = YOLOv7Arch(
    act="leaky_relu",
    stem=((32, 3, 2),),
    reorg=False,
    stages=(StageSpec(DownSpec("conv", 64), _elan(32, 32, 2, 64, "all")),)
    + _stages("maxpool", (0, 0, 0), [_elan(w, w, 2, 2 * w, "all") for w in (64, 128, 256)]),
    e_elan=False,
    spp=("spp_tiny", 256),
    top_down=(
        TopDownSpec(128, 128, _elan(64, 64, 2, 128, "all")),
        TopDownSpec(64, 64, _elan(32, 32, 2, 64, "all")),
    ),
    bottom_up=(
        BottomUpSpec(DownSpec("conv", 128), _elan(64, 64, 2, 128, "all")),
        BottomUpSpec(DownSpec("conv", 256), _elan(128, 128, 2, 256, "all")),
    ),
    head_convs=(128, 256, 512),
    head_conv_type="conv",
    aux_convs=(),
    anchors=((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326)),
)

_L = YOLOv7Arch(
    act="silu",
    stem=((32, 3, 1), (64, 3, 2), (64, 3, 1)),
    reorg=False,
    stages=(StageSpec(DownSpec("conv", 128), _elan(64, 64, 4, 256)),)
    + _stages(
        "mp", (256, 512, 1024),
        [_elan(128, 128, 4, 512), _elan(256, 256, 4, 1024), _elan(256, 256, 4, 1024)],
    ),
    e_elan=False,
    spp=("sppcspc", 512),
    top_down=(
        TopDownSpec(256, 256, _elan(256, 128, 4, 256, "all")),
        TopDownSpec(128, 128, _elan(128, 64, 4, 128, "all")),
    ),
    bottom_up=(
        BottomUpSpec(DownSpec("mp", 256), _elan(256, 128, 4, 256, "all")),
        BottomUpSpec(DownSpec("mp", 512), _elan(512, 256, 4, 512, "all")),
    ),
    head_convs=(256, 512, 1024),
    head_conv_type="repconv",
    aux_convs=(),
    anchors=_P5_ANCHORS,
)

_X = YOLOv7Arch(
    act="silu",
    stem=((40, 3, 1), (80, 3, 2), (80, 3, 1)),
    reorg=False,
    stages=(StageSpec(DownSpec("conv", 160), _elan(64, 64, 6, 320)),)
    + _stages(
        "mp", (320, 640, 1280),
        [_elan(128, 128, 6, 640), _elan(256, 256, 6, 1280), _elan(256, 256, 6, 1280)],
    ),
    e_elan=False,
    spp=("sppcspc", 640),
    # yolov7x's neck uses backbone-style ELAN blocks (alternate taps, equal widths).
    top_down=(
        TopDownSpec(320, 320, _elan(256, 256, 6, 320)),
        TopDownSpec(160, 160, _elan(128, 128, 6, 160)),
    ),
    bottom_up=(
        BottomUpSpec(DownSpec("mp", 320), _elan(256, 256, 6, 320)),
        BottomUpSpec(DownSpec("mp", 640), _elan(512, 512, 6, 640)),
    ),
    head_convs=(320, 640, 1280),
    head_conv_type="conv",
    aux_convs=(),
    anchors=_P5_ANCHORS,
)


def _p6(stem_width, down_kind, stage_outs, depth, spp, neck_outs, head_convs, aux_convs, e_elan):
    """The P6 scales share one layout: ReOrg stem, five backbone stages with ELAN chain widths
    64..512, ELAN-H neck blocks whose entry width is (128, 256, 384, 512) at strides 8..64 and
    whose chain width is half that, four levels and an auxiliary head."""
    stage_widths = (64, 128, 256, 384, 512)
    neck_hidden = (128, 256, 384, 512)  # ELAN-H entry width at strides 8, 16, 32, 64
    p3, p4, p5, p6 = neck_outs  # FPN P3 / PAN P4, P5, P6 output widths
    fpn_outs = {3: p3, 4: p4, 5: p5}

    def neck_block(level, out):
        hidden = neck_hidden[level - 3]
        return _elan(hidden, hidden // 2, depth, out, "all")

    return YOLOv7Arch(
        act="silu",
        stem=((stem_width, 3, 1),),
        reorg=True,
        stages=_stages(
            down_kind, stage_outs, [_elan(w, w, depth, o) for w, o in zip(stage_widths, stage_outs)]
        ),
        e_elan=e_elan,
        spp=("sppcspc", spp),
        top_down=tuple(
            TopDownSpec(fpn_outs[level], fpn_outs[level], neck_block(level, fpn_outs[level]))
            for level in (5, 4, 3)
        ),
        bottom_up=tuple(
            BottomUpSpec(DownSpec(down_kind, out), neck_block(level, out))
            for level, out in ((4, p4), (5, p5), (6, p6))
        ),
        head_convs=head_convs,
        head_conv_type="conv",
        aux_convs=aux_convs,
        anchors=_P6_ANCHORS,
    )


_E6_LIKE = dict(
    stem_width=80, down_kind="downc", stage_outs=(160, 320, 640, 960, 1280), depth=6, spp=640,
    neck_outs=(160, 320, 480, 640), head_convs=(320, 640, 960, 1280),
    aux_convs=(320, 640, 960, 1280),
)

ARCHS: Dict[str, YOLOv7Arch] = {
    "yolov7-tiny": _TINY,
    "yolov7": _L,
    "yolov7x": _X,
    "yolov7-w6": _p6(
        stem_width=64, down_kind="conv", stage_outs=(128, 256, 512, 768, 1024), depth=4, spp=512,
        neck_outs=(128, 256, 384, 512), head_convs=(256, 512, 768, 1024),
        aux_convs=(320, 640, 960, 1280), e_elan=False,
    ),
    "yolov7-e6": _p6(**_E6_LIKE, e_elan=False),
    "yolov7-d6": _p6(
        stem_width=96, down_kind="downc", stage_outs=(192, 384, 768, 1152, 1536), depth=8,
        spp=768, neck_outs=(192, 384, 576, 768), head_convs=(384, 768, 1152, 1536),
        aux_convs=(384, 768, 1152, 1536), e_elan=False,
    ),
    "yolov7-e6e": _p6(**_E6_LIKE, e_elan=True),
}


def get_arch(name: str) -> YOLOv7Arch:
    """Look up an architecture by its official name (e.g. "yolov7-tiny", "yolov7-e6e")."""
    if name not in ARCHS:
        raise KeyError(
            f"Unknown YOLOv7 architecture {name!r} (cfg.MODEL.YOLOV7.ARCH); "
            f"choose one of {sorted(ARCHS)}."
        )
    return ARCHS[name]
