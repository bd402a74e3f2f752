"""yolov7-tiny (LazyConfig of yolov7-tiny.yaml): hyp.scratch.tiny.yaml, 640 px."""
from ..common.data import dataloader
from ..common.models import yolov7_model
from ..common.optim import lr_multiplier, optimizer
from ..common.train import train

model = yolov7_model("yolov7-tiny")
# hyp.scratch.tiny.yaml: other gains, milder augmentation, decay to 1% of the LR.
model.loss.cls_gain = 0.5
model.loss.obj_gain = 1.0
dataloader.train.mapper.perspective.translate = 0.1
dataloader.train.mapper.perspective.scale = 0.5
dataloader.train.mapper.mix.mixup = 0.05
dataloader.train.mapper.mix.paste_in = 0.05
lr_multiplier.final_ratio = 0.01
