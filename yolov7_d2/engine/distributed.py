"""Keeping the BatchNorm statistics of all processes of a distributed run the same."""
from typing import List, Optional

import torch
import torch.distributed as dist
from torch import nn

from detectron2.utils import comm

from .ema import unwrap_model

__all__ = ["batchnorm_buffers", "average_batchnorm_buffers"]


def batchnorm_buffers(model: nn.Module) -> List[torch.Tensor]:
    """``running_mean`` and ``running_var`` of every BatchNorm layer of ``model`` (the module
    inside DistributedDataParallel), in module order."""
    buffers = []
    for module in unwrap_model(model).modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            buffers += [module.running_mean, module.running_var]
    return buffers


@torch.no_grad()
def average_batchnorm_buffers(*models: Optional[nn.Module]) -> None:
    """Replace the BatchNorm running statistics of ``models`` (None entries are skipped) by
    their mean over all processes, in place; a no-op outside a distributed run. Every process
    must call it, with the same models.

    The trainer's DistributedDataParallel is built with ``broadcast_buffers=False``, so each
    process updates its statistics from its own images only and the replicas' buffers drift
    apart, while their parameters stay identical. Evaluation runs on every process (each
    on its share of the images) and needs one model. Averaging, rather than broadcasting
    process 0's statistics, makes them estimates over the images of all processes, as a
    single process seeing the whole batch would have (official train.py broadcasts the
    buffers at every forward, so its evaluated statistics come from process 0's images only).
    The mean of the variances leaves out the spread between the processes' means: the
    statistics are running averages over past batches anyway.
    """
    world_size = comm.get_world_size()
    buffers = [b for m in models if m is not None for b in batchnorm_buffers(m)]
    if world_size == 1 or not buffers:
        return
    # One collective for all layers: flattened into a float32 vector and back.
    flat = torch.cat([b.detach().reshape(-1).float() for b in buffers])
    dist.all_reduce(flat)
    flat /= world_size
    for buffer, value in zip(buffers, flat.split([b.numel() for b in buffers])):
        buffer.copy_(value.view_as(buffer))
