"""Dataset mappers of YOLOv7 (Wang et al., "YOLOv7: Trainable bag-of-freebies sets new
state-of-the-art for real-time object detectors", 2022) for detectron2.

* :class:`YOLOv7MosaicMapper`: the official train-time pipeline (mosaic / mosaic-9, random
  perspective, mixup, HSV, paste-in, flips, box filter) on detectron2 dataset dicts, with
  mosaic partners drawn from the whole dataset and a seeded, worker-safe random stream. Its
  settings come in small frozen groups: :class:`MixProbs`, :class:`~.augment.PerspectiveRange`,
  :class:`FlipProbs`, :class:`~.augment.BoxFilter`.
* :func:`build_yolov7_train_loader`: a :class:`~.stream.YOLOv7TrainLoader` with that mapper
  and detectron2's training sampler over the same dataset dicts (loaded and serialized once),
  whose batches depend on the seeds and the iteration only (a resumed run sees the
  uninterrupted run's).

The evaluation mappers are in :mod:`.test_mapper`.
"""
from __future__ import annotations

import itertools
import logging
import zlib
from collections import Counter
from dataclasses import dataclass, fields
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import DatasetFromList, build_detection_train_loader
from detectron2.data import detection_utils as utils
from detectron2.structures import Boxes, BoxMode, Instances
from detectron2.utils import comm

from ..utils.memory import available_memory_bytes
from . import augment as A
from .augment import BoxFilter, PerspectiveRange, Targets
from .image_io import ImageLoadError, read_image_reduced
from .stream import YOLOv7TrainLoader
from .validate import dataset_dicts_from_config

__all__ = [
    "YOLOv7MosaicMapper",
    "MixProbs",
    "FlipProbs",
    "PerspectiveRange",
    "BoxFilter",
    "build_yolov7_train_loader",
    "ImageLoadError",
]

logger = logging.getLogger(__name__)

# Paste-in collects object cut-outs until it has this many (official: 30) ...
PASTE_MIN_SAMPLES = 30
# ... from groups of this many random images (official: one 4-mosaic per group) ...
PASTE_GROUP_SIZE = 4
# ... but gives up after this many groups (departure: the official loop has no limit, which
# can read hundreds of images when few of them have polygons).
PASTE_MAX_GROUPS = 10
# A sample whose image cannot be read is replaced by a random other one at most this many
# times in a row before the error is raised (only a mostly unreadable dataset gets there).
MAX_REDRAWS = 10


def _check_probabilities(group) -> None:
    """ValueError naming the field of the dataclass ``group`` that is not in [0, 1]."""
    for f in fields(group):
        p = getattr(group, f.name)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{type(group).__name__}.{f.name} is a probability: it must be in "
                             f"[0, 1], got {p!r}")


@dataclass(frozen=True)
class MixProbs:
    """Probabilities of the steps that bring in other images (official ``hyp`` keys
    ``mosaic``, ``mixup``, ``paste_in``): ``mosaic`` of a sample being a mosaic, ``mosaic9``
    of a mosaic having 9 images instead of 4, ``mixup`` of a mosaic being blended with a
    second one, ``paste_in`` of objects of other images being pasted in."""

    mosaic: float = 1.0
    mosaic9: float = 0.2
    mixup: float = 0.15
    paste_in: float = 0.15

    def __post_init__(self):
        _check_probabilities(self)


@dataclass(frozen=True)
class FlipProbs:
    """Probabilities of flipping left-right (``lr``) and up-down (``ud``), and of swapping x
    and y (``transpose``: not official; with both flips at 0.5, all 8 right-angle rotations
    and reflections equally likely, for overhead imagery, which has no up)."""

    lr: float = 0.5
    ud: float = 0.0
    transpose: float = 0.0

    def __post_init__(self):
        _check_probabilities(self)


class YOLOv7MosaicMapper:
    """Maps one detectron2 dataset dict to a YOLOv7 training sample (official train-time
    augmentation of ``utils/datasets.py``).

    Pipeline (``is_train=True``), each step with its probability in ``mix`` or ``flips``:

    1. ``mix.mosaic``: a mosaic of the sample and 3 random dataset images (``mix.mosaic9``
       of them: 8 images, 9-mosaic), every image first resized so its long side is
       ``image_size`` (aspect kept, INTER_LINEAR), then :func:`~.augment.random_perspective`
       (``perspective`` ranges) crops it back to ``image_size`` square; ``mix.mixup``: a
       second such mosaic blended in with ratio Beta(8, 8). Otherwise (or once mosaic is
       closed): the image resized and centred on an ``image_size`` square, grey
       (:func:`~.augment.fit_centered`), and the same random perspective.
    2. HSV gains; then ``mix.paste_in``: object cut-outs along their polygons from other
       random images pasted in (needs polygon annotations: box-only datasets paste nothing,
       as in the official code). Official order: paste-in after HSV.
    3. Flips up-down (``flips.ud``) and left-right (``flips.lr``), then ``flips.transpose``.
    4. The box filter (``box_filter``): the perspective step drops boxes failing it (see
       :class:`~.augment.BoxFilter`; instances with polygons get their box re-fitted around
       the warped outline); all final boxes are checked again for size and aspect (mixup and
       paste-in add boxes). Dropped boxes are counted in :attr:`stats` and logged at DEBUG
       level.

    ``is_train=False`` resizes and centres the image without any randomness (INTER_AREA when
    shrinking, as the official evaluation); boxes stay in the canvas coordinates. For COCO
    evaluation, which needs boxes in original image coordinates, use
    :func:`build_yolov7_test_mapper`.

    Files are read with :func:`~.image_io.read_image_reduced` (see ``reduced_jpeg_decode``).
    In training, a sample whose image (or a partner's) cannot be read, e.g. deleted after
    the dataset was validated, is replaced by a random other one with a warning naming the
    file (counted in :attr:`stats`); with ``is_train=False``
    :class:`~.image_io.ImageLoadError` is raised.

    Randomness: each call draws from its own ``numpy.random.Generator``, whatever the global
    RNG state (detectron2 reseeds the global RNGs of each worker at random). The training
    loader (:class:`~.stream.YOLOv7TrainLoader`) gives each sample its place in the stream,
    ``iteration`` and ``slot`` (index in the batch): the generator is seeded with ``(seed,
    distributed rank, iteration, slot, crc32 of the image_id (of the file_name if there is
    none))``, so a sample depends on neither the number of workers nor what came before it
    (a resumed run maps the samples of the uninterrupted one). A call without a place
    (visualisation, tests) uses ``(seed, rank, dataloader worker id + 1, number of calls so far
    in this process, crc32)`` instead.

    Close mosaic: from iteration ``max_iter - close_mosaic_iters`` on, mosaic, mixup and
    paste-in are off for the samples of that iteration (calls without an iteration keep
    mosaic on).

    Output dict: the input's ``file_name`` / ``image_id``, "image" (C, H, W) uint8 tensor in
    ``image_format``, "height" = "width" = ``image_size``, "instances" with ``gt_boxes``
    (xyxy pixels of the output canvas) and ``gt_classes`` (int64). Category ids must be
    contiguous already (detectron2's dataset loaders map them); crowd annotations are skipped.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        dataset_dicts: Optional[Sequence[dict]] = None,
        image_size: int = 640,
        image_format: str = "RGB",
        mix: MixProbs = MixProbs(),
        perspective: PerspectiveRange = PerspectiveRange(),
        hsv_gains: Tuple[float, float, float] = (0.015, 0.7, 0.4),
        flips: FlipProbs = FlipProbs(),
        box_filter: BoxFilter = BoxFilter(),
        close_mosaic_iters: int = 0,
        max_iter: int = 0,
        seed: Optional[int] = 0,
        cache_images: bool = False,
        mosaic_crop_size: int = 0,
        reduced_jpeg_decode: bool = True,
    ):
        """
        Args:
            is_train (bool): random augmentation (True) or only the resize and centring
                (False).
            dataset_dicts (list[dict] or detectron2 DatasetFromList): the whole dataset, where
                mosaic / mixup / paste-in partners are drawn from (uniformly, with
                replacement). A list is serialized into a DatasetFromList (compact, shared
                by forked workers). Needed when any of those probabilities is > 0.
            image_size (int): side of the square output canvas (long side of each image).
            image_format (str): "RGB" or "BGR", as detectron2's ``INPUT.FORMAT``.
            mix (MixProbs): probabilities of mosaic, 9-mosaic, mixup and paste-in.
            perspective (PerspectiveRange): ranges of the random perspective.
            hsv_gains (tuple[float]): hue, saturation, value gains.
            flips (FlipProbs): probabilities of the flips and of the transpose.
            box_filter (BoxFilter): which boxes are kept (see the class doc).
            close_mosaic_iters (int): mosaic, mixup and paste-in off for this many last
                iterations of ``max_iter`` (0: never), for samples mapped with their iteration.
            max_iter (int): the training length in iterations.
            seed (int or None): base seed of the random stream; None draws one from the OS.
            cache_images (bool): keep every image read, resized, in memory (official
                ``--cache-images``): each process (each dataloader worker) decodes each file
                once, holding up to N x image_size^2 x 3 bytes. Worth it for small datasets,
                where mosaic decodes 4 to 9 images per sample.
            mosaic_crop_size (int): side of the square window the random perspective cuts
                from a mosaic (0, or ``image_size`` and above: ``image_size``; not official).
                Objects keep the scale of ``image_size``: a smaller window is fewer pixels per
                sample, not smaller objects. Plain (not mosaic) samples stay ``image_size``
                (a batch of both is padded with grey to the larger by the model).
            reduced_jpeg_decode (bool): in training, decode a JPEG whose dict gives a size
                2, 4 or 8 times ``image_size`` or more at 1/2, 1/4 or 1/8 of it (libjpeg's
                DCT scaling, 2-3x faster for large photos; not official). Evaluation
                always decodes whole images.
        """
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        if close_mosaic_iters > 0 and max_iter <= 0:
            raise ValueError("close_mosaic_iters > 0 needs max_iter (cfg.SOLVER.MAX_ITER) > 0")
        needs_partners = is_train and (mix.mosaic > 0 or mix.paste_in > 0)
        if needs_partners and not dataset_dicts:
            raise ValueError("mosaic and paste-in draw partner images from the dataset: pass "
                             "dataset_dicts (the whole list of dataset dicts)")
        if isinstance(dataset_dicts, list):
            dataset_dicts = DatasetFromList(dataset_dicts, copy=False, serialize=True)
        self.dataset = dataset_dicts
        self.is_train = is_train
        self.image_size = int(image_size)
        self.mosaic_window = mosaic_window_size(self.image_size, mosaic_crop_size)
        self.image_format = image_format
        self.mix, self.perspective = mix, perspective
        self.hsv_gains = tuple(hsv_gains)
        self.flips, self.box_filter = flips, box_filter
        self.close_mosaic_iters, self.max_iter = int(close_mosaic_iters), int(max_iter)
        self.reduced_jpeg_decode = bool(reduced_jpeg_decode) and is_train
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (2**63))
            logger.info("YOLOv7MosaicMapper: no seed given, drew seed %d", seed)
        self.seed = int(seed)
        #: file_name -> (resized image, scale, original width, height), or None: no cache.
        self._cache: Optional[Dict[str, Tuple[np.ndarray, float, int, int]]] = (
            {} if cache_images else None)
        #: file_name -> (targets of _targets, crowd annotations skipped), with the cache.
        self._cached_targets: Dict[str, Tuple[Targets, int]] = {}
        self._calls = 0
        #: file_name -> reason, for files found unreadable in this process (not read again).
        self._unreadable: Dict[str, str] = {}
        #: Counts in this process (each dataloader worker has its own): "samples", "boxes_in"
        #: (boxes read, mosaic partners included), "crowd_skipped", "dropped_by_filter", "pasted",
        #: "unreadable_skipped" (samples replaced because a file could not be read).
        self.stats: Counter = Counter()

    @classmethod
    def from_config(cls, cfg, is_train: bool = True, dataset_dicts=None):
        aug = cfg.INPUT.YOLOV7
        if dataset_dicts is None and is_train:
            # Images decoded once (cached), bad boxes dropped: see yolov7_d2.data.validate.
            dataset_dicts = dataset_dicts_from_config(
                cfg, cfg.DATASETS.TRAIN, "DATASETS.TRAIN",
                filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
        return {
            "is_train": is_train,
            "dataset_dicts": dataset_dicts,
            "image_size": aug.IMAGE_SIZE,
            "image_format": cfg.INPUT.FORMAT,
            "mix": MixProbs(mosaic=aug.MOSAIC_PROB, mosaic9=aug.MOSAIC9_PROB,
                            mixup=aug.MIXUP_PROB, paste_in=aug.PASTE_IN_PROB),
            "perspective": PerspectiveRange(degrees=aug.DEGREES, translate=aug.TRANSLATE,
                                            scale=aug.SCALE, shear=aug.SHEAR,
                                            perspective=aug.PERSPECTIVE),
            "hsv_gains": (aug.HSV_H, aug.HSV_S, aug.HSV_V),
            "flips": FlipProbs(lr=aug.FLIP_LR, ud=aug.FLIP_UD, transpose=aug.TRANSPOSE),
            "box_filter": BoxFilter(min_size=aug.BOX_MIN_SIZE, max_aspect=aug.BOX_MAX_ASPECT,
                                    min_area_ratio=aug.BOX_MIN_AREA_RATIO),
            "close_mosaic_iters": aug.CLOSE_MOSAIC_ITERS,
            "max_iter": cfg.SOLVER.MAX_ITER,
            "seed": cfg.SEED if cfg.SEED >= 0 else None,
            "mosaic_crop_size": aug.MOSAIC_CROP_SIZE,
            "reduced_jpeg_decode": aug.REDUCED_JPEG_DECODE,
            "cache_images": aug.CACHE_IMAGES or (is_train and cache_fits_in_memory(
                dataset_dicts, aug.IMAGE_SIZE, processes=max(1, cfg.DATALOADER.NUM_WORKERS),
                fraction=aug.CACHE_IMAGES_MEMORY_FRACTION)),
        }

    # ------------------------------------------------------------------ close mosaic
    def mosaic_enabled(self, iteration: Optional[int]) -> bool:
        """False for the samples of the last ``close_mosaic_iters`` iterations."""
        if self.close_mosaic_iters <= 0 or iteration is None:
            return True
        return iteration < self.max_iter - self.close_mosaic_iters

    # ------------------------------------------------------------------ loading
    def _rng(self, dataset_dict: dict, iteration: Optional[int],
             slot: int) -> np.random.Generator:
        self._calls += 1
        # image_id when there is one: stable when the dataset moves to another directory
        key = dataset_dict.get("image_id", dataset_dict.get("file_name", ""))
        key = zlib.crc32(str(key).encode())
        if iteration is not None:  # a sample of the training stream
            return np.random.default_rng([self.seed, comm.get_rank(), iteration, slot, key])
        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id + 1
        return np.random.default_rng([self.seed, comm.get_rank(), worker, self._calls, key])

    def _read(self, dataset_dict: dict) -> Tuple[np.ndarray, int]:
        """The image, BGR, and the factor its sides were divided by when it was decoded (see
        ``reduced_jpeg_decode``; 1: whole)."""
        file_name = dataset_dict["file_name"]
        if file_name in self._unreadable:
            raise ImageLoadError(file_name, self._unreadable[file_name])
        w, h = dataset_dict.get("width"), dataset_dict.get("height")
        max_factor = max(w, h) // self.image_size if self.reduced_jpeg_decode and w and h else 1
        # The pipeline works in OpenCV's BGR, as decoded: the channels are put in
        # ``image_format`` order by the copy to channels-first at the end, for free.
        image, factor = read_image_reduced(file_name, max_factor, format="BGR")
        if factor == 1:
            try:
                utils.check_image_size(dataset_dict, image)
            except utils.SizeMismatchError as e:  # the file was replaced after validation
                raise ImageLoadError(file_name, str(e)) from e
        elif image.shape[:2] != (-(-h // factor), -(-w // factor)):
            raise ImageLoadError(file_name, f"decoded at 1/{factor} of its size to "
                                 f"{image.shape[1]}x{image.shape[0]}: it is not the "
                                 f"{w}x{h} image of its dataset dict")
        return image, factor

    def _targets(self, dataset_dict: dict, scale: float, width: int, height: int) -> Targets:
        """Annotations (crowd skipped) clipped to the original image, then scaled; kept
        with the image where images are cached (read-only: every step makes new arrays)."""
        file_name = dataset_dict["file_name"]
        entry = self._cached_targets.get(file_name) if self._cache is not None else None
        if entry is None:
            entry = self._parse_targets(dataset_dict, scale, width, height)
            if self._cache is not None:
                entry[0].boxes.flags.writeable = False
                self._cached_targets[file_name] = entry
        targets, crowd = entry
        self.stats["crowd_skipped"] += crowd
        self.stats["boxes_in"] += len(targets)
        return targets

    @staticmethod
    def _parse_targets(dataset_dict: dict, scale: float, width: int,
                       height: int) -> Tuple[Targets, int]:
        """:meth:`_targets` and the number of crowd annotations skipped."""
        annotations = dataset_dict.get("annotations", [])
        objs = [obj for obj in annotations if not obj.get("iscrowd", 0)]
        boxes = np.array([obj["bbox"] for obj in objs], dtype=np.float64).reshape(-1, 4)
        modes = np.array([int(obj["bbox_mode"]) for obj in objs])
        for mode in np.unique(modes):  # converted per mode, not per box
            if mode != BoxMode.XYXY_ABS:
                rows = modes == mode
                boxes[rows] = BoxMode.convert(boxes[rows], BoxMode(mode), BoxMode.XYXY_ABS)
        polygons = []
        for obj in objs:
            segm = obj.get("segmentation")
            parts = None
            if isinstance(segm, list):  # polygons; RLE masks (dicts) fall back to the box
                parts = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in segm
                         if len(p) >= 6]
            polygons.append(parts or None)
        targets = Targets(boxes, [obj["category_id"] for obj in objs], polygons)
        return targets.clip(width, height).affine(scale), len(annotations) - len(objs)

    def _read_resized(self, dataset_dict: dict) -> Tuple[np.ndarray, float, int, int]:
        """The image with its long side resized to ``image_size``, the scale factor and the
        original width and height; from the cache, where there is one."""
        file_name = dataset_dict["file_name"]
        if self._cache is not None and file_name in self._cache:
            return self._cache[file_name]
        image, factor = self._read(dataset_dict)
        if factor == 1:
            h, w = image.shape[:2]
            shrink_plainly = not self.is_train and max(h, w) > self.image_size
            interp = cv2.INTER_AREA if shrink_plainly else cv2.INTER_LINEAR
            image, r = A.resize_long_side(image, self.image_size, interp)
        else:  # the size of the whole image resized, from the dict's
            w, h = dataset_dict["width"], dataset_dict["height"]
            r = self.image_size / max(w, h)
            image = cv2.resize(image, A.long_side_resized(w, h, self.image_size),
                               interpolation=cv2.INTER_LINEAR)
        if self._cache is not None:
            # Every step reads its tiles into new arrays; read-only makes sure of it.
            image.flags.writeable = False
            self._cache[file_name] = (image, r, w, h)
        return image, r, w, h

    def _load(self, dataset_dict: dict, lazy: bool = False
              ) -> Tuple[Union[np.ndarray, A.LazyImage], Targets]:
        """Image with its long side resized to ``image_size``, and its targets. ``lazy``:
        an image that is not cached and whose size the dict gives comes as a
        :class:`~.augment.LazyImage`, read only if a mosaic's output shows it."""
        file_name, w, h = (dataset_dict.get(k) for k in ("file_name", "width", "height"))
        if lazy and w and h and (self._cache is None or file_name not in self._cache):
            shape = (*A.long_side_resized(w, h, self.image_size)[::-1], 3)
            image = A.LazyImage(shape, lambda: self._read_resized(dataset_dict)[0])
            r = self.image_size / max(w, h)
        else:
            image, r, w, h = self._read_resized(dataset_dict)
        return image, self._targets(dataset_dict, r, w, h)

    def _partner(self, rng: np.random.Generator) -> dict:
        return self.dataset[int(rng.integers(len(self.dataset)))]

    # ------------------------------------------------------------------ pipeline steps
    def _mosaic(self, first: dict, rng: np.random.Generator) -> Tuple[np.ndarray, Targets]:
        nine = rng.random() < self.mix.mosaic9
        partners = [self._partner(rng) for _ in range(8 if nine else 3)]
        # Partners are read only if the output shows them; the sample's own image always
        # (it nearly always shows, and a sample is never one whose own file is unreadable).
        tiles = [self._load(first)] + [self._load(d, lazy=True) for d in partners]
        build = A.mosaic9 if nine else A.mosaic4
        image, targets = build(tiles, self.image_size, rng)
        return self._perspective(image, targets, rng, self.mosaic_window)

    def _perspective(self, image, targets, rng, out_size: int):
        image, targets, dropped = A.random_perspective(
            image, targets, out_size, rng, self.perspective, self.box_filter)
        self.stats["dropped_by_filter"] += dropped
        return image, targets

    def _paste_in(self, image: np.ndarray, targets: Targets, rng) -> Targets:
        samples: List[A.PasteSample] = []
        for _ in range(PASTE_MAX_GROUPS):
            # Read only where an object of theirs is cut out (none of a box-only dataset).
            tiles = [self._load(self._partner(rng), lazy=True) for _ in range(PASTE_GROUP_SIZE)]
            samples += A.extract_paste_samples(tiles, rng)
            if len(samples) >= PASTE_MIN_SAMPLES or not samples:
                break  # official: stop when enough, or when the first group gave nothing
        before = len(targets)
        targets = A.paste_in(image, targets, samples, rng)
        self.stats["pasted"] += len(targets) - before
        return targets

    def _augment(self, dataset_dict: dict, rng,
                 mosaic_on: bool) -> Tuple[np.ndarray, Targets]:
        mix, flips = self.mix, self.flips
        if mosaic_on and rng.random() < mix.mosaic:
            image, targets = self._mosaic(dataset_dict, rng)
            if rng.random() < mix.mixup:
                image2, targets2 = self._mosaic(self._partner(rng), rng)
                image, targets = A.mixup(image, targets, image2, targets2, rng)
        else:
            image, targets = self._load_centered(dataset_dict)
            image, targets = self._perspective(image, targets, rng, self.image_size)
        A.augment_hsv(image, self.hsv_gains, rng, rgb=False)
        if mosaic_on and rng.random() < mix.paste_in:
            targets = self._paste_in(image, targets, rng)
        if rng.random() < flips.ud:
            image, targets = A.flip_ud(image, targets)
        if rng.random() < flips.lr:
            image, targets = A.flip_lr(image, targets)
        # Drawn only when enabled, so that official pipelines keep their random stream.
        if flips.transpose > 0 and rng.random() < flips.transpose:
            image, targets = A.transpose(image, targets)
        return image, targets

    def _augment_readable(self, dataset_dict: dict, rng,
                          mosaic_on: bool) -> Tuple[dict, Tuple[np.ndarray, Targets]]:
        """:meth:`_augment`, except that a sample with a file that cannot be read (its own or
        a partner's: deleted or damaged since the dataset was validated) is replaced by a
        random other one, with a warning naming the file. Returns the dict of the sample
        used, and its image and targets."""
        for attempt in itertools.count():
            try:
                return dataset_dict, self._augment(dataset_dict, rng, mosaic_on)
            except ImageLoadError as e:
                if self.dataset is None or attempt >= MAX_REDRAWS:
                    raise
                if e.file_name not in self._unreadable:
                    self._unreadable[e.file_name] = e.reason
                    logger.warning("%s; skipped: samples that need it are replaced by random "
                                   "other ones", e)
                self.stats["unreadable_skipped"] += 1
                dataset_dict = self._partner(rng)

    def _load_centered(self, dataset_dict: dict) -> Tuple[np.ndarray, Targets]:
        """Image and targets of :meth:`_load`, centred on the ``image_size`` square canvas."""
        image, targets = self._load(dataset_dict)
        image, _, (pad_x, pad_y) = A.fit_centered(image, self.image_size)
        return image, targets.affine(1.0, pad_x, pad_y)

    # ------------------------------------------------------------------ call
    def __call__(self, dataset_dict: dict, *, iteration: Optional[int] = None,
                 slot: int = 0) -> Dict:
        """
        Args:
            dataset_dict (dict): one detectron2 dataset dict (not modified).
            iteration (int or None): the training iteration of the sample (close mosaic and
                the random stream; see the class docstring), or None.
            slot (int): the sample's index in its batch (this process's part of it).

        Returns:
            dict: see the class docstring.
        """
        rng = self._rng(dataset_dict, iteration, slot)
        before = Counter(self.stats)
        if self.is_train:
            dataset_dict, (image, targets) = self._augment_readable(
                dataset_dict, rng, self.mosaic_enabled(iteration))
        else:
            image, targets = self._load_centered(dataset_dict)
        # Final check on every box (mixup and paste-in add boxes after the perspective filter).
        size = image.shape[0]
        boxes = targets.boxes.copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, size)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, size)
        keep = A.box_candidates(None, boxes, self.box_filter.min_size,
                                self.box_filter.max_aspect)
        self.stats["dropped_by_filter"] += int((~keep).sum())
        self.stats["samples"] += 1
        if logger.isEnabledFor(logging.DEBUG):
            this_call = self.stats - before
            logger.debug("%s: %d boxes out; this sample: %s; totals in this process: %s",
                         dataset_dict.get("file_name"), int(keep.sum()), dict(this_call),
                         dict(self.stats))

        out = {k: dataset_dict[k] for k in ("file_name", "image_id") if k in dataset_dict}
        out["image"] = torch.from_numpy(A.channels_first(image, self.image_format == "RGB"))
        out["height"], out["width"] = size, size
        instances = Instances((size, size))
        instances.gt_boxes = Boxes(torch.as_tensor(boxes[keep], dtype=torch.float32))
        instances.gt_classes = torch.as_tensor(targets.classes[keep], dtype=torch.int64)
        out["instances"] = instances
        return out


def mosaic_window_size(image_size: int, mosaic_crop_size: int) -> int:
    """Side of the mosaic samples: ``mosaic_crop_size`` (INPUT.YOLOV7.MOSAIC_CROP_SIZE), where
    0, or ``image_size`` and above, mean ``image_size``."""
    return min(int(mosaic_crop_size) or int(image_size), int(image_size))


def cache_fits_in_memory(dataset_dicts: Sequence[dict], image_size: int, *, processes: int,
                         fraction: float) -> bool:
    """Whether ``processes`` copies of the dataset's images, decoded with their long side
    resized to ``image_size`` (3 bytes a pixel; ``width`` / ``height`` of each dict, a square
    of ``image_size`` where they are missing), need at most ``fraction`` of the memory
    available now. Logs the decision when caching; False where that memory is unknown."""
    available = available_memory_bytes()
    if fraction <= 0 or not dataset_dicts or available is None:
        return False
    limit = fraction * available / processes  # bytes one process may hold
    total = 0
    for i in range(len(dataset_dicts)):  # a DatasetFromList is indexed, not iterated
        d = dataset_dicts[i]
        w, h = A.long_side_resized(d.get("width") or image_size, d.get("height") or image_size,
                                   image_size)
        total += w * h * 3
        if total > limit:  # a large dataset is not read to its end at start-up
            return False
    logger.info("Caching the %d training images decoded in memory: %.0f MB in each of %d "
                "data-loading process(es), at most %.0f%% of the %.1f GB available "
                "(INPUT.YOLOV7.CACHE_IMAGES_MEMORY_FRACTION)", len(dataset_dicts),
                total / 2**20, processes, fraction * 100, available / 2**30)
    return True


def build_yolov7_train_loader(cfg, mapper: Optional[YOLOv7MosaicMapper] = None
                              ) -> YOLOv7TrainLoader:
    """A :class:`~.stream.YOLOv7TrainLoader` with a :class:`YOLOv7MosaicMapper` and the
    training sampler of ``cfg.DATALOADER.SAMPLER_TRAIN`` (built by detectron2), batches of
    ``SOLVER.IMS_PER_BATCH`` images over all processes, ``DATALOADER.NUM_WORKERS`` workers.
    ``DATALOADER.ASPECT_RATIO_GROUPING`` does not apply: all samples are square.

    The dataset dicts of ``cfg.DATASETS.TRAIN`` are loaded and serialized once, and the same
    ``DatasetFromList`` feeds the sampler and the mapper's partner draws. Pass your own
    ``mapper`` (built with ``dataset_dicts``) to keep a handle on it; otherwise one is built
    from ``cfg``. The mapper is reachable as ``loader.mapper``.
    """
    if mapper is None:
        mapper = YOLOv7MosaicMapper(cfg, is_train=True)
    if mapper.dataset is None:
        raise ValueError("the mapper has no dataset_dicts to draw samples from")
    # detectron2's choice and construction of the sampler (its arguments for cfg).
    d2_args = build_detection_train_loader.from_config(cfg, mapper, dataset=mapper.dataset)
    world_size = comm.get_world_size()
    if cfg.SOLVER.IMS_PER_BATCH % world_size:
        raise ValueError(f"SOLVER.IMS_PER_BATCH ({cfg.SOLVER.IMS_PER_BATCH}) must be a multiple "
                         f"of the number of processes ({world_size})")
    return YOLOv7TrainLoader(mapper, batch_size=cfg.SOLVER.IMS_PER_BATCH // world_size,
                             sampler=d2_args["sampler"], num_workers=cfg.DATALOADER.NUM_WORKERS)
