"""Backbones: the ELAN bottom-up network and the YOLOv7 PAN neck (both detectron2 Backbones)."""
from .elan import ELANBackbone, build_elan_backbone
from .pan import YOLOv7PAN, build_yolov7_pan_backbone

__all__ = [k for k in globals().keys() if not k.startswith("_")]
