"""The YOLOv7 trainer: official optimisation recipe on detectron2's DefaultTrainer."""
import logging
import math
import os
import random
import time
import weakref
from typing import List, Optional

import torch
from torch.nn import functional as F

from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.engine.defaults import create_ddp_model
from detectron2.structures import Boxes, Instances
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint import YOLOv7Checkpointer
from ..data import (
    YOLOv7MosaicMapper,
    YOLOv7TrainLoader,
    build_yolov7_test_loader,
    build_yolov7_test_mapper,
    build_yolov7_train_loader,
)
from ..data.validate import check_datasets, dataset_dicts_from_config
from ..evaluation import YOLOv7COCOEvaluator
from ..evaluation.artifacts import YOLOv7ArtifactsEvaluator, YOLOv7Evaluators
from ..numerics import BufferSnapshot, check_finite_parameters, non_finite_loss_error
from ..utils.amp import autocast_dtype
from .ema import ModelEMA, unwrap_model
from .hooks import AnchorCheckHook, EarlyStop, TrainingArtifactsHook, yolov7_training_hooks
from .optimizer import build_yolov7_optimizer
from .schedule import YOLOv7LRScheduler, accumulation_steps, nominal_weight_decay

__all__ = ["YOLOv7TrainLoop", "YOLOv7Trainer", "MultiScale", "yolov7_train_loop"]

logger = logging.getLogger(__name__)


def train_class_names(cfg) -> List[str]:
    """``thing_classes`` of the first training dataset (empty if it has none)."""
    if not cfg.DATASETS.TRAIN:
        return []
    return list(MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("thing_classes", []))


class MultiScale:
    """Official ``--multi-scale``: resize a whole mapped batch by one random factor so that
    its long side becomes a random multiple of ``stride`` in [0.5, 1.5] x ``image_size``
    (bilinear), scaling the ground-truth boxes with it."""

    def __init__(self, image_size: int, stride: int, seed: int = 0):
        self.image_size, self.stride = image_size, stride
        self.rng = random.Random(seed)

    def __call__(self, batch):
        low, high = int(self.image_size * 0.5), int(self.image_size * 1.5) + self.stride
        target = self.rng.randrange(low, high) // self.stride * self.stride
        for sample in batch:
            image = sample["image"]
            h, w = image.shape[-2:]
            factor = target / max(h, w)
            new_h = math.ceil(h * factor / self.stride) * self.stride
            new_w = math.ceil(w * factor / self.stride) * self.stride
            sample["image"] = F.interpolate(image[None].float(), size=(new_h, new_w),
                                            mode="bilinear", align_corners=False)[0]
            if "instances" in sample:
                instances = sample["instances"]
                boxes = instances.gt_boxes.tensor * torch.tensor([new_w / w, new_h / h] * 2)
                sample["instances"] = Instances((new_h, new_w), gt_boxes=Boxes(boxes),
                                                gt_classes=instances.gt_classes)
            sample["height"], sample["width"] = new_h, new_w
        return batch


class YOLOv7TrainLoop(SimpleTrainer):
    """One training iteration as official train.py: (optionally mixed-precision) forward and
    backward every batch, an optimizer step only every ``accumulation(iteration)`` batches
    (gradient accumulation to the nominal batch), then the EMA update.

    A non-finite loss stops training with ``FloatingPointError`` (as detectron2's
    ``SimpleTrainer``) naming the loss terms and the iteration, after restoring the BatchNorm
    statistics that the batch's forward pass wrote; so do non-finite weights after an
    optimizer step, before the EMA update (:mod:`yolov7_d2.numerics`). A float16 step that
    the gradient scaler skips (gradients overflowed) is no fault and updates no EMA.

    :meth:`state_dict` holds what a run resumed from a checkpoint needs to go on as the
    uninterrupted run: the optimizer (momentum buffers, current learning rates and momentum),
    the gradient scaler, the accumulation phase with the gradients accumulated since the last
    optimizer step, the multi-scale random state, and the seeds of a
    :class:`~yolov7_d2.data.YOLOv7TrainLoader`, which restarts at the next iteration's batch.
    """

    def __init__(self, model, data_loader, optimizer, *, accumulation, ema: Optional[ModelEMA],
                 amp: bool = False, multi_scale: Optional[MultiScale] = None):
        super().__init__(model, data_loader, optimizer)
        self.accumulation, self.ema, self.multi_scale = accumulation, ema, multi_scale
        # AMP: float16 with a gradient scaler on CUDA; bfloat16 (float32's exponent range, no
        # scaler needed) on CPUs that compute it natively, float32 on the others.
        self.amp_device = next(model.parameters()).device.type
        self.amp_dtype = autocast_dtype(amp, self.amp_device)
        self.amp = self.amp_dtype is not None
        self.grad_scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self._buffers = BufferSnapshot()  # to undo a bad batch's BatchNorm statistics
        # The iteration of the last optimizer step, or the one before the first iteration;
        # None: not known yet in this process (set at the first batch).
        self._last_step: Optional[int] = None

    def state_dict(self):
        state = super().state_dict()  # iteration, optimizer
        state["grad_scaler"] = self.grad_scaler.state_dict()  # {} when disabled
        state["last_step"] = self._last_step
        # Empty right after an optimizer step (gradients set to None).
        state["accumulated_grads"] = {
            name: p.grad for name, p in unwrap_model(self.model).named_parameters()
            if p.grad is not None}
        if self.multi_scale is not None:
            state["multi_scale_rng"] = self.multi_scale.rng.getstate()
        if isinstance(self.data_loader, YOLOv7TrainLoader):
            state["data"] = self.data_loader.state_dict()
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        # .get: checkpoints of older versions (LazyConfig training) hold the optimizer only.
        if state.get("grad_scaler"):  # a scaler saved disabled leaves a new one as it is
            self.grad_scaler.load_state_dict(state["grad_scaler"])
        self._last_step = state.get("last_step")
        params = dict(unwrap_model(self.model).named_parameters())
        for name, grad in state.get("accumulated_grads", {}).items():
            params[name].grad = grad.to(params[name].device)
        if self.multi_scale is not None and "multi_scale_rng" in state:
            self.multi_scale.rng.setstate(state["multi_scale_rng"])
        if isinstance(self.data_loader, YOLOv7TrainLoader) and "data" in state:
            self.data_loader.load_state_dict(state["data"])
        self.seek_data(self.iter + 1)

    def seek_data(self, iteration: int) -> None:
        """Make the next batch the one of ``iteration`` (a :class:`YOLOv7TrainLoader`; other
        loaders restart from their beginning)."""
        if isinstance(self.data_loader, YOLOv7TrainLoader):
            self.data_loader.start_iter = iteration
        else:
            logger.warning("%s cannot start at iteration %d: the data restart from their "
                           "beginning", type(self.data_loader).__name__, iteration)
        self._data_loader_iter = iter(self.data_loader)

    def run_step(self):
        assert self.model.training, "[YOLOv7TrainLoop] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        if self.multi_scale is not None:
            data = self.multi_scale(data)
        data_time = time.perf_counter() - start
        if self._last_step is None:  # not "< 0": -1 is the start of a run from iteration 0
            self._last_step = self.iter - 1
            self.optimizer.zero_grad(set_to_none=True)
        self._buffers.save(self.model)
        with torch.autocast(self.amp_device, dtype=self.amp_dtype, enabled=self.amp):
            loss_dict = self.model(data)
        losses = sum(loss_dict.values())
        if not torch.isfinite(losses):
            self._stop_on_non_finite_loss(loss_dict, data)
        # The loss is a sum over this process's images and DDP averages the gradients over
        # processes: scaling by the world size makes the step a sum over the whole batch, as
        # official train.py does (loss *= world_size), so BASE_LR means the same whatever the
        # number of GPUs. The logged losses stay per process.
        self.grad_scaler.scale(losses * comm.get_world_size()).backward()
        self._write_metrics(loss_dict, data_time)
        if self.iter - self._last_step >= self.accumulation(self.iter):
            stepped = self._optimizer_step()
            if stepped and self.ema is not None:
                self.ema.update(self.model)
            self._last_step = self.iter

    def _optimizer_step(self) -> bool:
        """The (scaled) optimizer step; False if the gradient scaler skipped it: float16
        gradients overflowed, and GradScaler halved its scale to try again (no fault).
        Raises ``FloatingPointError`` if the step made any weight non-finite."""
        scale = self.grad_scaler.get_scale() if self.grad_scaler.is_enabled() else None
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if scale is not None and self.grad_scaler.get_scale() < scale:
            return False  # the scale only ever shrinks on a skipped step
        check_finite_parameters(self.model, self.iter)
        return True

    def _stop_on_non_finite_loss(self, loss_dict, data):
        """Undo the BatchNorm statistics the batch wrote, then raise ``FloatingPointError``
        naming the loss terms, the iteration and any non-finite input of the batch."""
        self._buffers.restore()
        raise non_finite_loss_error(loss_dict, self.iter, data)


def yolov7_train_loop(model, data_loader, optimizer, *, ema: Optional[ModelEMA], amp: bool,
                      batch_size: int, nominal_batch_size: int, warmup_iters: int,
                      multi_scale_size: int = 0, seed: int = 0) -> YOLOv7TrainLoop:
    """The YOLOv7 training loop of both entry points: gradients accumulated to
    ``nominal_batch_size`` images (ramped up during the ``warmup_iters``), AMP where it pays,
    the EMA update after each optimizer step, and official multi-scale training around the
    training size ``multi_scale_size`` (0: off). ``batch_size``: images per iteration over all
    processes; ``model``: maybe wrapped in DistributedDataParallel."""
    multi_scale = None
    if multi_scale_size:
        stride = unwrap_model(model).backbone.size_divisibility
        multi_scale = MultiScale(multi_scale_size, stride, seed=max(seed, 0))
    return YOLOv7TrainLoop(
        model, data_loader, optimizer, ema=ema, amp=amp,
        accumulation=lambda it: accumulation_steps(it, warmup_iters, batch_size,
                                                   nominal_batch_size),
        multi_scale=multi_scale,
    )


class YOLOv7Trainer(DefaultTrainer):
    """``DefaultTrainer`` with the YOLOv7 recipe: mosaic data, SGD with three parameter groups,
    warm-up then cosine/linear decay, gradient accumulation to SOLVER.YOLOV7.NOMINAL_BATCH_SIZE,
    model EMA (evaluated and checkpointed), optional AMP (SOLVER.AMP.ENABLED)."""

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = self.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        solver = cfg.SOLVER.YOLOV7
        self.ema = (ModelEMA(model, solver.EMA_DECAY, solver.EMA_TAU)
                    if solver.EMA_DECAY > 0 else None)
        optimizer = self.build_optimizer(cfg, model)
        # Unregistered datasets, a class count other than the model's, bad evaluation images:
        # reported now, not at the first evaluation (training images: when the mapper loads
        # its dataset).
        check_datasets(cfg)
        #: The training mapper and its dataset (what the loader samples and the hooks read).
        self.mapper = self.build_train_mapper(cfg)
        data_loader = self.build_train_loader(cfg, self.mapper)
        # CPU modules take no device_ids (a gloo process group on CPU-only machines).
        on_cpu = next(model.parameters()).device.type == "cpu"
        ddp_devices = {"device_ids": None} if on_cpu else {}
        model = create_ddp_model(model, broadcast_buffers=False, **ddp_devices)
        self._trainer = yolov7_train_loop(
            model, data_loader, optimizer, ema=self.ema, amp=cfg.SOLVER.AMP.ENABLED,
            batch_size=cfg.SOLVER.IMS_PER_BATCH, nominal_batch_size=solver.NOMINAL_BATCH_SIZE,
            warmup_iters=cfg.SOLVER.WARMUP_ITERS,
            multi_scale_size=cfg.INPUT.YOLOV7.IMAGE_SIZE if cfg.INPUT.YOLOV7.MULTI_SCALE else 0,
            seed=cfg.SEED)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        extra = {"ema": self.ema} if self.ema is not None else {}
        # MODEL.WEIGHTS of another class count (official COCO weights) are fine-tuned: their
        # class-independent tensors are loaded, with a table in the log (finetune.py).
        self.checkpointer = YOLOv7Checkpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self), finetune=True,
            class_names=train_class_names(cfg),
            keep_shared_classes=cfg.MODEL.YOLOV7.KEEP_SHARED_CLASSES, **extra)
        self.start_iter, self.max_iter, self.cfg = 0, cfg.SOLVER.MAX_ITER, cfg
        self.last_eval_results = None
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_optimizer(cls, cfg, model):
        weight_decay = nominal_weight_decay(cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.IMS_PER_BATCH,
                                            cfg.SOLVER.YOLOV7.NOMINAL_BATCH_SIZE)
        return build_yolov7_optimizer(
            model, base_lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM,
            weight_decay=weight_decay, nesterov=cfg.SOLVER.YOLOV7.NESTEROV,
            name=cfg.SOLVER.YOLOV7.OPTIMIZER,
        )

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        solver = cfg.SOLVER.YOLOV7
        return YOLOv7LRScheduler(
            optimizer, max_iter=cfg.SOLVER.MAX_ITER, warmup_iters=cfg.SOLVER.WARMUP_ITERS,
            warmup_bias_lr=solver.WARMUP_BIAS_LR, warmup_momentum=solver.WARMUP_MOMENTUM,
            momentum=cfg.SOLVER.MOMENTUM, final_ratio=solver.FINAL_LR_RATIO, decay=solver.LR_DECAY,
        )

    @classmethod
    def build_train_mapper(cls, cfg) -> YOLOv7MosaicMapper:
        """The training mapper, with the validated DATASETS.TRAIN it samples from."""
        return YOLOv7MosaicMapper(cfg, is_train=True)

    @classmethod
    def build_train_loader(cls, cfg, mapper: Optional[YOLOv7MosaicMapper] = None):
        return build_yolov7_train_loader(cfg, mapper)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        # Images decoded (cached) and checked; an unreadable one is skipped with a warning.
        dicts = dataset_dicts_from_config(cfg, [dataset_name], "DATASETS.TEST")
        return build_yolov7_test_loader(dicts, mapper=build_yolov7_test_mapper(cfg),
                                        num_workers=cfg.DATALOADER.NUM_WORKERS)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        # TEST.YOLOV7.EVAL_BACKEND: "pycocotools" (detectron2's C++ COCOeval when detectron2._C
        # is built, else pycocotools) or "faster_coco_eval" (same numbers, several times faster).
        coco = YOLOv7COCOEvaluator(dataset_name, output_dir=output_folder,
                                   backend=cfg.TEST.YOLOV7.EVAL_BACKEND)
        if not cfg.TEST.YOLOV7.ARTIFACTS:
            return coco
        # Curves, confusion matrix, drawn predictions; a row of results.csv in OUTPUT_DIR.
        artifacts = YOLOv7ArtifactsEvaluator(dataset_name, cfg.OUTPUT_DIR,
                                             num_vis_images=cfg.TEST.YOLOV7.NUM_VIS_IMAGES,
                                             max_iter=cfg.SOLVER.MAX_ITER)
        return YOLOv7Evaluators([coco, artifacts])

    def build_hooks(self):
        cfg = self.cfg
        return yolov7_training_hooks(
            self, checkpointer=self.checkpointer, checkpoint_period=cfg.SOLVER.CHECKPOINT_PERIOD,
            eval_period=cfg.TEST.EVAL_PERIOD, test=lambda model: self.test(self.cfg, model),
            best_metric=cfg.TEST.YOLOV7.BEST_METRIC if cfg.DATASETS.TEST else "",
            early_stop_patience=cfg.TEST.YOLOV7.EARLY_STOP_PATIENCE,
            writers=self.build_writers() if comm.is_main_process() else None,
            start_hooks=self._start_hooks())

    def _start_hooks(self):
        """Training artefacts (labels.png, train_batch.jpg) and the anchor check."""
        cfg, ret = self.cfg, []
        if comm.is_main_process() and cfg.TEST.YOLOV7.ARTIFACTS:
            ret.append(TrainingArtifactsHook(
                cfg.OUTPUT_DIR, self.mapper, class_names=train_class_names(cfg),
                num_images=cfg.TEST.YOLOV7.NUM_VIS_IMAGES, seed=cfg.SEED))
        yolo = cfg.MODEL.YOLOV7
        if yolo.ANCHOR_CHECK_MIN_BPR > 0 and self.mapper.dataset is not None:
            # Best possible recall of the model's anchors on the training boxes; if low, new
            # anchors (MODEL.YOLOV7.AUTOANCHOR) or a warning.
            ret.append(AnchorCheckHook(
                self.mapper.dataset, image_size=cfg.INPUT.YOLOV7.IMAGE_SIZE,
                anchor_t=yolo.LOSS.ANCHOR_T, min_bpr=yolo.ANCHOR_CHECK_MIN_BPR,
                autoanchor=yolo.AUTOANCHOR, seed=max(cfg.SEED, 0),
                config_hint=f"CONFIG (the full one: {cfg.OUTPUT_DIR}/config.yaml)"))
        return ret

    def state_dict(self):
        # detectron2 0.6's DefaultTrainer saves only the iteration and the hooks' states.
        state = super().state_dict()
        state["_trainer"] = self._trainer.state_dict()
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if "_trainer" in state:
            self._trainer.load_state_dict(state["_trainer"])
            return
        logger.warning("The checkpoint holds no optimizer state (an older version wrote it): "
                       "momentum restarts from zero, and the first step uses the initial "
                       "learning rates.")
        self._trainer.seek_data(self.iter + 1)

    def resume_or_load(self, resume=True):
        """As ``DefaultTrainer``'s; unless a checkpoint is resumed (with its EMA state), the EMA
        starts from the loaded weights, not from the random ones it was built from."""
        resumed = resume and self.checkpointer.has_checkpoint()
        super().resume_or_load(resume)
        if self.ema is not None and not resumed:
            self.ema.ema.load_state_dict(unwrap_model(self.model).state_dict())

    def train(self):
        """Train from ``start_iter`` to ``max_iter`` or until early stopping
        (TEST.YOLOV7.EARLY_STOP_PATIENCE); returns the last evaluation results."""
        try:
            super().train()
        except EarlyStop:
            pass  # a clean end: the hook logged why and saved model_final
        return self.last_eval_results

    def model_for_evaluation(self):
        """The EMA model when EMA is on (official: the EMA weights are evaluated), else the
        model."""
        return self.ema.ema if self.ema is not None else unwrap_model(self.model)
