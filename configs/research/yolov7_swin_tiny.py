"""LazyConfig of yolov7-swin-tiny.yaml: the yolov7 neck and head on timm's Swin-T (Liu et al.
2021), built for the training size and accepting other sizes (timm's dynamic_img_size)."""
from yolov7_d2.modeling.backbone import TimmBackbone

from detectron2.config import LazyCall as L

from ..coco.yolov7 import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up = L(TimmBackbone)(
    name="swin_tiny_patch4_window7_224",
    out_indices=[1, 2, 3],
    pretrained=False,
    img_size="${dataloader.train.mapper.image_size}",
)
model.backbone.in_features = ["c3", "c4", "c5"]  # timm outputs are named by log2(stride)
# ImageNet mean and std of timm models, in 0..255 RGB units.
model.pixel_mean = [123.675, 116.28, 103.53]
model.pixel_std = [58.395, 57.12, 57.375]
