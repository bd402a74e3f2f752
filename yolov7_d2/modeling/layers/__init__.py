"""Layers of YOLOv7, each in the form the official checkpoints store it."""
from .blocks import EELAN, ELAN, SPPCSPC, ConvPoolDown, ReOrg, SPPTiny
from .conv import ConvBNAct, RepConv, build_activation, fuse_conv_bn
from .implicit import ImplicitA, ImplicitM

__all__ = [k for k in globals().keys() if not k.startswith("_")]
