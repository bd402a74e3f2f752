"""Config errors reported before anything is built, each naming the key or file and the fix.

yacs and detectron2 report a typo as "Non-existent config key", a value of another type as
"Type mismatch (<class 'int'> vs. <class 'str'>) ...", a missing ``_BASE_`` as a
FileNotFoundError that names only the base, and a zero batch size or checkpoint period only as
a ZeroDivisionError in the middle of training. Here:

* :func:`merge_config` (the core of :func:`yolov7_d2.config.load_config`, which every entry
  point calls) checks that the config file and its ``_BASE_`` files exist and parse, then
  merges them and the "KEY VALUE" options, turning yacs' errors into a :class:`ConfigError`:
  an unknown key with its close matches (difflib), a value with the type the key takes.
* :func:`check_config` (train_net.py, before the trainer is built) checks the values: the
  scale, class count and widths, ``INPUT.YOLOV7.IMAGE_SIZE`` against the model's largest
  stride, the demo's test sizes against it (a warning), the batch sizes and the EMA, and that
  the datasets are registered (:func:`yolov7_d2.data.validate.check_registered`).
  :func:`check_schedule` checks the iteration keys once the epochs are turned into them.
* :func:`check_checkpoint_scale` (the checkpointer) names the YOLOv7 scale of a checkpoint that
  does not fit the model, instead of listing hundreds of mis-shaped tensors.
"""
from __future__ import annotations

import difflib
import functools
import logging
import os
import re
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
import yaml

from detectron2.config import CfgNode
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from .modeling.arch import ARCHS, get_arch
from .modeling.layers.conv import NORMS

__all__ = ["ConfigError", "merge_config", "check_config", "check_schedule",
           "check_checkpoint_scale"]

logger = logging.getLogger(__name__)

_KEYS_DOC = ("the YOLOv7 keys and their meaning are in yolov7_d2/config.py, detectron2's in "
             "detectron2/config/defaults.py")


class ConfigError(KeyError, ValueError):
    """A config file, key or value that cannot work; the message names it and says how to fix
    it. A KeyError, as yacs raises for unknown keys (and callers catch), and a ValueError."""

    def __str__(self) -> str:  # KeyError's own would print the message in quotes
        return str(self.args[0]) if self.args else ""


# ---------------------------------------------------------------------------- files and keys
def _flat_keys(node: Mapping, prefix: str = "", nodes: bool = False) -> Iterator[str]:
    """The dotted names of the leaves of nested mappings (and of the inner nodes: ``nodes``)."""
    for key, value in node.items():
        if isinstance(value, Mapping):
            if nodes:
                yield prefix + key
            yield from _flat_keys(value, f"{prefix}{key}.", nodes)
        else:
            yield prefix + key


def _lookup(node: Mapping, dotted: str) -> Any:
    """The value of a dotted key that ``node`` (nested mappings) holds."""
    return functools.reduce(lambda n, part: n[part], dotted.split("."), node)


def _close_matches(key: str, keys: Sequence[str]) -> List[str]:
    """Up to 3 of the dotted ``keys`` like ``key``: those with its last component (a key in
    the wrong subtree) first, then difflib's closest (a typo)."""
    leaf = key.rsplit(".", 1)[-1]
    same_leaf = [k for k in keys if k.rsplit(".", 1)[-1] == leaf]
    return list(dict.fromkeys(same_leaf + difflib.get_close_matches(key, keys, cutoff=0.85)))[:3]


def _did_you_mean(matches: Sequence[str]) -> str:
    return f" Did you mean {' or '.join(matches)}?" if matches else ""


def _base_path(config_file: str, base: str) -> str:
    """Where fvcore's ``CfgNode.load_yaml_with_base`` looks for ``base``: relative to the
    folder of the file naming it, unless absolute, ``~``-prefixed or a URL."""
    if base.startswith("~"):
        base = os.path.expanduser(base)
    if base.startswith(("/", "https://", "http://")):
        return base
    return os.path.join(os.path.dirname(config_file), base)


def _missing_config_file(path: str) -> ConfigError:
    folder = os.path.dirname(path) or "."
    names = sorted(n for n in os.listdir(folder) if n.endswith((".yaml", ".yml"))) \
        if os.path.isdir(folder) else []
    matches = difflib.get_close_matches(os.path.basename(path), names, n=3, cutoff=0.8)
    suggestion = _did_you_mean([os.path.join(folder, n) for n in matches])
    return ConfigError(f"Config file {path!r} does not exist.{suggestion} The shipped configs "
                       "are in configs/ (e.g. configs/coco/yolov7-tiny.yaml).")


def _read_yaml(path: str) -> dict:
    """The mapping of one config file, read as detectron2 does (``yaml.unsafe_load`` only for
    files with Python tags)."""
    try:
        with PathManager.open(path, "r") as f:
            try:
                content = yaml.safe_load(f)
            except yaml.constructor.ConstructorError:
                f.seek(0)
                content = yaml.unsafe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"Config file {path!r} is not valid YAML: {e}") from e
    if not isinstance(content, (dict, type(None))):
        raise ConfigError(f"Config file {path!r} holds a {type(content).__name__}, not a "
                          "mapping of config keys.")
    return content or {}


def _config_chain(config_file: str) -> List[Tuple[str, dict]]:
    """(path, parsed yaml) of ``config_file`` and, recursively, its ``_BASE_`` files, the file
    itself first; ConfigError for a missing or unparsable file, naming the file that names a
    missing base."""
    if not PathManager.isfile(config_file):
        raise _missing_config_file(config_file)
    chain, pending = [], [config_file]
    while pending:
        path = pending.pop(0)
        content = _read_yaml(path)
        chain.append((path, content))
        bases = content.get("_BASE_", [])
        for base in [bases] if isinstance(bases, str) else list(bases):
            resolved = _base_path(path, base)
            if not resolved.startswith(("https://", "http://")) \
                    and not PathManager.isfile(resolved):
                raise ConfigError(
                    f"Config file {path!r} names _BASE_ {base!r}, which does not exist (looked "
                    f"for {resolved!r}: a relative _BASE_ is relative to the folder of the file "
                    "naming it). Fix the _BASE_ line or restore the base file.")
            pending.append(resolved)
    return chain


def _describe_type(value: Any) -> str:
    names = {bool: "a boolean (True or False)", int: "an integer", float: "a number",
             str: "a string", tuple: "a tuple", list: "a list"}
    return names.get(type(value), f"a {type(value).__name__}")


def _type_hint(current: Any, given: Any) -> str:
    if isinstance(current, float) and isinstance(given, int) and not isinstance(given, bool):
        return f" Write it as {given}.0."
    if isinstance(current, (tuple, list)) and isinstance(given, str):
        return f" Write a sequence, e.g. ('{given}',)."
    return ""


#: Dotted key -> (the value set, where: "config file 'x.yaml'" or "the command-line options").
_Given = Mapping[str, Tuple[Any, str]]


def _reported_error(error: Exception, cfg: CfgNode, given: _Given) -> Optional[ConfigError]:
    """A ConfigError for yacs' unknown-key and type-mismatch errors; None for others."""
    text = str(error.args[0]) if error.args else str(error)
    unknown = re.search(r"Non-existent (?:config )?key: (\S+)", text)
    if unknown:
        key = unknown.group(1)
        # An unknown subtree ("MODEL.FOO: {BAR: 1}" in a file) is set through its leaves.
        where = next((w for k, (_, w) in given.items() if k == key or k.startswith(key + ".")),
                     "the config")
        matches = _close_matches(key, list(_flat_keys(cfg, nodes=True)))
        return ConfigError(f"Unknown config key {key} in {where}.{_did_you_mean(matches)} "
                           f"({_KEYS_DOC}.)")
    mismatch = re.search(r"Type mismatch .* for config key: (\S+)$", text)
    if not mismatch or mismatch.group(1) not in given:
        return None
    key = mismatch.group(1)
    (value, where), current = given[key], _lookup(cfg, key)
    return ConfigError(f"{key} takes {_describe_type(current)} (like {current!r}), got {value!r} "
                       f"({_describe_type(value)}) in {where}.{_type_hint(current, value)}")


def _merge(cfg: CfgNode, given: _Given, source: str, merge) -> None:
    try:
        merge()
    except (KeyError, ValueError, AssertionError) as e:  # yacs asserts on unknown options
        error = _reported_error(e, cfg, given)
        if error is None:
            raise ConfigError(f"{source}: {e} ({_KEYS_DOC}).") from e
        raise error from e


def merge_config(cfg: CfgNode, config_file: str = "", opts: Sequence = ()) -> None:
    """Merge ``config_file`` (with its ``_BASE_`` files) and the "KEY VALUE" ``opts`` into
    ``cfg``; :class:`ConfigError` naming the file or key for a missing or unparsable file, a
    missing base, an unknown key (with close matches) or a value of the wrong type."""
    if config_file:
        chain = _config_chain(config_file)
        given: Dict[str, Tuple[Any, str]] = {}
        for path, content in reversed(chain):  # the bases first: the file itself wins
            given.update((key, (_lookup(content, key), f"config file {path!r}"))
                         for key in _flat_keys(content))
        source = f"config file {config_file!r}" + (" (or its _BASE_ files)" if chain[1:] else "")
        _merge(cfg, given, source, lambda: cfg.merge_from_file(config_file))
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(f"Config options must be KEY VALUE pairs; {opts[-1]!r} (the last of "
                          f"{len(opts)} items) has no value.")
    where = "the command-line options"
    given = {str(k): (CfgNode._decode_cfg_value(v), where) for k, v in zip(opts[0::2], opts[1::2])}
    _merge(cfg, given, where, lambda: cfg.merge_from_list(opts))


# ---------------------------------------------------------------------------- values
def largest_stride(cfg) -> Optional[int]:
    """The stride of the model's coarsest level, from the names of its inputs to the neck
    (log2 of the stride: "c5" / "res5" 32, "c6" 64); None when they do not say."""
    yolo = cfg.MODEL.YOLOV7
    # An empty IN_FEATURES means "c3" .. "c<2 + levels>" (build_yolov7_pan_backbone).
    names = list(yolo.IN_FEATURES) or [f"c{2 + get_arch(yolo.ARCH).num_levels}"]
    level = re.search(r"(\d+)$", names[-1])
    return 2 ** int(level.group(1)) if level else None


def _model_problems(cfg) -> List[str]:
    yolo, problems = cfg.MODEL.YOLOV7, []
    if yolo.ARCH not in ARCHS:
        problems.append(f"MODEL.YOLOV7.ARCH {yolo.ARCH!r} is not a YOLOv7 scale."
                        f"{_did_you_mean(difflib.get_close_matches(yolo.ARCH, list(ARCHS)))} "
                        f"Choose one of {', '.join(sorted(ARCHS))}.")
    if yolo.NUM_CLASSES < 1:
        problems.append(f"MODEL.YOLOV7.NUM_CLASSES is {yolo.NUM_CLASSES}: set it to the number "
                        "of classes of the dataset (at least 1).")
    if yolo.NORM not in NORMS:
        problems.append(f"MODEL.YOLOV7.NORM {yolo.NORM!r} is not a BatchNorm kind: choose "
                        f"{', '.join(NORMS)} ('SyncBN' needs CUDA; 'naiveSyncBN' works on any "
                        "device).")
    elif yolo.NORM == "SyncBN" and cfg.MODEL.DEVICE == "cpu" and comm.get_world_size() > 1:
        problems.append("MODEL.YOLOV7.NORM 'SyncBN' (torch's SyncBatchNorm) needs CUDA: on the "
                        "CPU use 'naiveSyncBN' (detectron2's NaiveSyncBatchNorm) or 'BN'.")
    if yolo.WIDTH_MULTIPLE <= 0:
        problems.append(f"MODEL.YOLOV7.WIDTH_MULTIPLE is {yolo.WIDTH_MULTIPLE}: it scales every "
                        "channel width and must be positive (1.0: the official widths).")
    return problems


def _size_problems(cfg) -> List[str]:
    size, problems = cfg.INPUT.YOLOV7.IMAGE_SIZE, []
    stride = largest_stride(cfg) if cfg.MODEL.YOLOV7.ARCH in ARCHS else None
    if size < 1:
        problems.append(f"INPUT.YOLOV7.IMAGE_SIZE is {size}: set the training and evaluation "
                        "image size in pixels, e.g. 640.")
    elif stride and size % stride:
        below, above = max(size // stride, 1) * stride, -(-size // stride) * stride
        # The model would pad every image to the next multiple; official train.py instead
        # rounds the size up (check_img_size).
        problems.append(
            f"INPUT.YOLOV7.IMAGE_SIZE {size} is not a multiple of {stride}, the largest stride "
            f"of {cfg.MODEL.YOLOV7.ARCH}: every image would be padded with grey to {above} px. "
            f"Use {below}{f' or {above}' if above != below else ''}.")
    crop = cfg.INPUT.YOLOV7.MOSAIC_CROP_SIZE
    if crop < 0 or (crop and stride and crop % stride):
        problems.append(
            f"INPUT.YOLOV7.MOSAIC_CROP_SIZE is {crop}: set 0 (mosaic samples of "
            f"INPUT.YOLOV7.IMAGE_SIZE) or the side of the window cut from each mosaic"
            f"{f', a multiple of {stride}, the largest stride' if stride else ''}.")
    if cfg.INPUT.MIN_SIZE_TEST < 0:
        problems.append(f"INPUT.MIN_SIZE_TEST is {cfg.INPUT.MIN_SIZE_TEST}: set it to the "
                        "inference image size (the YOLO configs: INPUT.YOLOV7.IMAGE_SIZE), or "
                        "0 for no resizing.")
    if cfg.INPUT.MIN_SIZE_TEST > 0 and cfg.INPUT.MAX_SIZE_TEST < 1:
        problems.append(f"INPUT.MAX_SIZE_TEST is {cfg.INPUT.MAX_SIZE_TEST}: set it to the "
                        "inference image size (the YOLO configs: INPUT.YOLOV7.IMAGE_SIZE).")
    return problems


def _solver_problems(cfg) -> List[str]:
    solver, problems = cfg.SOLVER, []
    batch, world = solver.IMS_PER_BATCH, comm.get_world_size()
    if batch < 1:
        problems.append(f"SOLVER.IMS_PER_BATCH is {batch}: set the number of training images "
                        "per iteration (all processes together), e.g. 16.")
    elif batch % world:
        problems.append(f"SOLVER.IMS_PER_BATCH {batch} is not divisible by the {world} "
                        f"processes: use a multiple of {world}.")
    if solver.YOLOV7.NOMINAL_BATCH_SIZE < 1:
        problems.append(f"SOLVER.YOLOV7.NOMINAL_BATCH_SIZE is {solver.YOLOV7.NOMINAL_BATCH_SIZE}:"
                        " set the images per optimizer step (gradients accumulate to it; "
                        "official 64), at least SOLVER.IMS_PER_BATCH for no accumulation.")
    if solver.YOLOV7.EMA_DECAY > 0 and solver.YOLOV7.EMA_TAU <= 0:
        problems.append(f"SOLVER.YOLOV7.EMA_TAU is {solver.YOLOV7.EMA_TAU}: the EMA warm-up "
                        "needs a positive number of updates (official 2000), or set "
                        "SOLVER.YOLOV7.EMA_DECAY 0 for no EMA.")
    if cfg.DATALOADER.NUM_WORKERS < 0:
        problems.append(f"DATALOADER.NUM_WORKERS is {cfg.DATALOADER.NUM_WORKERS}: set 0 (load "
                        "in the training process) or more.")
    if not cfg.DATASETS.TRAIN:
        problems.append("DATASETS.TRAIN is empty: name registered datasets, or train on files "
                        "with train_net.py --yolo-data, --voc-root or --coco-json.")
    return problems


def _test_view_problems(cfg) -> List[str]:
    """TEST.YOLOV7.FLIPS and SCALES as the model checks them, with the key named."""
    from .modeling.test_time_views import check_scales, flip_views

    problems = []
    for key, check in (("FLIPS", flip_views), ("SCALES", check_scales)):
        try:
            check(cfg.TEST.YOLOV7.get(key))
        except ValueError as e:
            problems.append(f"TEST.YOLOV7.{key} {tuple(cfg.TEST.YOLOV7.get(key))}: {e}.")
    return problems


def _raise(problems: List[str]) -> None:
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} config errors:\n  " + "\n  ".join(problems))


def _warn_test_size(cfg) -> None:
    """The demo, the predictor and the ONNX export resize with INPUT.MIN_SIZE_TEST /
    MAX_SIZE_TEST (short side to the first, long side at most the second); training and its
    evaluation resize the long side to INPUT.YOLOV7.IMAGE_SIZE. Same scale only when
    MAX_SIZE_TEST is IMAGE_SIZE and MIN_SIZE_TEST is not below it."""
    size, low, high = cfg.INPUT.YOLOV7.IMAGE_SIZE, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST
    if low != 0 and high == size and low >= high:
        return
    resize = ("do not resize images" if low == 0 else
              f"resize the short side to {low}, the long side to at most {high}")
    logger.warning(
        "INPUT.MIN_SIZE_TEST %d and INPUT.MAX_SIZE_TEST %d: demo.py, YOLOv7Predictor and "
        "tools/export_onnx.py %s, but training and its evaluation resize the long side to "
        "INPUT.YOLOV7.IMAGE_SIZE %d: they run the model at another scale than the one trained "
        "and evaluated. Set INPUT.MIN_SIZE_TEST %d INPUT.MAX_SIZE_TEST %d unless that is meant.",
        low, high, resize, size, size, size)


def check_config(cfg, *, training: bool = True) -> None:
    """Before a run: :class:`ConfigError` listing every value that cannot work (the scale, the
    class count, the widths, the image sizes, the test-time views and, when ``training``, the
    batch sizes, the EMA and DATASETS.TRAIN); a warning when the test sizes differ from the
    training size (see :func:`_warn_test_size`); then the datasets: DATASETS.TEST (and, when
    ``training``, DATASETS.TRAIN) registered, DATASETS.TEST with MODEL.YOLOV7.NUM_CLASSES
    classes (:class:`~yolov7_d2.data.validate.DatasetConfigError`). DATASETS.TRAIN's class
    count is checked by the trainer (:func:`~yolov7_d2.data.validate.check_datasets`)."""
    from .data.validate import check_class_count, check_registered

    problems = _model_problems(cfg) + _size_problems(cfg) + _test_view_problems(cfg)
    if training:
        problems += _solver_problems(cfg)
    _raise(problems)
    _warn_test_size(cfg)
    if training:
        check_registered(list(cfg.DATASETS.TRAIN), "DATASETS.TRAIN")
    check_registered(list(cfg.DATASETS.TEST), "DATASETS.TEST")
    check_class_count(list(cfg.DATASETS.TEST), cfg.MODEL.YOLOV7.NUM_CLASSES, "DATASETS.TEST")


def check_schedule(cfg) -> None:
    """ConfigError unless SOLVER.MAX_ITER and SOLVER.CHECKPOINT_PERIOD are at least 1 (after
    SOLVER.YOLOV7.EPOCHS is turned into them: yolov7_d2/engine/epochs.py)."""
    solver, problems = cfg.SOLVER, []
    if solver.MAX_ITER < 1:
        problems.append(f"SOLVER.MAX_ITER is {solver.MAX_ITER}: train at least 1 iteration (or "
                        "set SOLVER.YOLOV7.EPOCHS); to evaluate only, use train_net.py "
                        "--eval-only.")
    if solver.CHECKPOINT_PERIOD < 1:
        problems.append(f"SOLVER.CHECKPOINT_PERIOD is {solver.CHECKPOINT_PERIOD}: set the "
                        "iterations between checkpoints (at least 1; SOLVER.MAX_ITER for one "
                        "at the end), or SOLVER.YOLOV7.CHECKPOINT_PERIOD_EPOCHS with "
                        "SOLVER.YOLOV7.EPOCHS.")
    _raise(problems)


# ---------------------------------------------------------------------------- checkpoints
_BOTTOM_UP = "backbone.bottom_up."


def _kernel_names(state: Mapping[str, torch.Tensor], prefix: str = "") -> Tuple[str, ...]:
    """Names of the convolution kernels (4-D tensors) under ``prefix``, without it: they tell
    the official scales apart whatever the widths, the class count or the deploy form."""
    return tuple(k[len(prefix):] for k, v in state.items()
                 if k.startswith(prefix) and getattr(v, "dim", lambda: 0)() == 4)


@functools.lru_cache(maxsize=1)
def _backbone_states() -> Dict[str, Dict[str, torch.Tensor]]:
    """State dict of each official scale's ELAN backbone, built on the meta device (no memory,
    no initialization: about 0.1 s in all)."""
    from .modeling.backbone.elan import ELANBackbone

    states = {}
    for name, arch in ARCHS.items():
        with torch.device("meta"):
            states[name] = ELANBackbone(arch, in_channels=3).state_dict()
    return states


def _scales_by_kernel_names() -> Dict[Tuple[str, ...], str]:
    """Kernel names of each official scale's ELAN backbone -> its name."""
    return {_kernel_names(state): name for name, state in _backbone_states().items()}


def _other_scale_error(filename: str, checkpoint_scale: str, model_scale: Optional[str]):
    from .checkpoint import CheckpointError

    built = (f"builds {model_scale} (MODEL.YOLOV7.ARCH)" if model_scale else
             "builds another bottom-up network (MODEL.YOLOV7.BOTTOM_UP)")
    use = f" or {model_scale} weights" if model_scale else ""
    return CheckpointError(
        f"MODEL.WEIGHTS {filename!r} is a {checkpoint_scale} checkpoint, the config {built}. "
        f"Use a {checkpoint_scale} config (configs/coco/{checkpoint_scale}.yaml){use}.")


def check_official_checkpoint_scale(filename: str, official: Mapping[str, torch.Tensor],
                                    own: Mapping[str, torch.Tensor]) -> None:
    """:class:`~yolov7_d2.checkpoint.CheckpointError` naming both scales when the official
    state dict ``official`` ("model.<i>.<name>", layers in order) opens with the backbone
    convolutions of another official scale, at the official widths, than the model's state
    dict ``own``. Official layers start with the backbone, in the order of ours."""
    def opens_with_backbone(scale: str) -> bool:
        shapes = [tuple(v.shape) for v in _backbone_states()[scale].values() if v.dim() == 4]
        return kernels[:len(shapes)] == shapes

    kernels = [tuple(v.shape) for v in official.values() if v.dim() == 4]
    model_scale = _scales_by_kernel_names().get(_kernel_names(own, _BOTTOM_UP))
    if model_scale is not None and opens_with_backbone(model_scale):
        return
    checkpoint_scale = next((name for name in ARCHS if opens_with_backbone(name)), None)
    if checkpoint_scale is not None:
        raise _other_scale_error(filename, checkpoint_scale, model_scale)


def check_checkpoint_scale(filename: str, state: Mapping[str, torch.Tensor],
                           own: Mapping[str, torch.Tensor]) -> None:
    """:class:`~yolov7_d2.checkpoint.CheckpointError` when the state dict ``state`` (read from
    ``filename``, in the model's names) holds the ELAN backbone of another official YOLOv7
    scale than the model's state dict ``own`` (naming both scales), or of the same scale at
    other channel widths (MODEL.YOLOV7.WIDTH_MULTIPLE)."""
    from .checkpoint import CheckpointError

    theirs, mine = _kernel_names(state, _BOTTOM_UP), _kernel_names(own, _BOTTOM_UP)
    if not theirs:
        return
    if theirs == mine:  # the same layers: the widths may differ
        keys = (_BOTTOM_UP + name for name in theirs)
        wider = next((k for k in keys if state[k].shape != own[k].shape), None)
        scale = _scales_by_kernel_names().get(mine) if wider else None
        if scale is not None:
            raise CheckpointError(
                f"MODEL.WEIGHTS {filename!r} is a {scale} checkpoint of other channel widths "
                f"than the model ({wider}: checkpoint {tuple(state[wider].shape)}, model "
                f"{tuple(own[wider].shape)}): set MODEL.YOLOV7.WIDTH_MULTIPLE as in its training.")
        return
    scales = _scales_by_kernel_names()
    checkpoint_scale = scales.get(theirs)
    if checkpoint_scale is None:  # not a whole ELAN backbone: the shape check reports it
        return
    raise _other_scale_error(filename, checkpoint_scale, scales.get(mine))
