"""YOLOv7 model parts; importing this module registers them with detectron2."""
from .arch import ARCHS, YOLOv7Arch, get_arch
from .assigner import YOLOv7Assigner
from .backbone import ELANBackbone, YOLOv7PAN, build_elan_backbone, build_yolov7_pan_backbone
from .box_coder import decode_boxes, decode_predictions
from .head import YOLOv7Head
from .loss import YOLOv7Loss
from .meta_arch import YOLOv7
from .reparam import fold_implicit_knowledge, reparameterize

__all__ = [k for k in globals().keys() if not k.startswith("_")]
