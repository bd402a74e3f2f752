"""Partial loading of checkpoints: fine-tuning to other classes, ImageNet backbone weights.

Official train.py (``--weights`` with another data.yaml) loads the tensors whose shapes match,
so with another class count each prediction conv starts from scratch. Here every
class-independent tensor is kept: the backbone, the neck, the 3x3 head convs, ImplicitA (it
acts on the prediction conv's input channels) and, of each prediction conv and of the ImplicitM
vector after it (one value per output channel), the box and objectness rows. The class rows
keep the model's initialisation, the official prior of :func:`modeling.head.init_prediction_bias`;
optionally the rows of classes that both label sets name alike are kept too.

A checkpoint of the bottom-up network alone (a detectron2 / Caffe2 model-zoo ``.pkl`` of a
ResNet, a timm state dict) is mapped into the bottom-up backbone under the neck.
"""
import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from tabulate import tabulate
from torch import nn

from detectron2.checkpoint.c2_model_loading import convert_c2_detectron_names
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from .modeling.backbone import TimmBackbone

__all__ = [
    "COCO_CLASSES", "is_class_dependent", "checkpoint_class_names", "shared_class_map",
    "prediction_rows", "adapt_class_rows", "bottom_up_prefix", "bottom_up_state",
]

logger = logging.getLogger(__name__)

# The 80 COCO classes in the official (coco.yaml) order, which is detectron2's: the names of an
# 80-class checkpoint that carries none.
COCO_CLASSES = tuple(c["name"] for c in COCO_CATEGORIES if c["isthing"])

# Rows x, y, w, h, objectness come before the class rows of each anchor.
_BOX_OBJ = 5


def is_class_dependent(key: str) -> bool:
    """Whether a model state-dict entry has one row per prediction channel
    (anchors x (5 + classes)): the prediction convs and the ImplicitM vectors after them."""
    return ".predictors." in key or ".implicit_m." in key


def _channel_dim(key: str) -> int:
    """Dimension of the prediction channels: ImplicitM vectors are (1, C, 1, 1)."""
    return 1 if ".implicit_m." in key else 0


def checkpoint_class_names(names: Optional[Sequence[str]], num_classes: int) -> Optional[List[str]]:
    """The class names of a checkpoint predicting ``num_classes`` classes, None if unknown.

    ``names`` is what the checkpoint carries (official: the model's ``names``; ours:
    "thing_classes"). Names of another count and the placeholders "0", "1", ... that the
    official model holds until train.py names it are unknown; an 80-class checkpoint without
    names is taken to be COCO's.
    """
    names = list(names or [])
    placeholders = [str(i) for i in range(num_classes)]
    if len(names) == num_classes and names != placeholders:
        return [str(n) for n in names]
    return list(COCO_CLASSES) if num_classes == len(COCO_CLASSES) else None


def shared_class_map(class_names: Sequence[str], checkpoint_names: Sequence[str]) -> Dict[int, int]:
    """Model class index -> checkpoint class index, for every model class whose name is a
    checkpoint class name (case and surrounding spaces ignored)."""
    index = {name.strip().lower(): i for i, name in enumerate(checkpoint_names)}
    return {i: index[name.strip().lower()] for i, name in enumerate(class_names)
            if name.strip().lower() in index}


def prediction_rows(num_anchors: int, num_classes: int, checkpoint_classes: int,
                    class_map: Mapping[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """The prediction channels taken from the checkpoint: for each anchor the box and
    objectness rows, and the class rows of ``class_map``.

    Channels are anchor-major, [x, y, w, h, obj, class 0 .. K-1] for each of the A anchors.

    Args:
        num_anchors: A; num_classes: K of the model; checkpoint_classes: K' of the checkpoint.
        class_map: model class index -> checkpoint class index.
    Returns:
        (model_rows, checkpoint_rows): two int64 tensors of A * (5 + len(class_map)) indices
        into the A * (5 + K) and A * (5 + K') channels.
    """
    pairs = [(j, j) for j in range(_BOX_OBJ)]
    pairs += [(_BOX_OBJ + mine, _BOX_OBJ + theirs) for mine, theirs in class_map.items()]
    mine = [a * (_BOX_OBJ + num_classes) + m for a in range(num_anchors) for m, _ in pairs]
    theirs = [a * (_BOX_OBJ + checkpoint_classes) + t for a in range(num_anchors) for _, t in pairs]
    return torch.tensor(mine, dtype=torch.int64), torch.tensor(theirs, dtype=torch.int64)


def _merge_rows(key: str, current: torch.Tensor, loaded, rows) -> torch.Tensor:
    """``current`` with the ``rows`` (model, checkpoint) of ``loaded`` copied in."""
    dim = _channel_dim(key)
    loaded = torch.as_tensor(loaded)
    if loaded.dim() != current.dim() or any(
            a != b for d, (a, b) in enumerate(zip(loaded.shape, current.shape)) if d != dim):
        raise ValueError(f"{key}: checkpoint {tuple(loaded.shape)} vs model "
                         f"{tuple(current.shape)} differ beyond the class rows")
    merged = current.detach().clone()
    merged.index_copy_(dim, rows[0], loaded.index_select(dim, rows[1]).to(merged.dtype))
    return merged


def _names(names: Sequence[str], limit: int = 6) -> str:
    """"3: a, b, c" (the first ``limit`` names, then "..."), or "none"."""
    if not names:
        return "none"
    more = ", ..." if len(names) > limit else ""
    return f"{len(names)}: {', '.join(names[:limit])}{more}"


def _class_map(class_names, checkpoint_names, num_classes, checkpoint_classes,
               keep_shared_classes) -> Tuple[Dict[int, int], str]:
    """(model -> checkpoint class index map, why) for the class rows."""
    if not keep_shared_classes:
        return {}, (f"checkpoint: {checkpoint_classes} classes, model: {num_classes}; official "
                    "prior (MODEL.YOLOV7.KEEP_SHARED_CLASSES keeps classes named alike)")
    if checkpoint_names is None or not class_names:
        side = "the checkpoint" if checkpoint_names is None else "the training dataset"
        raise ValueError(f"MODEL.YOLOV7.KEEP_SHARED_CLASSES needs class names, but {side} has "
                         "none (official: the model's names; ours: thing_classes)")
    return shared_class_map(class_names, checkpoint_names), (
        f"KEEP_SHARED_CLASSES: names shared by the checkpoint's {checkpoint_classes} classes and "
        f"the dataset's {num_classes}; the others: official prior")


def adapt_class_rows(state: Dict[str, Any], model: nn.Module, *,
                     checkpoint_names: Optional[Sequence[str]] = None,
                     class_names: Sequence[str] = (), keep_shared_classes: bool = False,
                     source: str = "checkpoint") -> Dict[str, Any]:
    """Fit the class-dependent tensors of ``state`` (a state dict of ``model``'s architecture
    predicting any number of classes) to ``model``, logging a table of what was loaded.

    Args:
        state: model names -> tensors; the prediction convs and ImplicitM vectors may hold
            another class count K'.
        model: the :class:`~yolov7_d2.modeling.YOLOv7` to fit, freshly built: its class rows
            are kept where the checkpoint's are not used.
        checkpoint_names: the names the checkpoint carries (see :func:`checkpoint_class_names`).
        class_names: the model's K class names (the training dataset's ``thing_classes``).
        keep_shared_classes: also keep the class rows of classes named alike.
        source: the file, for messages.
    Returns:
        ``state`` with the class-dependent tensors replaced by model-shaped ones; ``state``
        itself when K' = K and ``keep_shared_classes`` is off (a plain load).
    Raises:
        ValueError: the prediction tensors do not fit beyond their class rows, or class names
            are needed and missing.
    """
    current = model.state_dict()
    keys = [k for k in state if is_class_dependent(k) and k in current]
    if not keys:
        return state
    num_anchors, num_classes = model.anchors.shape[1], model.num_classes
    channels = state[keys[0]].shape[_channel_dim(keys[0])]
    if channels % num_anchors or channels // num_anchors <= _BOX_OBJ:
        raise ValueError(f"{keys[0]} has {channels} prediction channels: not {num_anchors} "
                         "anchors x (5 + classes)")
    checkpoint_classes = channels // num_anchors - _BOX_OBJ
    if checkpoint_classes == num_classes and not keep_shared_classes:
        return state
    checkpoint_names = checkpoint_class_names(checkpoint_names, checkpoint_classes)
    class_map, why = _class_map(class_names, checkpoint_names, num_classes, checkpoint_classes,
                                keep_shared_classes)
    rows = prediction_rows(num_anchors, num_classes, checkpoint_classes, class_map)
    adapted = dict(state)
    for key in keys:
        adapted[key] = _merge_rows(key, current[key], state[key], rows)
    plain = [k for k in state if k in current and not is_class_dependent(k)]
    _log_class_table(source, len(plain), len(keys), class_map, class_names, checkpoint_names,
                     num_classes, why)
    return adapted


def _log_class_table(source, num_plain, num_class_dependent, class_map, class_names,
                     checkpoint_names, num_classes, why) -> None:
    names = list(class_names) or [str(i) for i in range(num_classes)]
    kept = []  # class_map is empty unless the checkpoint's names are known
    for i, j in sorted(class_map.items()):
        renamed = checkpoint_names[j] != names[i]
        kept.append(f"{names[i]} (<- {checkpoint_names[j]})" if renamed else names[i])
    fresh = [names[i] for i in range(num_classes) if i not in class_map]
    table = [
        ("backbone, neck, 3x3 head convs, ImplicitA, anchors", f"{num_plain} tensors", "",
         "class independent (ImplicitA acts on the prediction conv's input)"),
        ("prediction convs + ImplicitM: x, y, w, h, obj rows", f"{num_class_dependent} tensors", "",
         "class independent"),
        ("prediction convs + ImplicitM: class rows", _names(kept), _names(fresh), why),
    ]
    logger.info("Fine-tuning from %s:\n%s", source, tabulate(
        table, headers=["tensors", "loaded", "re-initialised", "why"], tablefmt="pipe"))


def bottom_up_prefix(model: nn.Module) -> str:
    """State-dict prefix of the bottom-up network under the neck ("backbone.bottom_up.")."""
    bottom_up = getattr(model.backbone, "bottom_up", None)
    for name, module in model.named_modules():
        if module is bottom_up:
            return name + "."
    raise ValueError(f"{type(model.backbone).__name__} wraps no bottom-up network")


def bottom_up_state(state: Dict[str, Any], model: nn.Module, *, caffe2_names: bool = False,
                    source: str = "checkpoint") -> Dict[str, Any]:
    """Map the weights of a bottom-up network alone (an ImageNet model) to ``model``'s names,
    logging a table of what was loaded.

    Args:
        state: detectron2 ResNet names ("res2.0.conv1.weight": detectron2 / torchvision model-zoo
            ``.pkl``), Caffe2 names ("res2_0_branch2a_w", with ``caffe2_names``) or the names of
            the full timm model (for a :class:`TimmBackbone`).
        model: the YOLOv7 model.
    Returns:
        The tensors that fit the bottom-up network, under the model's names (an empty dict
        when none does); the rest (a classifier) is left out.
    """
    if caffe2_names:
        state, _ = convert_c2_detectron_names(state)
    prefix = bottom_up_prefix(model)
    bottom_up = model.get_submodule(prefix[:-1])
    if isinstance(bottom_up, TimmBackbone):
        names = bottom_up.names_of_timm_state_dict(state)
    else:
        names = {k: k for k in state}
    own = bottom_up.state_dict()
    loaded = {names[k]: v for k, v in state.items() if names.get(k) in own}
    if loaded:
        unused = [k for k in state if names.get(k) not in own]
        _log_bottom_up_table(source, prefix, own, loaded, unused)
    return {prefix + k: v for k, v in loaded.items()}


def _top_modules(keys: Sequence[str]) -> List[str]:
    """The module of each state-dict name one level below the names' common prefix."""
    parts = [k.split(".") for k in keys]
    depth = 0
    while all(len(p) > depth + 2 for p in parts) and len({p[depth] for p in parts}) == 1:
        depth += 1
    return [".".join(p[:depth + 1]) for p in parts]


def _log_bottom_up_table(source, prefix, own, loaded, unused) -> None:
    groups: Dict[str, List[int]] = {}
    for key, group in zip(own, _top_modules(list(own))):
        counts = groups.setdefault(group, [0, 0])
        counts[0 if key in loaded else 1] += 1
    table = [(group, n, m) for group, (n, m) in groups.items()]
    unused_text = f"; unused: {_names(unused)}" if unused else ""
    logger.info("Loading %s into %s (the neck and the head keep their initialisation%s):\n%s",
                source, prefix[:-1], unused_text, tabulate(
                    table, headers=["module", "loaded", "not in the checkpoint"], tablefmt="pipe"))
