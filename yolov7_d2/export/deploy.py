"""The deploy (re-parameterized) form of a trained YOLOv7, built from a config and a checkpoint."""
import os
from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from detectron2.modeling import build_model

from ..checkpoint import YOLOv7Checkpointer
from ..modeling import reparameterize

__all__ = ["build_deploy_model", "checkpoint_is_reparameterized", "is_reparameterized_state",
           "count_parameters", "deploy_checkpoint", "REPARAMETERIZED_KEY"]

#: Top-level key that tools/reparameterize.py sets to True in the checkpoints it writes.
REPARAMETERIZED_KEY = "reparameterized"


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def is_reparameterized_state(state: Mapping[str, Any]) -> bool:
    """Whether a YOLOv7 state dict is of the fused structure: a re-parameterized model has no
    BatchNorm left, so it has no ``running_mean`` entry."""
    return bool(state) and not any(k.endswith("running_mean") for k in state)


def checkpoint_is_reparameterized(path: str) -> bool:
    """Whether the checkpoint file ``path`` holds a re-parameterized (deploy) model, as written
    by tools/reparameterize.py. An unreadable file gives False (the checkpointer then reports
    it properly)."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable: let YOLOv7Checkpointer raise its CheckpointError
        return False
    if not isinstance(loaded, dict):
        return False
    if loaded.get(REPARAMETERIZED_KEY) is True:
        return True
    state = loaded.get("model")
    return isinstance(state, dict) and is_reparameterized_state(state)


def build_deploy_model(cfg, weights: Optional[str] = None, *, prefer_ema: bool = True,
                       device: Optional[str] = None) -> nn.Module:
    """The re-parameterized model of ``cfg`` in eval mode, with ``weights`` loaded.

    Args:
        cfg: a yolov7_d2 config (not modified).
        weights: a checkpoint in this package's format: a training checkpoint (the model is
            re-parameterized after loading) or a deploy checkpoint of tools/reparameterize.py
            (detected, and loaded into the fused structure). None: ``cfg.MODEL.WEIGHTS``;
            empty: random weights.
        prefer_ema: load a training checkpoint's EMA weights when it has them (the official
            final model).
        device: where to build it; None: ``cfg.MODEL.DEVICE``.
    """
    cfg = cfg.clone()
    cfg.defrost()
    weights = cfg.MODEL.WEIGHTS if weights is None else weights
    if device is not None:
        cfg.MODEL.DEVICE = device
    if weights and os.path.isfile(weights) and checkpoint_is_reparameterized(weights):
        cfg.MODEL.YOLOV7.REPARAMETERIZED = True
    model = build_model(cfg)
    if weights:
        YOLOv7Checkpointer(model, prefer_ema=prefer_ema).load(weights)
    return reparameterize(model)  # a no-op for the parts already fused


def deploy_checkpoint(model: nn.Module, **extra: Any) -> Dict[str, Any]:
    """The checkpoint dict tools/reparameterize.py writes for a re-parameterized ``model``."""
    state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    return {"model": state, REPARAMETERIZED_KEY: True, "matching_heuristics": False, **extra}
