"""LazyConfig of yolov7-resnet50.yaml: the yolov7 neck and head on detectron2's ResNet-50
(He et al. 2016), whose "res3".."res5" (strides 8/16/32) the neck reads."""
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import BasicStem, ResNet

from ..coco.yolov7 import dataloader, lr_multiplier, model, optimizer, train

# Trained from scratch with the YOLO recipe: trainable BatchNorm, nothing frozen (with
# ImageNet weights detectron2 usually takes FrozenBN and freeze_at=2).
model.backbone.bottom_up = L(ResNet)(
    stem=L(BasicStem)(in_channels=3, out_channels=64, norm="BN"),
    stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=True, norm="BN"),
    out_features=["res3", "res4", "res5"],
    freeze_at=0,
)
model.backbone.in_features = ["res3", "res4", "res5"]
# detectron2's ResNets follow the MSRA (Caffe2) convention of its ImageNet checkpoints: BGR
# input, mean subtracted, std 1 (instead of YOLO's RGB / 255); both mappers then give BGR.
model.pixel_mean = [103.530, 116.280, 123.675]
model.pixel_std = [1.0, 1.0, 1.0]
dataloader.train.mapper.image_format = "BGR"
