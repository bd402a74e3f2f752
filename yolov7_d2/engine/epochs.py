"""Epoch-based schedules: the official train.py counts in epochs of the training set, detectron2
in iterations. The epoch keys are turned into iteration keys once, from the number of training
images and the batch size, into a new config before the trainer is built.

The rule for keys given both ways: an iteration key the user set wins over the epoch key.
For yaml configs "set" means named in the config file (or one of its ``_BASE_`` files) or in
the command-line options (:func:`yolov7_d2.config.keys_set_by`), whatever the value; for
LazyConfigs it means not ``None``.
"""
import copy
import functools
import logging
import math
from dataclasses import dataclass
from typing import Dict, Iterable, Mapping, Set

__all__ = ["EpochSchedule", "count_training_images", "resolve_epoch_schedule",
           "resolve_lazy_epoch_schedule"]

logger = logging.getLogger(__name__)

#: Iteration quantity -> the yaml key it fills.
YAML_KEYS = {"max_iter": "SOLVER.MAX_ITER", "warmup_iters": "SOLVER.WARMUP_ITERS",
             "checkpoint_period": "SOLVER.CHECKPOINT_PERIOD", "eval_period": "TEST.EVAL_PERIOD"}
#: Iteration quantity -> the LazyConfig key it fills.
LAZY_KEYS = {"max_iter": "train.max_iter", "warmup_iters": "train.warmup_iters",
             "checkpoint_period": "train.checkpointer.period", "eval_period": "train.eval_period"}


@dataclass(frozen=True)
class EpochSchedule:
    """A schedule in epochs of ``num_images`` images at ``batch_size`` images per iteration.

    An epoch is ceil(num_images / batch_size) iterations (official: ``len(dataloader)``, the
    last batch partial); the warm-up lasts max(round(warmup_epochs epochs), min_warmup_iters)
    iterations (official: max(3 epochs, 1000 iterations)). Periods of 0 epochs are not derived.
    """

    num_images: int
    batch_size: int
    epochs: int
    warmup_epochs: float = 3.0
    min_warmup_iters: int = 1000
    checkpoint_period_epochs: int = 0
    eval_period_epochs: int = 0

    @property
    def iterations_per_epoch(self) -> int:
        return max(math.ceil(self.num_images / self.batch_size), 1)

    def iterations(self) -> Dict[str, int]:
        """Iterations by quantity: "max_iter", "warmup_iters", and "checkpoint_period" /
        "eval_period" when their epochs are positive."""
        per_epoch = self.iterations_per_epoch
        out = {"max_iter": self.epochs * per_epoch,
               "warmup_iters": max(round(self.warmup_epochs * per_epoch), self.min_warmup_iters)}
        if self.checkpoint_period_epochs > 0:
            out["checkpoint_period"] = self.checkpoint_period_epochs * per_epoch
        if self.eval_period_epochs > 0:
            out["eval_period"] = self.eval_period_epochs * per_epoch
        return out

    def summary(self, used: Mapping[str, int], keys: Mapping[str, str], kept: Set[str]) -> str:
        """One log line: the schedule ``used`` (quantity -> iterations), naming the config
        ``keys`` of the quantities ``kept`` as set instead of derived."""
        derived = self.iterations()

        def source(name: str, derived_text: str) -> str:
            if name in kept:
                return f"{keys[name]} set"
            return derived_text if name in derived else keys[name]

        def period(name: str, what: str, epochs: int) -> str:
            if used[name] <= 0:
                return f"{what} at the end only"
            return f"{what} every {used[name]} iterations ({source(name, f'{epochs} epochs')})"

        length = f"{self.epochs} epochs = {used['max_iter']} iterations"
        if "max_iter" in kept:
            length = (f"{used['max_iter']} iterations ({keys['max_iter']} set; {self.epochs} "
                      f"epochs would be {derived['max_iter']})")
        warmup = source("warmup_iters", f"max({self.warmup_epochs:g} epochs, "
                                        f"{self.min_warmup_iters})")
        return (f"Schedule: {self.num_images} images, batch {self.batch_size} -> "
                f"{self.iterations_per_epoch} iterations/epoch; {length}; warm-up "
                f"{used['warmup_iters']} iterations ({warmup}); "
                f"{period('eval_period', 'eval', self.eval_period_epochs)}, "
                f"{period('checkpoint_period', 'checkpoint', self.checkpoint_period_epochs)}")


def count_training_images(cfg) -> int:
    """Images of ``cfg.DATASETS.TRAIN`` as training loads them (empty ones left out with
    ``DATALOADER.FILTER_EMPTY_ANNOTATIONS``)."""
    from detectron2.data import get_detection_dataset_dicts

    return len(get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS))


def _get(cfg, key: str):
    return functools.reduce(getattr, key.split("."), cfg)


def _fill(cfg, schedule: EpochSchedule, keys: Mapping[str, str], is_set: Set[str]) -> None:
    """Write the derived iterations into ``keys`` of ``cfg`` (a copy), except the keys that
    ``is_set``; log the schedule (and a warning when the warm-up covers the whole run)."""
    derived = schedule.iterations()
    kept = {name for name in derived if keys[name] in is_set}
    used = {name: derived[name] if name in derived and name not in kept else _get(cfg, key)
            for name, key in keys.items()}
    missing = [keys[name] for name, value in used.items() if value is None]
    if missing:
        raise ValueError(f"{', '.join(missing)}: not set, and no epoch key gives it")
    for name, key in keys.items():
        parent, _, leaf = key.rpartition(".")
        setattr(_get(cfg, parent), leaf, used[name])
    logger.info(schedule.summary(used, keys, kept))
    if used["warmup_iters"] >= used["max_iter"]:
        logger.warning(
            "The warm-up (%d iterations) lasts the whole run (%d): with %d images an epoch is "
            "%d iterations, and the official warm-up is at least %d iterations. Lower %s or "
            "the minimum, or train longer.", used["warmup_iters"], used["max_iter"],
            schedule.num_images, schedule.iterations_per_epoch, schedule.min_warmup_iters,
            keys["warmup_iters"])


def resolve_epoch_schedule(cfg, num_images: int, explicit: Iterable[str] = ()):
    """A frozen copy of the yaml config ``cfg`` whose SOLVER.MAX_ITER, SOLVER.WARMUP_ITERS,
    SOLVER.CHECKPOINT_PERIOD and TEST.EVAL_PERIOD come from SOLVER.YOLOV7.EPOCHS (and the
    other epoch keys) for ``num_images`` training images, except the keys in ``explicit``
    (dotted names: those the user set, see :func:`yolov7_d2.config.keys_set_by`).
    ``cfg`` itself when SOLVER.YOLOV7.EPOCHS is 0."""
    solver = cfg.SOLVER.YOLOV7
    if solver.EPOCHS <= 0:
        return cfg
    schedule = EpochSchedule(
        num_images, cfg.SOLVER.IMS_PER_BATCH, solver.EPOCHS, solver.WARMUP_EPOCHS,
        solver.MIN_WARMUP_ITERS, solver.CHECKPOINT_PERIOD_EPOCHS,
        cfg.TEST.YOLOV7.EVAL_PERIOD_EPOCHS)
    cfg = cfg.clone()
    cfg.defrost()
    _fill(cfg, schedule, YAML_KEYS, set(explicit))
    cfg.freeze()
    return cfg


def resolve_lazy_epoch_schedule(cfg, num_images: int):
    """A copy of the LazyConfig ``cfg`` whose ``train.max_iter``, ``train.warmup_iters``,
    ``train.checkpointer.period`` and ``train.eval_period`` left ``None`` come from
    ``train.epochs`` (and the other epoch keys) for ``num_images`` training images.
    ``cfg`` itself when ``train.epochs`` is 0 or absent."""
    train = cfg.train
    is_set = {key for key in LAZY_KEYS.values() if _get(cfg, key) is not None}
    if not train.get("epochs"):
        if len(is_set) < len(LAZY_KEYS):
            raise ValueError(f"{', '.join(sorted(set(LAZY_KEYS.values()) - is_set))}: None "
                             "(from the epochs) but train.epochs is not set")
        return cfg
    schedule = EpochSchedule(
        num_images, cfg.dataloader.train.total_batch_size, train.epochs, train.warmup_epochs,
        train.min_warmup_iters, train.checkpoint_period_epochs, train.eval_period_epochs)
    cfg = copy.deepcopy(cfg)
    _fill(cfg, schedule, LAZY_KEYS, is_set)
    return cfg
