"""Training: the YOLOv7 trainer, its optimizer, schedule and EMA."""
from .ema import ModelEMA, unwrap_model
from .epochs import (
    EpochSchedule,
    count_training_images,
    resolve_epoch_schedule,
    resolve_lazy_epoch_schedule,
)
from .hooks import (
    AnchorCheckHook,
    EarlyStop,
    EarlyStopHook,
    TrainingArtifactsHook,
    best_model_hooks,
    yolov7_training_hooks,
)
from .optimizer import build_yolov7_optimizer, yolov7_param_groups
from .run_setup import prepare_bundled_datasets, setup_yolov7_run
from .schedule import (
    YOLOv7LRScheduler,
    accumulation_steps,
    lr_factor,
    nominal_accumulation,
    nominal_weight_decay,
)
from .time_budget import resolve_time_budget
from .trainer import MultiScale, YOLOv7Trainer, YOLOv7TrainLoop, yolov7_train_loop

__all__ = [k for k in globals().keys() if not k.startswith("_")]
