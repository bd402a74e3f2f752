"""Model exponential moving average (official utils/torch_utils.py ModelEMA behaviour)."""
import copy
import math
from typing import Any, Dict

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
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0):
        self.ema = copy.deepcopy(unwrap_model(model)).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0

    def current_decay(self) -> float:
        return self.decay * (1.0 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` in; call after each optimizer step."""
        self.updates += 1
        d = self.current_decay()
        current = unwrap_model(model).state_dict()
        for key, value in self.ema.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(current[key].detach(), alpha=1.0 - d)

    def state_dict(self) -> Dict[str, Any]:
        return {"updates": self.updates, "model": self.ema.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.ema.load_state_dict(state["model"])
