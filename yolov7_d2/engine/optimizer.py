"""The official YOLOv7 optimizer: SGD with three parameter groups."""
from typing import List

import torch
from torch import nn

from ..modeling.layers import ImplicitA, ImplicitM

__all__ = ["yolov7_param_groups", "build_yolov7_optimizer"]

# Weights without decay: normalisation scales (official: BatchNorm) and implicit knowledge.
_NO_DECAY_MODULES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm,
                     ImplicitA, ImplicitM)


def yolov7_param_groups(model: nn.Module, weight_decay: float) -> List[dict]:
    """Split trainable parameters as official train.py: "no_decay" (norm weights, implicit
    vectors), "decay" (every other weight, with ``weight_decay``) and "bias" (all biases, no
    decay; the warm-up treats them specially). Each group carries its "name"."""
    no_decay, decay, biases = [], [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            if name == "bias":
                biases.append(param)
            elif isinstance(module, _NO_DECAY_MODULES):
                no_decay.append(param)
            else:
                decay.append(param)
    return [
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
        {"name": "decay", "params": decay, "weight_decay": weight_decay},
        {"name": "bias", "params": biases, "weight_decay": 0.0},
    ]


#: SOLVER.YOLOV7.OPTIMIZER values: official SGD, official ``--adam`` (Adam, L2 decay in the
#: gradient), and AdamW (decoupled decay; Ultralytics' choice for short runs).
OPTIMIZERS = ("SGD", "Adam", "AdamW")


def build_yolov7_optimizer(model: nn.Module, *, base_lr: float, momentum: float,
                           weight_decay: float, nesterov: bool = True,
                           name: str = "SGD") -> torch.optim.Optimizer:
    """``name`` over :func:`yolov7_param_groups`: SGD(momentum, Nesterov), or Adam / AdamW
    with betas (momentum, 0.999) as official ``--adam``."""
    groups = yolov7_param_groups(model, weight_decay)
    if name == "SGD":
        return torch.optim.SGD(groups, lr=base_lr, momentum=momentum, nesterov=nesterov)
    if name in ("Adam", "AdamW"):
        return getattr(torch.optim, name)(groups, lr=base_lr, betas=(momentum, 0.999))
    raise ValueError(f"SOLVER.YOLOV7.OPTIMIZER must be one of {', '.join(OPTIMIZERS)}, "
                     f"got {name!r}")
