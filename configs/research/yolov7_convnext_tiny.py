"""LazyConfig of yolov7-convnext-tiny.yaml: the yolov7 neck and head on timm's ConvNeXt-T
(Liu et al. 2022), strides 8/16/32 read as "c3".."c5"."""
from yolov7_d2.modeling.backbone import TimmBackbone

from detectron2.config import LazyCall as L

from ..coco.yolov7 import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up = L(TimmBackbone)(
    name="convnext_tiny",
    out_indices=[1, 2, 3],
    # Needs the weights locally (no hub access here): see TimmBackbone's pretrained_file.
    pretrained=False,
)
model.backbone.in_features = ["c3", "c4", "c5"]  # timm outputs are named by log2(stride)
# timm models are trained on RGB / 255 normalized with the ImageNet mean and std (here in
# 0..255 units), which keeps pretrained weights usable.
model.pixel_mean = [123.675, 116.28, 103.53]
model.pixel_std = [58.395, 57.12, 57.375]
