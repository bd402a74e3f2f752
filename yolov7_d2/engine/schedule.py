"""The official YOLOv7 learning-rate, momentum and accumulation schedule, per iteration."""
import math

import numpy as np
import torch

__all__ = ["lr_factor", "warmup_values", "nominal_accumulation", "accumulation_steps",
           "nominal_weight_decay", "YOLOv7LRScheduler"]


def lr_factor(progress: float, final_ratio: float, decay: str = "cosine") -> float:
    """LR multiplier at ``progress`` in [0, 1] of training: official ``one_cycle`` cosine from 1
    to ``final_ratio``, or ``--linear-lr``'s linear decay."""
    if decay == "cosine":
        return ((1 - math.cos(math.pi * progress)) / 2) * (final_ratio - 1) + 1
    if decay == "linear":
        return (1 - progress) * (1.0 - final_ratio) + final_ratio
    raise ValueError(f"SOLVER.YOLOV7.LR_DECAY must be 'cosine' or 'linear', got {decay!r}")


def warmup_values(iteration: int, warmup_iters: int, start: float, end: float) -> float:
    """Linear interpolation from ``start`` at iteration 0 to ``end`` at ``warmup_iters``."""
    if warmup_iters <= 0 or iteration >= warmup_iters:
        return end
    return float(np.interp(iteration, [0, warmup_iters], [start, end]))


def nominal_accumulation(batch_size: int, nominal: int) -> int:
    """Batches per optimizer step after the warm-up (official ``accumulate``):
    round(nominal / batch), at least 1."""
    return max(round(nominal / batch_size), 1)


def accumulation_steps(iteration: int, warmup_iters: int, batch_size: int, nominal: int) -> int:
    """Batches per optimizer step: ramps from 1 to :func:`nominal_accumulation` during warm-up."""
    target = nominal_accumulation(batch_size, nominal)
    return max(1, round(warmup_values(iteration, warmup_iters, 1.0, float(target))))


def nominal_weight_decay(weight_decay: float, batch_size: int, nominal_batch_size: int) -> float:
    """Official train.py: weight decay scaled by (batch x accumulation steps) / nominal batch."""
    steps = nominal_accumulation(batch_size, nominal_batch_size)
    return weight_decay * batch_size * steps / nominal_batch_size


# Subclasses the legacy ``_LRScheduler`` name on purpose: detectron2 0.6's LRScheduler hook
# only checkpoints schedulers of that class, and resuming needs the iteration restored.
class YOLOv7LRScheduler(torch.optim.lr_scheduler._LRScheduler):
    """Per-iteration version of the official schedule. During warm-up the "bias" group's LR
    falls from ``warmup_bias_lr`` and the other groups' rise from 0 to the scheduled LR, and
    momentum rises from ``warmup_momentum``; afterwards the LR follows :func:`lr_factor`.

    The official code steps the decay once per epoch; here it is continuous in the iteration
    (detectron2 schedules are iteration-based), which the same curve sampled more finely.
    """

    def __init__(self, optimizer, *, max_iter: int, warmup_iters: int, warmup_bias_lr: float,
                 warmup_momentum: float, momentum: float, final_ratio: float,
                 decay: str = "cosine", last_epoch: int = -1):
        self.max_iter, self.warmup_iters = max_iter, warmup_iters
        self.warmup_bias_lr, self.warmup_momentum = warmup_bias_lr, warmup_momentum
        self.momentum, self.final_ratio, self.decay = momentum, final_ratio, decay
        lr_factor(0.0, final_ratio, decay)  # validates ``decay`` early
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        iteration = self.last_epoch
        factor = lr_factor(min(iteration / max(self.max_iter, 1), 1.0), self.final_ratio,
                           self.decay)
        lrs = []
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            start = self.warmup_bias_lr if group.get("name") == "bias" else 0.0
            lrs.append(warmup_values(iteration, self.warmup_iters, start, base_lr * factor))
            if "momentum" in group:
                group["momentum"] = warmup_values(
                    iteration, self.warmup_iters, self.warmup_momentum, self.momentum
                )
        return lrs
