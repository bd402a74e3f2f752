"""Checkpoint loading that fails loudly instead of silently skipping YOLOv7 tensors."""
import os
from typing import Any, Dict

import torch

from detectron2.checkpoint import DetectionCheckpointer

from .utils.io import atomic_write

__all__ = ["YOLOv7Checkpointer", "CheckpointError", "atomic_torch_save"]

CONVERT_HINT = "convert official YOLOv7 .pt files first with tools/convert_official_weights.py"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into the YOLOv7 model; the message says why."""


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file then rename, so ``path`` is never half-written."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


class YOLOv7Checkpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that raises :class:`CheckpointError` (naming the file and the
    tensors) for an unreadable or truncated file, an official checkpoint that was not
    converted, a checkpoint of another model, or tensors whose shapes differ from the model
    (e.g. a different ``MODEL.YOLOV7.NUM_CLASSES``), where detectron2 would only warn.

    With ``prefer_ema`` (inference), a training checkpoint's EMA weights are loaded as the model:
    as in the official code, the EMA weights are the final model.
    """

    def __init__(self, model, save_dir: str = "", *, prefer_ema: bool = False, **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        self.prefer_ema = prefer_ema

    def load(self, path: str, *args, **kwargs):
        if path and not os.path.isfile(self.path_manager.get_local_path(path)):
            raise CheckpointError(f"Checkpoint {path!r} does not exist (MODEL.WEIGHTS).")
        return super().load(path, *args, **kwargs)

    def _load_file(self, filename: str) -> Dict[str, Any]:
        try:
            loaded = super()._load_file(filename)
        except Exception as e:  # pickle, zip and weights-only errors all mean the same here
            raise CheckpointError(
                f"Cannot read checkpoint {filename!r} ({type(e).__name__}: {str(e)[:200]}). "
                f"It may be truncated or not a detectron2 checkpoint; {CONVERT_HINT}."
            ) from e
        if self.prefer_ema and isinstance(loaded.get("ema"), dict):
            loaded["model"] = loaded.pop("ema")["model"]
        if not isinstance(loaded.get("model"), dict):
            raise CheckpointError(f"Checkpoint {filename!r} holds no state dict; {CONVERT_HINT}.")
        self._check_compatible(filename, loaded["model"])
        return loaded

    def _check_compatible(self, filename: str, state: Dict[str, Any]) -> None:
        own = self.model.state_dict()
        shared = [k for k in own if k in state]
        if not shared:
            raise CheckpointError(
                f"Checkpoint {filename!r} shares no tensor name with the YOLOv7 model: it is not a "
                f"checkpoint of this model; {CONVERT_HINT}."
            )
        wrong = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in shared
                 if tuple(state[k].shape) != tuple(own[k].shape)]
        if not wrong:
            return
        listing = "; ".join(f"{k}: checkpoint {a} vs model {b}" for k, a, b in wrong[:6])
        hint = ""
        if any(".predictors." in k for k, _, _ in wrong):
            key = next(k for k, _, _ in wrong if ".predictors." in k)
            model = getattr(self.model, "module", self.model)  # unwrap DistributedDataParallel
            channels, anchors = state[key].shape[0], model.anchors.shape[1]
            hint = (f" The checkpoint predicts {channels // anchors - 5} classes but "
                    f"MODEL.YOLOV7.NUM_CLASSES is {model.num_classes}: set it to match.")
        raise CheckpointError(
            f"{len(wrong)} tensors of {filename!r} do not fit the model ({listing}).{hint}"
        )
