"""yolov7-w6 (LazyConfig of yolov7-w6.yaml): P6 scale, 1280 px, auxiliary head in training,
hyp.scratch.p6.yaml. The other P6 configs start from this one."""
from ..common.data import dataloader
from ..common.models import yolov7_model
from ..common.optim import lr_multiplier, optimizer
from ..common.train import train

model = yolov7_model("yolov7-w6")
dataloader.train.mapper.image_size = 1280
dataloader.test.mapper.stride = 64
lr_multiplier.final_ratio = 0.2  # hyp.scratch.p6.yaml lrf
