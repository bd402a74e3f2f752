"""LazyConfig of yolov7-pvtv2-b0.yaml: the yolov7-tiny neck and head on timm's PVTv2-b0
transformer (Wang et al. 2022), which takes any input size."""
from yolov7_d2.modeling.backbone import TimmBackbone

from detectron2.config import LazyCall as L

from ..coco.yolov7_tiny import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up = L(TimmBackbone)(name="pvt_v2_b0", out_indices=[1, 2, 3],
                                           pretrained=False)
model.backbone.in_features = ["c3", "c4", "c5"]  # timm outputs are named by log2(stride)
# ImageNet mean and std of timm models, in 0..255 RGB units.
model.pixel_mean = [123.675, 116.28, 103.53]
model.pixel_std = [58.395, 57.12, 57.375]
