"""Conversion of official YOLOv7 checkpoints (WongKinYiu/yolov7) to this model's state dict.

Official ``.pt`` files pickle the whole model object (``models.yolo.Model`` holding
``models.common.*`` layers). :func:`read_official_checkpoint` reads them without that code:
every class outside torch / numpy / the standard library is unpickled as a plain container,
and the tensors are collected from the module tree. A plain state dict works too.

The mapping is structural: our modules are registered in the order of the official layers
(see ``modeling/layers/blocks.py``), so the body tensors pair up one to one in order, checked
by kind (weight / bias / running statistics) and shape; the detect layer is mapped by name.
"""
import io
import pickle
import zipfile
from collections import OrderedDict
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
from torch import nn

from .finetune import is_class_dependent

__all__ = ["OfficialCheckpoint", "load_official_checkpoint", "read_official_checkpoint",
           "is_official_state", "official_to_yolov7", "ConversionError"]

# Modules whose classes are unpickled for real; anything else (the official code) is stubbed.
_TRUSTED_MODULE_PREFIXES = ("torch", "collections", "builtins", "copyreg", "numpy", "_codecs")


class ConversionError(ValueError):
    """The checkpoint does not fit the model; the message names the tensors."""


class _Stub:
    """Stands in for an official class: keeps the pickled attributes, nothing else."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        if isinstance(state, tuple):  # (dict, slots) form
            state = state[0] or {}
        if isinstance(state, dict):
            self.__dict__.update(state)


class _StubUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module.split(".")[0] in _TRUSTED_MODULE_PREFIXES:
            return super().find_class(module, name)
        return type(name, (_Stub,), {"__module__": f"stub.{module}"})


class _StubPickleModule:
    """What ``torch.load(pickle_module=...)`` needs: an ``Unpickler`` and ``load``."""

    Unpickler = _StubUnpickler
    __name__ = "yolov7_d2_stub_pickle"

    @staticmethod
    def load(f, **kwargs):
        return _StubUnpickler(f, **kwargs).load()


def _collect_tensors(obj, prefix: str, out: "OrderedDict[str, torch.Tensor]") -> None:
    """Walk a (stubbed or real) nn.Module tree into ``out`` as state-dict entries."""
    attributes = vars(obj) if not isinstance(obj, nn.Module) else obj.__dict__
    for group in ("_parameters", "_buffers"):
        for key, value in (attributes.get(group) or {}).items():
            if value is not None:
                out[prefix + key] = value.detach() if isinstance(value, torch.Tensor) else value
    for key, child in (attributes.get("_modules") or {}).items():
        if child is not None:
            _collect_tensors(child, f"{prefix}{key}.", out)


class OfficialCheckpoint(NamedTuple):
    """What :func:`load_official_checkpoint` reads."""

    state: "OrderedDict[str, torch.Tensor]"  # float32, official names ("model.0.conv.weight")
    class_names: Optional[List[str]]  # the model's ``names`` (train.py sets data.yaml's), if any


def _class_names(model) -> Optional[List[str]]:
    names = getattr(model, "names", None)
    if isinstance(names, dict):  # {index: name}
        names = [names[i] for i in sorted(names)]
    return [str(n) for n in names] if isinstance(names, (list, tuple)) else None


def load_official_checkpoint(path: str) -> OfficialCheckpoint:
    """Read an official YOLOv7 checkpoint (pickled model, EMA preferred) or a plain state dict
    into an ordered float32 state dict with the official names, and the class names."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        if zipfile.is_zipfile(io.BytesIO(data)):
            loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False,
                                pickle_module=_StubPickleModule)
        else:
            loaded = _StubPickleModule.load(io.BytesIO(data))
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ConversionError(f"Cannot read {path!r} as a PyTorch checkpoint "
                              f"({type(e).__name__}: {str(e)[:200]}); is it truncated?") from e
    model = loaded
    if isinstance(loaded, dict) and ("model" in loaded or "ema" in loaded):
        model = loaded.get("ema") or loaded.get("model")
    state: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    if isinstance(model, dict):
        state.update((k, v) for k, v in model.items() if isinstance(v, torch.Tensor))
    else:
        _collect_tensors(model, "", state)
    if not state:
        raise ConversionError(f"{path!r} holds no tensors: not a YOLOv7 checkpoint.")
    state = OrderedDict((k, v.float() if v.is_floating_point() else v) for k, v in state.items())
    return OfficialCheckpoint(state, _class_names(model))


def read_official_checkpoint(path: str) -> "OrderedDict[str, torch.Tensor]":
    """The state dict of :func:`load_official_checkpoint`."""
    return load_official_checkpoint(path).state


def is_official_state(state: Dict[str, object]) -> bool:
    """Whether every name of a state dict is an official layer's ("model.<index>.<name>")."""
    return bool(state) and all(_official_layer(k) is not None for k in state)


def _official_layer(key: str) -> Optional[Tuple[int, str]]:
    """(layer index, name inside the layer) of an official name "model.<i>.<rest>", else None."""
    parts = key.split(".")
    if parts[0] == "model" and len(parts) > 2 and parts[1].isdigit():
        return int(parts[1]), ".".join(parts[2:])
    return None


def _split_layers(state: Dict[str, torch.Tensor], path: str):
    """Split official names "model.<i>.<rest>" into the body and the detect layer (the last)."""
    layers: Dict[int, List[Tuple[str, str]]] = {}
    for key in state:
        layer = _official_layer(key)
        if layer is not None:
            layers.setdefault(layer[0], []).append((key, layer[1]))
        else:
            raise ConversionError(f"{path!r}: tensor {key!r} is not named like an official YOLOv7 "
                                  "layer ('model.<index>.<name>'): not a YOLOv7 checkpoint.")
    detect = max(layers)
    if not any(rest.startswith("m.0.") for _, rest in layers[detect]):
        raise ConversionError(f"{path!r}: its last layer (model.{detect}) is not a YOLOv7 Detect "
                              "layer (no m.0.weight): not a YOLOv7 checkpoint.")
    body = [key for i in sorted(layers) if i != detect for key, _ in layers[i]]
    return body, dict((rest, key) for key, rest in layers[detect])


def _is_detect_key(key: str) -> bool:
    return key == "anchors" or any(
        key.startswith(p) for p in ("head.predictors.", "head.implicit_", "aux_head.predictors.")
    )


def _anchors_from(detect: Dict[str, str], state, strides: List[int]) -> torch.Tensor:
    """(L, A, 2) pixel anchors from the detect layer's ``anchor_grid`` (pixels) or ``anchors``
    (grid units, multiplied by the strides)."""
    if "anchor_grid" in detect:
        grid = state[detect["anchor_grid"]]
        return grid.reshape(grid.shape[0], -1, 2).clone()
    anchors = state[detect["anchors"]]
    return anchors * torch.tensor(strides, dtype=anchors.dtype).view(-1, 1, 1)


def official_to_yolov7(state: Dict[str, torch.Tensor], model: nn.Module,
                       path: str = "checkpoint", *,
                       any_num_classes: bool = False) -> "OrderedDict[str, torch.Tensor]":
    """Map an official state dict (from :func:`read_official_checkpoint`) onto ``model``
    (a :class:`yolov7_d2.modeling.YOLOv7` of the same scale and class count).

    With ``any_num_classes``, the prediction convs and ImplicitM vectors may predict another
    class count: they keep the checkpoint's shapes, for :func:`yolov7_d2.finetune.adapt_class_rows`.

    Raises :class:`ConversionError` naming every missing, unused or mis-shaped tensor.
    """
    ours = model.state_dict()
    body_official, detect = _split_layers(state, path)
    body_ours = [k for k in ours if not _is_detect_key(k)]
    converted: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    problems: List[str] = []
    for theirs, mine in zip(body_official, body_ours):
        kind_theirs, kind_mine = theirs.rsplit(".", 1)[1], mine.rsplit(".", 1)[1]
        if kind_theirs != kind_mine or state[theirs].shape != ours[mine].shape:
            problems.append(f"{theirs} {tuple(state[theirs].shape)} does not fit {mine} "
                            f"{tuple(ours[mine].shape)}")
            break  # everything after a misalignment would be reported too
        converted[mine] = state[theirs]
    if not problems and len(body_official) != len(body_ours):
        extra = body_official[len(body_ours):] or body_ours[len(body_official):]
        side = "unused in the checkpoint" if len(body_official) > len(body_ours) else "missing"
        problems.append(f"{len(extra)} tensors {side}, first {extra[:5]}")

    renames = {"m.": "head.predictors.", "m2.": "aux_head.predictors.",
               "ia.": "head.implicit_a.", "im.": "head.implicit_m."}
    for rest, theirs in detect.items():
        if rest in ("anchors", "anchor_grid"):
            continue
        prefix = next((p for p in renames if rest.startswith(p)), None)
        mine = renames[prefix] + rest[len(prefix):] if prefix else None
        if mine not in ours:
            problems.append(f"{theirs} has no counterpart in the model (expected {mine})")
        elif state[theirs].shape != ours[mine].shape and not (
                any_num_classes and is_class_dependent(mine)):
            problems.append(f"{theirs} {tuple(state[theirs].shape)} does not fit {mine} "
                            f"{tuple(ours[mine].shape)} (check MODEL.YOLOV7.NUM_CLASSES)")
        else:
            converted[mine] = state[theirs]
    converted["anchors"] = _anchors_from(detect, state, model.strides)
    if converted["anchors"].shape != ours["anchors"].shape:
        problems.append(f"anchors {tuple(converted['anchors'].shape)} do not fit the model's "
                        f"{tuple(ours['anchors'].shape)}")
    missing = [k for k in ours if k not in converted]
    if missing and not problems:
        problems.append(f"{len(missing)} model tensors missing from the checkpoint: {missing[:6]}"
                        " (an official checkpoint without auxiliary head needs "
                        "MODEL.YOLOV7.AUX_HEAD False; "
                        "a Detect checkpoint needs MODEL.YOLOV7.DEPLOY True)")
    if problems:
        raise ConversionError(f"{path!r} does not fit the configured model: " + "; ".join(problems))
    return OrderedDict((k, converted[k]) for k in ours)
