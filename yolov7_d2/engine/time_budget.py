"""Training runs sized to a wall-time budget (``SOLVER.YOLOV7.TIME_BUDGET_MINUTES``, as
Ultralytics' ``time``): the same command trains as long as the machine at hand allows.

The seconds per training iteration are measured on a few iterations of a throwaway trainer
built from the config (data loader, forward, loss, backward, optimizer and EMA, so the
measurement includes whatever makes this CPU or GPU fast or slow: bfloat16 or float32,
channels_last, loader workers). The iterations that fit what is left of the budget, after the
evaluations, become SOLVER.MAX_ITER, and the config's schedule is stretched to it: the periods
and the close-mosaic length keep their share of the run; the warm-up keeps its length, as the
official warm-up (``max(3 epochs, 1000 iterations)``) does not depend on the run's length.

A budgeted run is repeatable: the log and OUTPUT_DIR/config.yaml give the iteration keys it
used, with the budget off; OUTPUT_DIR/time_budget.json keeps the length, so that ``--resume``
goes on with it instead of measuring again.
"""
import json
import logging
import math
import os
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
import torch

from detectron2.data import DatasetCatalog
from detectron2.utils import comm
from detectron2.utils.events import EventStorage
from detectron2.utils.file_io import PathManager

from ..data.mapper import mosaic_window_size
from ..utils.io import atomic_write

__all__ = ["BudgetPlan", "time_training_iterations", "plan_budget", "stretch_schedule",
           "resolve_time_budget"]

logger = logging.getLogger(__name__)

#: Share of the budget held back for the variation of the step time during the run.
MARGIN = 0.05
#: Seconds an evaluation costs beyond the forward passes (test loader, COCO evaluation, plots).
EVAL_OVERHEAD_S = 5.0
#: The file in OUTPUT_DIR that keeps a budgeted run's length for --resume.
PLAN_FILE = "time_budget.json"
#: MAX_ITER is rounded down to a multiple of this: a round length to quote and repeat.
ROUND_TO = 10


def time_training_iterations(cfg, warmup: int, iters: int) -> Tuple[List[float], List[float],
                                                                     float]:
    """Run ``warmup`` then ``iters`` training iterations of a throwaway :class:`YOLOv7Trainer`
    built from ``cfg`` (no evaluation, no artefacts, output in a temporary directory).

    Returns:
        (seconds of each timed iteration, seconds each waited for data, seconds of inference
        per image: one training batch through the model in eval mode after the iterations).
    """
    from .trainer import YOLOv7Trainer  # the trainer imports this package's modules

    with tempfile.TemporaryDirectory() as out:
        probe = cfg.clone()
        probe.defrost()
        probe.OUTPUT_DIR, probe.TEST.EVAL_PERIOD = out, 0
        probe.TEST.YOLOV7.ARTIFACTS = False
        probe.SOLVER.YOLOV7.TIME_BUDGET_MINUTES = 0.0
        probe.freeze()
        trainer = YOLOv7Trainer(probe)
        loop = trainer._trainer
        times, data_times = [], []
        with EventStorage() as storage:
            loop.storage = storage
            for it in range(warmup + iters):
                loop.iter = storage.iter = it
                start = time.perf_counter()
                loop.run_step()
                if it >= warmup:
                    times.append(time.perf_counter() - start)
                    data_times.append(storage.history("data_time").latest())
            batch = next(loop._data_loader_iter)
            model = loop.model
            model.eval()
            start = time.perf_counter()
            with torch.inference_mode():
                model(batch)
            inference_per_image = (time.perf_counter() - start) / len(batch)
        del trainer, loop, model
    return times, data_times, inference_per_image


@dataclass(frozen=True)
class BudgetPlan:
    """How a budget of ``budget_s`` seconds is spent: ``elapsed_s`` already gone (set-up and the
    measurement), ``evaluations`` evaluations of ``eval_s`` each, and ``max_iter`` training
    iterations of ``iteration_s`` each, with :data:`MARGIN` of the rest held back."""

    budget_s: float
    elapsed_s: float
    iteration_s: float
    eval_s: float
    evaluations: int

    @property
    def training_s(self) -> float:
        """Seconds left for training iterations."""
        return (self.budget_s - self.elapsed_s - self.evaluations * self.eval_s) * (1 - MARGIN)

    @property
    def max_iter(self) -> int:
        """Iterations that fit :attr:`training_s`, rounded down to :data:`ROUND_TO` (0 if none)."""
        fit = math.floor(max(self.training_s, 0.0) / self.iteration_s)
        return fit // ROUND_TO * ROUND_TO if fit >= ROUND_TO else fit


def evaluations_in(max_iter: int, eval_period: int) -> int:
    """Evaluations of a run: every ``eval_period`` iterations and at the end (detectron2's
    ``EvalHook``); one if ``eval_period`` is 0."""
    if eval_period <= 0:
        return 1
    return max_iter // eval_period + (max_iter % eval_period != 0)


def mean_step_cost(cfg) -> float:
    """The mean cost of the run's iterations relative to a mosaic iteration, the kind the
    budget measures: with INPUT.YOLOV7.MOSAIC_CROP_SIZE below IMAGE_SIZE, the close-mosaic
    iterations (plain IMAGE_SIZE samples) cost more by the ratio of pixels per sample."""
    aug = cfg.INPUT.YOLOV7
    crop = mosaic_window_size(aug.IMAGE_SIZE, aug.MOSAIC_CROP_SIZE)
    plain_share = min(max(aug.CLOSE_MOSAIC_ITERS, 0) / max(cfg.SOLVER.MAX_ITER, 1), 1.0)
    return 1.0 + plain_share * ((aug.IMAGE_SIZE / crop) ** 2 - 1.0)


def plan_budget(cfg, elapsed_s: float, iteration_s: float, inference_per_image_s: float,
                num_test_images: int) -> BudgetPlan:
    """The :class:`BudgetPlan` of ``cfg``'s budget, ``elapsed_s`` seconds into the run;
    ``iteration_s`` is the measured mosaic iteration (see :func:`mean_step_cost`) and
    ``inference_per_image_s`` the inference of one of its samples, which a test image of
    IMAGE_SIZE costs more than by the ratio of pixels."""
    aug = cfg.INPUT.YOLOV7
    test_cost = (aug.IMAGE_SIZE / mosaic_window_size(aug.IMAGE_SIZE, aug.MOSAIC_CROP_SIZE)) ** 2
    eval_s = EVAL_OVERHEAD_S + inference_per_image_s * test_cost * num_test_images
    evaluations = (evaluations_in(cfg.SOLVER.MAX_ITER, cfg.TEST.EVAL_PERIOD)
                   if num_test_images else 0)
    return BudgetPlan(cfg.SOLVER.YOLOV7.TIME_BUDGET_MINUTES * 60.0, elapsed_s,
                      iteration_s * mean_step_cost(cfg), eval_s, evaluations)


def stretch_schedule(cfg, max_iter: int):
    """A frozen copy of ``cfg`` lasting ``max_iter`` iterations, its budget off: the checkpoint
    and evaluation periods and the close-mosaic length scaled with SOLVER.MAX_ITER (each at
    least 1 where it was positive), SOLVER.WARMUP_ITERS kept."""
    ratio = max_iter / cfg.SOLVER.MAX_ITER

    def scaled(value: int) -> int:
        return max(round(value * ratio), 1) if value > 0 else value

    cfg = cfg.clone()
    cfg.defrost()
    cfg.SOLVER.CHECKPOINT_PERIOD = min(scaled(cfg.SOLVER.CHECKPOINT_PERIOD), max_iter)
    cfg.TEST.EVAL_PERIOD = min(scaled(cfg.TEST.EVAL_PERIOD), max_iter)
    close = cfg.INPUT.YOLOV7
    close.CLOSE_MOSAIC_ITERS = min(scaled(close.CLOSE_MOSAIC_ITERS), max_iter)
    cfg.SOLVER.MAX_ITER = max_iter
    cfg.SOLVER.YOLOV7.TIME_BUDGET_MINUTES = 0.0
    cfg.freeze()
    return cfg


def resolve_time_budget(cfg, started: float, resume: bool = False, warmup: int = 5,
                        iters: int = 15):
    """``cfg`` stretched (:func:`stretch_schedule`) to the iterations that fit
    SOLVER.YOLOV7.TIME_BUDGET_MINUTES, counted from ``started`` (a ``time.monotonic()``);
    ``cfg`` itself when the budget is 0. The step time is the median of ``iters`` iterations
    after ``warmup`` (:func:`time_training_iterations`; of 8 after 3, two runs of the main job
    measured 0.62 and 0.73 s for the same 0.65 s of the run); the random states (Python, NumPy,
    torch) are restored afterwards, so the run starts as one given its iterations directly.
    The length is saved in OUTPUT_DIR/:data:`PLAN_FILE`; with ``resume`` a saved length is
    used again, not measured.

    Raises:
        ConfigError: more than one process (each would measure its own length), or the budget
            leaves no iteration.
    """
    from ..config_checks import ConfigError

    budget = cfg.SOLVER.YOLOV7.TIME_BUDGET_MINUTES
    if budget <= 0:
        return cfg
    if comm.get_world_size() > 1:
        raise ConfigError("SOLVER.YOLOV7.TIME_BUDGET_MINUTES works in one process only: set "
                          "SOLVER.MAX_ITER (or SOLVER.YOLOV7.EPOCHS) for multi-GPU runs.")
    plan_file = os.path.join(cfg.OUTPUT_DIR, PLAN_FILE)
    if resume and PathManager.exists(plan_file):
        with PathManager.open(plan_file) as f:
            max_iter = json.load(f)["max_iter"]
        logger.info("Time budget %g min: resuming with the %d iterations measured at the "
                    "first start (%s)", budget, max_iter, plan_file)
        return stretch_schedule(cfg, max_iter)
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    times, data_times, inference = time_training_iterations(cfg, warmup, iters)
    random.setstate(states[0])
    np.random.set_state(states[1])
    torch.set_rng_state(states[2])
    num_test = sum(len(DatasetCatalog.get(name)) for name in cfg.DATASETS.TEST)
    median_s = statistics.median(times)
    plan = plan_budget(cfg, time.monotonic() - started, median_s, inference, num_test)
    if plan.max_iter < 1:
        raise ConfigError(
            f"SOLVER.YOLOV7.TIME_BUDGET_MINUTES {budget:g} leaves no training iteration: "
            f"{plan.elapsed_s:.0f} s went on set-up and measuring, an iteration takes "
            f"{plan.iteration_s:.2f} s and the {plan.evaluations} evaluation(s) about "
            f"{plan.eval_s:.0f} s each. Raise the budget.")
    resolved = stretch_schedule(cfg, plan.max_iter)
    _save_plan(plan_file, plan)
    logger.info(
        "Time budget %g min: a training iteration takes %.2f s here (median of %d, %.3f s "
        "waiting for data; %.2f s on average over the run, with its close-mosaic iterations), "
        "an evaluation about %.0f s (x%d); %.1f min went on set-up and "
        "measuring -> SOLVER.MAX_ITER %d (config: %d), SOLVER.WARMUP_ITERS %d, "
        "INPUT.YOLOV7.CLOSE_MOSAIC_ITERS %d, SOLVER.CHECKPOINT_PERIOD %d, TEST.EVAL_PERIOD %d. "
        "To repeat this run: SOLVER.YOLOV7.TIME_BUDGET_MINUTES 0.0 with these keys (or "
        "OUTPUT_DIR/config.yaml).",
        budget, median_s, len(times), statistics.mean(data_times),
        plan.iteration_s, plan.eval_s,
        plan.evaluations, plan.elapsed_s / 60, resolved.SOLVER.MAX_ITER, cfg.SOLVER.MAX_ITER,
        resolved.SOLVER.WARMUP_ITERS, resolved.INPUT.YOLOV7.CLOSE_MOSAIC_ITERS,
        resolved.SOLVER.CHECKPOINT_PERIOD, resolved.TEST.EVAL_PERIOD)
    if resolved.SOLVER.WARMUP_ITERS >= resolved.SOLVER.MAX_ITER:
        logger.warning("The warm-up (%d iterations) lasts the whole budgeted run (%d): raise the "
                       "budget or lower SOLVER.WARMUP_ITERS.", resolved.SOLVER.WARMUP_ITERS,
                       resolved.SOLVER.MAX_ITER)
    return resolved


def _save_plan(path: str, plan: BudgetPlan) -> None:
    """The plan as json at ``path``, written whole or not at all (:func:`atomic_write`)."""
    if not comm.is_main_process():
        return
    record = {"max_iter": plan.max_iter, "budget_s": plan.budget_s, "elapsed_s": plan.elapsed_s,
              "iteration_s": plan.iteration_s, "eval_s": plan.eval_s,
              "evaluations": plan.evaluations}

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(record, f, indent=1)

    atomic_write(path, write)
