"""The best model kept (``model_best.pth``) and early stopping, after each evaluation."""
import logging
import math
from typing import List, Optional

from detectron2.engine import hooks
from detectron2.engine.train_loop import HookBase
from detectron2.utils import comm

__all__ = ["EarlyStop", "EarlyStopHook", "best_model_hooks"]

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
