"""yolov7-e6e (LazyConfig of yolov7-e6e.yaml): the P6 recipe of yolov7_w6.py."""
from ..common.models import yolov7_model
from .yolov7_w6 import dataloader, lr_multiplier, optimizer, train

model = yolov7_model("yolov7-e6e")
