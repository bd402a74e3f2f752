"""The hooks of a YOLOv7 training run (besides detectron2's own), and the one list of hooks
that both entry points, train_net.py (:class:`~.trainer.YOLOv7Trainer`) and
tools/lazyconfig_train_net.py, register (:func:`yolov7_training_hooks`)."""
import copy
import logging
import math
import os
from collections import Counter
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from detectron2.engine import hooks
from detectron2.engine.train_loop import HookBase
from detectron2.utils import comm

from ..anchors import check_anchors
from ..evaluation.artifacts import draw_mapped_sample
from ..evaluation.metrics import ground_truth_of
from ..modeling.box_ops import xyxy_to_cxcywh
from ..utils import plots
from .distributed import average_batchnorm_buffers
from .ema import unwrap_model

__all__ = ["EarlyStop", "EarlyStopHook", "AnchorCheckHook", "TrainingArtifactsHook",
           "best_model_hooks", "yolov7_training_hooks"]

logger = logging.getLogger(__name__)


class EarlyStop(BaseException):
    """Ends training from a hook. A ``BaseException``, like ``KeyboardInterrupt``, so that
    detectron2's train loop does not log it as a failure; the loop still runs every hook's
    ``after_train`` (writers flushed) and the trainer catches it."""


class EarlyStopHook(HookBase):
    """Stops training after ``patience`` evaluations in a row whose ``metric`` (higher is
    better) is not above the best so far (like YOLOv5's ``--patience``, which counts epochs).
    Before stopping it saves ``model_final`` with ``checkpointer``: detectron2's
    PeriodicCheckpointer only does so at ``max_iter``.

    Runs on every process: the main process, which holds the evaluation results, decides.
    Must come after the ``EvalHook`` of the same ``eval_period``.
    """

    def __init__(self, eval_period: int, metric: str, patience: int, checkpointer):
        self.period, self.metric, self.patience = eval_period, metric, patience
        self.checkpointer = checkpointer
        self.best: Optional[float] = None
        self.best_iter, self.bad_evals = -1, 0

    def state_dict(self):
        """The best value so far and the evaluations since: kept across ``--resume``."""
        return {"best": self.best, "best_iter": self.best_iter, "bad_evals": self.bad_evals}

    def load_state_dict(self, state):
        self.best, self.best_iter, self.bad_evals = (
            state["best"], state["best_iter"], state["bad_evals"])

    def _update(self) -> bool:
        """Takes the evaluation just made into account; True when training should stop."""
        latest = self.trainer.storage.latest().get(self.metric)
        if latest is None:
            return False
        value, iteration = latest
        if not math.isnan(value) and (self.best is None or value > self.best):
            self.best, self.best_iter, self.bad_evals = value, iteration, 0
        else:
            self.bad_evals += 1
        return self.bad_evals >= self.patience

    def after_step(self):
        next_iter = self.trainer.iter + 1
        # The conditions of EvalHook's periodic evaluation: there are new results.
        if self.period <= 0 or next_iter % self.period or next_iter == self.trainer.max_iter:
            return
        stop = self._update() if comm.is_main_process() else False
        if not comm.all_gather(stop)[0]:
            return
        logger.info(
            "Early stopping at iteration %d: %s has not improved for %d evaluations (best "
            "%.4f at iteration %d; TEST.YOLOV7.EARLY_STOP_PATIENCE %d).", self.trainer.iter,
            self.metric, self.bad_evals, self.best if self.best is not None else math.nan,
            self.best_iter, self.patience)
        self.checkpointer.save("model_final", iteration=self.trainer.iter)
        raise EarlyStop(f"no {self.metric} improvement in {self.patience} evaluations")


class _UntaggedSaves:
    """``checkpointer`` whose saves leave ``last_checkpoint``, the file that ``--resume``
    loads, as it was: model_best.pth is not the latest state of training."""

    def __init__(self, checkpointer):
        self.checkpointer = checkpointer

    def save(self, name: str, **kwargs) -> None:
        self.checkpointer.save(name, tag_last=False, **kwargs)


class _BestCheckpointer(hooks.BestCheckpointer):
    """detectron2's ``BestCheckpointer`` whose best value is saved in the checkpoints, so
    that after ``--resume`` a worse evaluation does not overwrite model_best.pth."""

    def state_dict(self):
        return {"best_metric": self.best_metric, "best_iter": self.best_iter}

    def load_state_dict(self, state):
        self.best_metric, self.best_iter = state["best_metric"], state["best_iter"]


def best_model_hooks(eval_period: int, checkpointer, metric: str,
                     patience: int = 0) -> List[HookBase]:
    """Hooks to place right after the ``EvalHook``: detectron2's ``BestCheckpointer`` saving
    ``model_best.pth`` whenever ``metric`` (e.g. "bbox/AP") is the highest so far (main
    process), and :class:`EarlyStopHook` when ``patience`` > 0. None when ``metric`` is "".
    ``checkpointer``: a :class:`~yolov7_d2.checkpoint.YOLOv7Checkpointer`. Both hooks keep
    their best value in the checkpoints' trainer state."""
    if not metric:
        return []
    ret: List[HookBase] = []
    if comm.is_main_process():
        ret.append(_BestCheckpointer(eval_period, _UntaggedSaves(checkpointer), metric,
                                     mode="max", file_prefix="model_best"))
    if patience > 0:
        ret.append(EarlyStopHook(eval_period, metric, patience, checkpointer))
    return ret


class AnchorCheckHook(HookBase):
    """Runs :func:`check_anchors` once in ``before_train`` (after checkpoint loading, so the
    anchors checked are the model's, e.g. those of a converted checkpoint), on the dataset
    the training mapper draws from, in the main process. With MODEL.YOLOV7.AUTOANCHOR, better
    anchors it finds replace those of the model and of the EMA model, in every process; their
    ``anchors`` buffers are saved with the checkpoints. A resumed run keeps its checkpoint's
    anchors and is not checked (as official). A failure is logged, never fatal."""

    def __init__(self, dataset_dicts, *, image_size: int, anchor_t: float, min_bpr: float,
                 autoanchor: bool, seed: int = 0, config_hint: str = "CONFIG"):
        """
        Args:
            dataset_dicts: the training set (what the mapper draws from).
            image_size: training image size (INPUT.YOLOV7.IMAGE_SIZE); anchor_t: the loss's
                anchor-ratio threshold; min_bpr: best possible recall below which to act.
            autoanchor: replace the anchors by better computed ones (else warn only).
            seed: of the box jitter and the evolution; config_hint: how the warning names
                the config to edit.
        """
        self.dataset = dataset_dicts
        self.image_size, self.anchor_t = image_size, anchor_t
        self.min_bpr, self.autoanchor = min_bpr, autoanchor
        self.seed, self.config_hint = seed, config_hint
        self.result = None

    def _models(self):
        """The model and, with EMA, the EMA model (unwrapped from DDP)."""
        model = self.trainer.model
        ema = getattr(self.trainer, "ema", None)
        return [getattr(model, "module", model)] + ([ema.ema] if ema is not None else [])

    def _check(self):
        """New anchors (levels, anchors per level, 2) to use, or None."""
        anchors = self._models()[0].anchors.detach().cpu().numpy()
        try:
            self.result = check_anchors(
                anchors.reshape(-1, 2), self.dataset, image_size=self.image_size,
                anchor_t=self.anchor_t, min_bpr=self.min_bpr, seed=self.seed,
                config_hint=self.config_hint, autoanchor=self.autoanchor,
                levels=anchors.shape[0])
        except Exception as e:  # a diagnostic must not stop training
            logger.warning("anchor check failed (%s: %s); training goes on", type(e).__name__, e)
        return (self.result or {}).get("new_anchors")

    def before_train(self):
        if self.dataset is None or self.trainer.start_iter > 0:
            return
        new = self._check() if comm.is_main_process() else None
        if self.autoanchor:
            new = comm.all_gather(new)[0]  # every process trains with the same anchors
        if new is None:
            return
        for model in self._models():
            model.anchors.copy_(model.anchors.new_tensor(new).view_as(model.anchors))


class TrainingArtifactsHook(HookBase):
    """At training start (main process): ``output_dir/artifacts/train/labels.png``, the label
    distribution of the training set, and ``train_batch.jpg``, ``num_images`` samples of the
    training mapper drawn with their boxes (``TEST.YOLOV7.ARTIFACTS``).

    The samples come from a shallow copy of the mapper called on seeded-random dataset
    entries, so the training data stream (which counts the mapper's calls) is not touched.

    Args:
        output_dir: the run's output folder.
        mapper: the training :class:`~yolov7_d2.data.YOLOv7MosaicMapper`; its ``dataset`` is
            the training set.
        class_names: the training set's ``thing_classes``.
        num_images: samples drawn (0: none); seed: of their choice.
    """

    def __init__(self, output_dir: str, mapper, *, class_names: Sequence[str],
                 num_images: int = 8, seed: int = 0):
        self.mapper, self.class_names = mapper, list(class_names)
        self.num_images, self.seed = int(num_images), max(seed, 0)
        self.out_dir = os.path.join(output_dir, "artifacts", "train")

    def before_train(self):
        if not comm.is_main_process():
            return
        try:
            self.write()
        except Exception:  # artefacts must never stop a training run
            logger.exception("could not write the training-start artefacts")

    def write(self) -> List[str]:
        """Write the files; returns their paths."""
        dataset, names = self.mapper.dataset, self.class_names
        classes, boxes = [], []
        for i in range(len(dataset)):
            d = dataset[i]
            w, h = float(d.get("width", 0) or 0), float(d.get("height", 0) or 0)
            if w <= 0 or h <= 0:
                continue
            b, c = ground_truth_of(d)
            if len(b):  # (M, 4) cx, cy, w, h as fractions of the image size
                boxes.append(xyxy_to_cxcywh(torch.from_numpy(b)).numpy() / np.array([w, h, w, h]))
                classes.append(c)
        classes = np.concatenate(classes) if classes else np.zeros(0, np.int64)
        boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4))
        written = [plots.plot_label_distribution(classes, boxes, names,
                                                 os.path.join(self.out_dir, "labels.png"))]
        if self.num_images > 0 and len(dataset):
            mapper = copy.copy(self.mapper)  # own call counter and stats
            mapper.stats = Counter()
            rng = np.random.default_rng(self.seed)
            picks = rng.choice(len(dataset), size=min(self.num_images, len(dataset)),
                               replace=False)
            drawings = [draw_mapped_sample(mapper(dataset[int(i)]), names, mapper.image_format)
                        for i in picks]
            written.append(plots.save_image(os.path.join(self.out_dir, "train_batch.jpg"),
                                            plots.image_grid(drawings)))
        logger.info("Training artefacts written: %s", ", ".join(written))
        return written


def yolov7_training_hooks(trainer, *, checkpointer, checkpoint_period: int, eval_period: int,
                          test: Callable, best_metric: str, early_stop_patience: int, writers,
                          log_period: int = 20, scheduler=None, start_hooks=(),
                          max_to_keep: Optional[int] = None) -> List[HookBase]:
    """The hooks of a YOLOv7 run, in order: iteration timer, LR scheduler, ``start_hooks``
    (anchor check, training artefacts), periodic checkpoints (main process), evaluation of
    the EMA model (the model without EMA), ``model_best.pth`` and early stopping, log writers
    (main process).

    Args:
        trainer: the trainer the hooks are registered with (its ``model`` and ``ema``, which
            may be None, are evaluated); its ``last_eval_results`` is set at each evaluation.
        checkpointer: a :class:`~yolov7_d2.checkpoint.YOLOv7Checkpointer`.
        test: ``test(model) -> results`` (a dict of metrics, e.g. {"bbox": {"AP": ...}}).
        best_metric: e.g. "bbox/AP" ("": no model_best.pth, no early stopping).
        writers: detectron2 event writers; scheduler: None for the trainer's own.
    """
    def evaluate():
        # Every process evaluates its share of the images: with one model, not with the
        # BatchNorm statistics of its own training images (DDP's broadcast_buffers=False).
        ema = trainer.ema.ema if trainer.ema is not None else None
        average_batchnorm_buffers(trainer.model, ema)
        trainer.last_eval_results = test(ema if ema is not None else unwrap_model(trainer.model))
        return trainer.last_eval_results

    main = comm.is_main_process()
    ret = [hooks.IterationTimer(), hooks.LRScheduler(scheduler=scheduler), *start_hooks]
    if main:
        ret.append(hooks.PeriodicCheckpointer(checkpointer, checkpoint_period,
                                              max_to_keep=max_to_keep))
    ret.append(hooks.EvalHook(eval_period, evaluate))
    # model_best.pth and early stopping, from the results of the EvalHook just before.
    ret.extend(best_model_hooks(eval_period, checkpointer, best_metric,
                                patience=early_stop_patience))
    if main:
        ret.append(hooks.PeriodicWriter(writers, period=log_period))
    return [h for h in ret if h is not None]
