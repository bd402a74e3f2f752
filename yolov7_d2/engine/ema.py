"""Model exponential moving average (official utils/torch_utils.py ModelEMA behaviour)."""
import copy
import math
from typing import Any, Dict, Optional

import torch
from torch import nn

__all__ = ["ModelEMA", "unwrap_model"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel, or ``model`` itself."""
    return getattr(model, "module", model)


class ModelEMA:
    """Exponential moving average of every floating-point entry of a model's state dict
    (weights and BatchNorm statistics), with the warm-up decay of the official code:
    ``decay(u) = decay * (1 - exp(-u / tau))`` after ``u`` optimizer steps.

    The averaged copy (:attr:`ema`) is what gets evaluated and, at the end, deployed.
    ``state_dict`` / ``load_state_dict`` make it a detectron2 checkpointable.

    With ``average_from`` > 0 (not official), from that training iteration on :attr:`ema` is
    the uniform mean of the moving average after each optimizer step since (stochastic
    weight averaging, Izmailov et al. 2018, of the EMA weights). On a small dataset the EMA
    weights of the late, low-learning-rate part of a long run fit the training images ever
    closer and held-out ones less well; their mean over that part generalises better.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0,
                 average_from: int = 0):
        self.ema = copy.deepcopy(unwrap_model(model)).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0
        self.average_from = average_from
        #: The moving average while :attr:`ema` holds the mean of its states (None before),
        #: and how many states that mean holds.
        self.moving: Optional[Dict[str, torch.Tensor]] = None
        self.averaged = 0

    def current_decay(self) -> float:
        return self.decay * (1.0 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module, iteration: int = 0) -> None:
        """Fold the current weights of ``model`` in; call after each optimizer step, with the
        training iteration of that step."""
        self.updates += 1
        d = self.current_decay()
        current = unwrap_model(model).state_dict()
        evaluated = self.ema.state_dict()
        if self.moving is None and 0 < self.average_from <= iteration:
            self.moving = {key: value.clone() for key, value in evaluated.items()}
        moving = evaluated if self.moving is None else self.moving
        for key, value in moving.items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(current[key].detach(), alpha=1.0 - d)
        if self.moving is not None:
            self.averaged += 1
            for key, value in evaluated.items():
                if value.dtype.is_floating_point:
                    value.add_(moving[key] - value, alpha=1.0 / self.averaged)

    def state_dict(self) -> Dict[str, Any]:
        state = {"updates": self.updates, "model": self.ema.state_dict()}
        if self.moving is not None:
            state.update(moving=self.moving, averaged=self.averaged)
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.ema.load_state_dict(state["model"])
        moving = state.get("moving")
        self.moving = None if moving is None else {k: v.clone() for k, v in moving.items()}
        self.averaged = int(state.get("averaged", 0))
