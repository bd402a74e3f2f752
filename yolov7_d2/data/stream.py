"""The training data stream of YOLOv7: batches that are a function of the seeds and of the
iteration alone, so that a run resumed from a checkpoint sees the batches that the
uninterrupted run would have seen.

Sample ``p`` of a process's stream (``p = iteration * batch_size + slot``) is the ``p``-th
index of the training sampler (detectron2's ``TrainingSampler`` by default: a seeded shuffle
per epoch, each process its share), mapped by the mapper with its random stream of
``(seed, rank, iteration, slot)``. Nothing else is drawn, so resuming needs only the two
seeds (:meth:`YOLOv7TrainLoader.state_dict`; with ``SEED`` set they are the same in every run
anyway) and :attr:`YOLOv7TrainLoader.start_iter` set to the first iteration to run.

Each dataloader worker maps whole batches: worker ``w`` of ``K`` the batches of iterations
``start_iter + w``, ``start_iter + w + K``, ...; PyTorch's loader returns them in that
round-robin order, i.e. in iteration order. The samples are the same whatever the number of
workers, and the mapper knows the iteration of each sample exactly (close mosaic switches at
its iteration, not at a prefetch-dependent one).
"""
import itertools
from typing import Dict, Iterator, List, Optional

import torch

from detectron2.data.build import trivial_batch_collator, worker_init_reset_seed
from detectron2.data.samplers import TrainingSampler

__all__ = ["YOLOv7TrainLoader"]


class _Batches(torch.utils.data.IterableDataset):
    """This worker's share of the batches from iteration ``start_iter`` on (see the module
    doc). The sampler is iterated in full by each worker: indices are cheap."""

    def __init__(self, dataset, mapper, sampler, batch_size: int, start_iter: int):
        self.dataset, self.mapper, self.sampler = dataset, mapper, sampler
        self.batch_size, self.start_iter = batch_size, start_iter

    def __iter__(self) -> Iterator[List[dict]]:
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        indices = itertools.islice(iter(self.sampler), self.start_iter * self.batch_size, None)
        for iteration in itertools.count(self.start_iter):
            batch = list(itertools.islice(indices, self.batch_size))
            if (iteration - self.start_iter) % num_workers == worker:
                yield [self.mapper(self.dataset[int(index)], iteration=iteration, slot=slot)
                       for slot, index in enumerate(batch)]


class YOLOv7TrainLoader:
    """Infinite iterable of training batches (lists of ``batch_size`` mapped dicts) whose
    iterators start at iteration :attr:`start_iter` (see the module doc).

    Args:
        mapper: called as ``mapper(dataset_dict, iteration=i, slot=s)``; its ``dataset`` is
            sampled (a :class:`~yolov7_d2.data.YOLOv7MosaicMapper`).
        batch_size (int): images per batch in this process.
        sampler: an infinite sampler of indices into ``mapper.dataset``, already sharded by
            process (detectron2's training samplers are); default: a ``TrainingSampler``.
        num_workers (int): dataloader worker processes (0: map in this process).
    """

    def __init__(self, mapper, *, batch_size: int, sampler=None, num_workers: int = 0):
        if mapper.dataset is None:
            raise ValueError("the mapper has no dataset_dicts to draw samples from")
        self.mapper, self.batch_size, self.num_workers = mapper, int(batch_size), num_workers
        self.sampler = sampler if sampler is not None else TrainingSampler(len(mapper.dataset))
        #: The iteration whose batch the next ``iter(loader)`` yields first.
        self.start_iter = 0

    def state_dict(self) -> Dict[str, Optional[int]]:
        """The seeds of the mapper and of the sampler (None if it has no ``_seed``)."""
        return {"mapper_seed": self.mapper.seed,
                "sampler_seed": getattr(self.sampler, "_seed", None)}

    def load_state_dict(self, state: Dict[str, Optional[int]]) -> None:
        self.mapper.seed = state["mapper_seed"]
        if state["sampler_seed"] is not None and hasattr(self.sampler, "_seed"):
            # detectron2's TrainingSampler and RepeatFactorTrainingSampler draw each epoch's
            # order from ``_seed`` when iterated (RandomSubsetTrainingSampler's subset is drawn
            # at construction, from SEED).
            self.sampler._seed = state["sampler_seed"]

    def __iter__(self) -> Iterator[List[dict]]:
        return self._iterate(self.start_iter)

    def _iterate(self, start_iter: int) -> Iterator[List[dict]]:
        # A generator: workers start at the first batch asked for, so an iterator replaced
        # before (detectron2's trainer makes one at construction, before resuming) costs nothing.
        batches = _Batches(self.mapper.dataset, self.mapper, self.sampler, self.batch_size,
                           start_iter)
        # batch_size=None: the dataset yields whole batches, passed through unchanged.
        yield from torch.utils.data.DataLoader(
            batches, batch_size=None, num_workers=self.num_workers,
            collate_fn=trivial_batch_collator, worker_init_fn=worker_init_reset_seed)
