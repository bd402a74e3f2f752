"""Checkpoints of YOLOv7 models: written atomically; loading fails loudly instead of silently
skipping tensors, converts official checkpoints on the fly, and loads checkpoints of other
classes (fine-tuning) or of the bottom-up network alone partially (:mod:`yolov7_d2.finetune`)."""
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn

from detectron2.checkpoint import DetectionCheckpointer

from .config_checks import check_checkpoint_scale, check_official_checkpoint_scale
from .convert import (
    ConversionError,
    is_official_state,
    load_official_checkpoint,
    official_to_yolov7,
)
from .finetune import adapt_class_rows, bottom_up_state
from .numerics import check_finite_checkpoint
from .utils.io import atomic_write, remove_temporaries

__all__ = ["YOLOv7Checkpointer", "CheckpointError", "atomic_torch_save"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into the YOLOv7 model; the message says why."""


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file then rename, so ``path`` is never half-written."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


class YOLOv7Checkpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` for the YOLOv7 model. Besides this package's checkpoints it
    reads official YOLOv7 ``.pt`` files (pickled model or plain state dict; converted on the
    fly by :mod:`yolov7_d2.convert`) and weights of the bottom-up network alone: detectron2,
    Caffe2 or torchvision model-zoo ``.pkl`` files of a ResNet, timm state dicts.

    It raises :class:`CheckpointError` (naming the file and the tensors) for an unreadable or
    truncated file, a checkpoint of another model, or tensors whose shapes differ from the
    model (e.g. another scale), where detectron2 would only warn. A checkpoint predicting
    another number of classes is an error too, unless ``finetune``: then its class-independent
    tensors are loaded and a table is logged (:func:`yolov7_d2.finetune.adapt_class_rows`).

    Checkpoints are written atomically (:func:`atomic_torch_save`), and ``last_checkpoint``
    is rewritten (atomically too) only once the file it names is complete: a run killed at
    any moment leaves ``last_checkpoint`` naming a complete checkpoint. A temporary file left
    by a run killed while saving is removed at the next save (the saving process is the only
    writer of checkpoints in ``save_dir``).

    Args:
        model, save_dir, checkpointables: as for ``DetectionCheckpointer``.
        prefer_ema: (inference) load a training checkpoint's EMA weights as the model: as in
            the official code, the EMA weights are the final model.
        class_names: the model's class names, saved as "thing_classes" in each checkpoint
            written and matched with ``keep_shared_classes``.
        finetune: (training) load checkpoints of another class count partially.
        keep_shared_classes: when fine-tuning, also load the class rows of the classes that
            the checkpoint names alike.
    """

    def __init__(self, model, save_dir: str = "", *, prefer_ema: bool = False,
                 class_names: Sequence[str] = (), finetune: bool = False,
                 keep_shared_classes: bool = False, **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        self.prefer_ema, self.class_names = prefer_ema, list(class_names)
        self.finetune, self.keep_shared_classes = finetune, keep_shared_classes

    def load(self, path: str, *args, **kwargs):
        if path and not os.path.isfile(self.path_manager.get_local_path(path)):
            raise CheckpointError(f"Checkpoint {path!r} does not exist (MODEL.WEIGHTS).")
        return super().load(path, *args, **kwargs)

    def save(self, name: str, *, tag_last: bool = True, **kwargs) -> None:
        """As detectron2's: the model's and checkpointables' states and ``kwargs`` to
        ``save_dir/<name>.pth``, then named in ``last_checkpoint`` (unless ``tag_last`` is
        False: a file that is not the latest training state, e.g. model_best); atomically."""
        if not self.save_dir or not self.save_to_disk:
            return
        if self.class_names:
            kwargs.setdefault("thing_classes", self.class_names)
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        check_finite_checkpoint(name, {k: data[k] for k in ("model", "ema") if k in data})
        path = os.path.join(self.save_dir, f"{name}.pth")
        for tmp in remove_temporaries(self.save_dir, ["*.pth", "last_checkpoint"]):
            self.logger.warning("Removed %s, left by a run killed while saving", tmp)
        self.logger.info("Saving checkpoint to %s", path)
        atomic_torch_save(data, path)
        if tag_last:
            self.tag_last_checkpoint(os.path.basename(path))

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write(os.path.join(self.save_dir, "last_checkpoint"),
                     lambda tmp: Path(tmp).write_text(last_filename_basename))

    def _load_file(self, filename: str) -> Dict[str, Any]:
        loaded = self._read(filename)
        if self.prefer_ema and isinstance(loaded.get("ema"), dict):
            loaded["model"] = loaded.pop("ema")["model"]
        if not isinstance(loaded.get("model"), dict):
            raise CheckpointError(f"Checkpoint {filename!r} holds no state dict.")
        try:
            loaded["model"] = self._fit(loaded, filename)
        except (ConversionError, ValueError) as e:
            raise CheckpointError(f"Checkpoint {filename!r} does not fit the model: {e}") from e
        self._check_compatible(filename, loaded["model"])
        return loaded

    def _read(self, filename: str) -> Dict[str, Any]:
        """The checkpoint as a dict with a "model" entry; official files are read without
        the official code."""
        try:
            loaded = super()._load_file(filename)
        except Exception as e:  # pickle, zip and weights-only errors: maybe an official file
            return self._read_official(filename, e)
        if isinstance(loaded.get("model"), nn.Module):  # an official file torch could unpickle
            return self._read_official(filename, None)
        return loaded

    @staticmethod
    def _read_official(filename: str, error: Optional[Exception]) -> Dict[str, Any]:
        try:
            official = load_official_checkpoint(filename)
        except ConversionError as e:
            reason = f"{type(error).__name__}: {str(error)[:200]}" if error else str(e)
            raise CheckpointError(
                f"Cannot read checkpoint {filename!r} ({reason}). It may be truncated, or neither "
                "a detectron2 nor an official YOLOv7 checkpoint."
            ) from (error or e)
        return {"model": official.state, "thing_classes": official.class_names,
                "__author__": "official YOLOv7"}

    def _fit(self, loaded: Dict[str, Any], filename: str) -> Dict[str, Any]:
        """The checkpoint's tensors under the model's names (and, when fine-tuning, shapes)."""
        model = getattr(self.model, "module", self.model)  # unwrap DistributedDataParallel
        state = loaded["model"]
        own = model.state_dict()
        if is_official_state(state):
            check_official_checkpoint_scale(filename, state, own)  # another scale: named
            state = official_to_yolov7(state, model, filename, any_num_classes=self.finetune)
        elif loaded.pop("matching_heuristics", False) or not any(k in own for k in state):
            # Weights of the bottom-up network alone: mapped explicitly instead of by
            # detectron2's name-suffix heuristics, which could match into the neck or head.
            state = bottom_up_state(state, model, source=filename,
                                    caffe2_names=loaded.get("__author__") == "Caffe2")
        if self.finetune:
            state = adapt_class_rows(state, model, checkpoint_names=loaded.get("thing_classes"),
                                     class_names=self.class_names, source=filename,
                                     keep_shared_classes=self.keep_shared_classes)
        return state

    def _check_compatible(self, filename: str, state: Dict[str, Any]) -> None:
        own = self.model.state_dict()
        check_checkpoint_scale(filename, state, own)  # another YOLOv7 scale: named
        shared = [k for k in own if k in state]
        if not shared:
            raise CheckpointError(
                f"Checkpoint {filename!r} shares no tensor name with the YOLOv7 model: it is not a "
                "checkpoint of this model, an official YOLOv7 one, or one of its bottom-up network."
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
                    f"MODEL.YOLOV7.NUM_CLASSES is {model.num_classes}: set it to match "
                    "(training fine-tunes such checkpoints).")
        raise CheckpointError(
            f"{len(wrong)} tensors of {filename!r} do not fit the model ({listing}).{hint}"
        )
