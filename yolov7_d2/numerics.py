"""Numerical faults in training: a non-finite loss, or non-finite weights after an optimizer
step, stop training with an error before anything non-finite reaches the EMA or a checkpoint;
and no checkpoint of non-finite weights is ever written.

Training-mode BatchNorm folds each batch's statistics into its running buffers during the
forward pass, before there is a loss to check: :class:`BufferSnapshot` keeps their values
from before the batch so that a bad batch can be undone. The checks on the training path are
fused reductions with one host sync each (:func:`all_finite`); tensors are named one by one
only once a fault is found.
"""
import math
from typing import Any, Iterable, List, Mapping, Sequence, Tuple

import torch
from torch import Tensor, nn

__all__ = [
    "BufferSnapshot",
    "all_finite",
    "non_finite_names",
    "non_finite_loss_error",
    "check_finite_parameters",
    "check_finite_checkpoint",
]

#: Tensor names listed in an error message before "and N more".
MAX_NAMES = 5


@torch.no_grad()
def all_finite(tensors: Sequence[Tensor]) -> bool:
    """Whether every element of every tensor is finite (integer tensors always are).

    The L2 norm of all floating-point tensors, fused per device and dtype by
    ``torch.nn.utils.get_total_norm``, then one host sync: finite only if every element is.
    Only when it is not (a NaN or an infinity; or squares overflowing, elements over ~1e19)
    are the tensors checked one by one. (The fused max |x| would be exact at once, but it
    costs 8x the L2 norm on the CPU: 24 ms against 3 ms for yolov7-tiny's weights.)
    """
    tensors = [t for t in tensors if t.is_floating_point()]
    if not tensors or bool(torch.isfinite(torch.nn.utils.get_total_norm(tensors, 2.0))):
        return True
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def non_finite_names(named_tensors: Iterable[Tuple[str, Tensor]]) -> List[str]:
    """Names of the floating-point tensors holding a NaN or an infinity (one check each)."""
    return [name for name, t in named_tensors
            if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def _listing(names: Sequence[str]) -> str:
    more = f" and {len(names) - MAX_NAMES} more" if len(names) > MAX_NAMES else ""
    return ", ".join(names[:MAX_NAMES]) + more


class BufferSnapshot:
    """The buffers of a model (BatchNorm running statistics and counters) as they were at the
    last :meth:`save`, to put back with :meth:`restore` after a batch whose loss is not
    finite. The copies are allocated once and refreshed in place (one fused copy per step)."""

    def __init__(self):
        self._buffers: List[Tensor] = []
        self._copies: List[Tensor] = []

    def save(self, model: nn.Module) -> None:
        buffers = list(model.buffers())
        # Re-allocated only if the module's buffer tensors were replaced (e.g. by .to()).
        if len(buffers) != len(self._buffers) or any(
                a is not b for a, b in zip(buffers, self._buffers)):
            self._buffers, self._copies = buffers, [b.detach().clone() for b in buffers]
        elif buffers:
            torch._foreach_copy_(self._copies, buffers)

    def restore(self) -> None:
        if self._buffers:
            torch._foreach_copy_(self._buffers, self._copies)


def _batch_faults(batch: Sequence[Mapping[str, Any]]) -> List[str]:
    """The inputs of a batch with non-finite pixels or ground-truth boxes, by file name."""
    faults = []
    for i, sample in enumerate(batch):
        name = sample.get("file_name", f"batch item {i}")
        image = sample.get("image")
        if isinstance(image, Tensor) and image.is_floating_point() and \
                not bool(torch.isfinite(image).all()):
            faults.append(f"{name} (pixels)")
        instances = sample.get("instances")
        if instances is not None and instances.has("gt_boxes") and \
                not bool(torch.isfinite(instances.gt_boxes.tensor).all()):
            faults.append(f"{name} (ground-truth boxes)")
    return faults


def non_finite_loss_error(loss_dict: Mapping[str, Tensor], iteration: int,
                          batch: Sequence[Mapping[str, Any]] = ()) -> FloatingPointError:
    """The error for a loss dict whose sum is not finite: it names the non-finite terms, the
    iteration and, if the batch has non-finite inputs, their files."""
    values = {k: float(v.detach()) for k, v in loss_dict.items()}
    bad = ", ".join(f"{k} = {v}" for k, v in values.items() if not math.isfinite(v))
    finite = ", ".join(f"{k} = {v:.4g}" for k, v in values.items() if math.isfinite(v))
    # All terms finite but their sum not (overflow): the terms say it.
    terms = f"{bad} (finite: {finite})" if bad and finite else bad or finite
    faults = _batch_faults(batch)
    if faults:
        cause = f"The batch has non-finite inputs: {_listing(faults)}; check the data."
    else:
        cause = ("The batch's images and boxes are finite: training diverged; lower "
                 "SOLVER.BASE_LR or lengthen SOLVER.WARMUP_ITERS.")
    return FloatingPointError(
        f"Non-finite loss at iteration {iteration}: {terms}. {cause} "
        "Training stopped; the BatchNorm statistics are those from before this batch, and the "
        "weights, the EMA and the checkpoints written so far are finite."
    )


def check_finite_parameters(model: nn.Module, iteration: int) -> None:
    """Raise ``FloatingPointError`` naming the parameters of ``model`` that an optimizer step
    made non-finite (call it after the step, before the EMA update)."""
    if all_finite(list(model.parameters())):
        return
    module = getattr(model, "module", model)  # unwrap DistributedDataParallel
    names = non_finite_names(module.named_parameters())
    raise FloatingPointError(
        f"{len(names)} parameter tensors are not finite after the optimizer step of iteration "
        f"{iteration} ({_listing(names)}), although the loss was finite: gradients overflowed "
        "or SOLVER.BASE_LR is too high; lower it. Training stopped before the EMA update: the "
        "EMA and the checkpoints written so far are finite."
    )


def _named_tensors(state: Any, prefix: str) -> Iterable[Tuple[str, Tensor]]:
    """(name, tensor) for every tensor in a nested state dict."""
    if isinstance(state, Tensor):
        yield prefix, state
    elif isinstance(state, Mapping):
        for key, value in state.items():
            yield from _named_tensors(value, f"{prefix}.{key}" if prefix else str(key))


def check_finite_checkpoint(name: str, states: Mapping[str, Any]) -> None:
    """Raise ``FloatingPointError`` instead of writing checkpoint ``name`` when a tensor of
    ``states`` (nested state dicts, e.g. {"model": ..., "ema": ...}) is not finite: such a
    checkpoint would evaluate to nothing and, resumed, train nothing."""
    named = dict(_named_tensors(states, ""))
    if all_finite(list(named.values())):
        return
    bad = non_finite_names(named.items())
    raise FloatingPointError(
        f"Refusing to write checkpoint {name!r}: {len(bad)} tensors are not finite "
        f"({_listing(bad)}). The checkpoints written before are kept, and last_checkpoint "
        "still names the last of them."
    )
