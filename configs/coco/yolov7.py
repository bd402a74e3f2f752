"""yolov7 (LazyConfig of yolov7.yaml): official COCO recipe, 640 px."""
from ..common.data import dataloader
from ..common.models import yolov7_model
from ..common.optim import lr_multiplier, optimizer
from ..common.train import train

model = yolov7_model("yolov7")
