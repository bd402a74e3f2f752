"""Backbones: the ELAN bottom-up network, timm models as bottom-up networks, and the YOLOv7 PAN
neck (all detectron2 Backbones)."""
from .elan import ELANBackbone, build_elan_backbone
from .pan import YOLOv7PAN, build_yolov7_pan_backbone
from .timm_backbone import TimmBackbone, build_timm_backbone

__all__ = [k for k in globals().keys() if not k.startswith("_")]
