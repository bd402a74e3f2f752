"""Anchor fit: best possible recall, k-means + genetic anchor evolution, and the check run at
training start.

Definitions (those of the official YOLOv7 ``utils/autoanchor.py``; this is an independent
implementation). For a box of size (w, h) and an anchor (a_w, a_h), the ratio metric is
``m = min(w/a_w, a_w/w, h/a_h, a_h/h)`` (1 for a perfect fit). The loss pairs a box with an
anchor when ``max(w/a_w, a_w/w, h/a_h, a_h/h) < anchor_t``, that is ``m > 1 / anchor_t``
(``anchor_t`` = ``MODEL.YOLOV7.LOSS.ANCHOR_T``, 4).

* best possible recall (BPR): the fraction of boxes whose best anchor has ``m > 1/anchor_t``;
* anchors above threshold (AAT): the mean number of anchors per box with ``m > 1/anchor_t``;
* fitness (what the evolution maximises): the mean over boxes of the best ``m``, counting
  boxes whose best ``m`` is not above ``1/anchor_t`` as 0.

Box sizes are taken as training sees them: each image resized so that its long side is
``INPUT.YOLOV7.IMAGE_SIZE``. The training-start check also multiplies each image's boxes by a
random factor in [0.9, 1.1] (seeded), as the official check does. Below the BPR threshold,
autoanchor (official ``check_anchors``) computes anchors for the training boxes and uses them
if their BPR on the same (jittered) boxes is higher. Anchor computation leaves
out boxes whose width and height are both under 2 px (and warns about boxes with a side under
3 px), as the official ``kmean_anchors``; BPR is reported on all boxes.

Computation: k-means on the box sizes divided by their standard deviation (whitened; our own
Lloyd iterations from a k-means++ start, 30 iterations, seeded), then ``generations`` rounds
of mutation: every anchor coordinate, with probability 0.9, is multiplied by
``1 + r * N(0, 1) * 0.1`` (``r`` uniform in [0, 1) drawn once per round; factors clipped to
[0.3, 3]; anchors clipped to >= 2 px); a mutant replaces the anchors when its fitness is
higher.
"""
from __future__ import annotations

import logging
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "MIN_BOX_PX",
    "ratio_metric",
    "anchor_metrics",
    "anchor_fitness",
    "box_sizes",
    "kmeans_anchors",
    "evolve_anchors",
    "compute_anchors",
    "anchors_per_level",
    "format_anchors",
    "check_anchors",
    "fit_new_anchors",
]

logger = logging.getLogger(__name__)

#: Boxes with both sides under this many pixels are left out of anchor computation.
MIN_BOX_PX = 2.0
#: Boxes with a side under this many pixels are reported as extremely small.
SMALL_BOX_PX = 3.0
#: Boxes sampled by the training-start check.
CHECK_MAX_BOXES = 50_000


def _as_wh(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x.reshape(-1, 2)


def ratio_metric(wh, anchors) -> np.ndarray:
    """(N, A) ratio metric ``min(w/a_w, a_w/w, h/a_h, a_h/h)`` of N boxes and A anchors."""
    wh, anchors = _as_wh(wh), _as_wh(anchors)
    r = wh[:, None, :] / anchors[None, :, :]
    return np.minimum(r, 1.0 / r).min(axis=2)


def anchor_metrics(wh, anchors, anchor_t: float = 4.0) -> Tuple[float, float]:
    """(best possible recall, anchors above threshold per box) of boxes ``wh`` (N, 2)."""
    wh = _as_wh(wh)
    if not len(wh):
        return float("nan"), float("nan")
    m = ratio_metric(wh, anchors)
    thr = 1.0 / anchor_t
    return float((m.max(axis=1) > thr).mean()), float((m > thr).sum(axis=1).mean())


def anchor_fitness(wh, anchors, anchor_t: float = 4.0) -> float:
    """Mean best ratio metric, 0 for boxes whose best anchor is not above ``1/anchor_t``."""
    best = ratio_metric(wh, anchors).max(axis=1)
    return float(np.where(best > 1.0 / anchor_t, best, 0.0).mean())


def _boxes_of(record: dict) -> np.ndarray:
    """(M, 4) xyxy boxes of a dataset dict's non-crowd annotations, clipped to the image."""
    from detectron2.structures import BoxMode

    anns = [a for a in record.get("annotations", ()) if not a.get("iscrowd", 0)]
    if not anns:
        return np.zeros((0, 4), np.float64)
    boxes = np.empty((len(anns), 4), np.float64)
    for i, a in enumerate(anns):
        box, mode = a["bbox"], a["bbox_mode"]
        if mode == BoxMode.XYXY_ABS:
            boxes[i] = box[:4]
        elif mode == BoxMode.XYWH_ABS:
            boxes[i] = (box[0], box[1], box[0] + box[2], box[1] + box[3])
        else:
            boxes[i] = BoxMode.convert(list(box), mode, BoxMode.XYXY_ABS)
    w, h = record["width"], record["height"]
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    return boxes


def box_sizes(dataset_dicts: Sequence[dict], image_size: int, *,
              max_boxes: Optional[int] = None, random_scale: bool = False,
              seed: int = 0) -> np.ndarray:
    """(N, 2) box (w, h) in pixels, each image resized to long side ``image_size``.

    ``dataset_dicts`` is any sequence (a list, detectron2's ``DatasetFromList``) of dicts with
    "width", "height" and "annotations". With ``max_boxes``, images are visited in a random
    (seeded) order until that many boxes are collected; ``random_scale`` multiplies each
    image's boxes by a factor uniform in [0.9, 1.1]. Boxes without area are left out."""
    rng = np.random.default_rng(seed)
    n = len(dataset_dicts)
    order = rng.permutation(n) if max_boxes else range(n)
    sizes, total = [], 0
    for i in order:
        record = dataset_dicts[int(i)]
        boxes = _boxes_of(record)
        if not len(boxes):
            continue
        scale = image_size / max(record["width"], record["height"])
        if random_scale:
            scale *= rng.uniform(0.9, 1.1)
        wh = (boxes[:, 2:] - boxes[:, :2]) * scale
        wh = wh[(wh > 0).all(axis=1)]
        sizes.append(wh)
        total += len(wh)
        if max_boxes and total >= max_boxes:
            break
    wh = np.concatenate(sizes) if sizes else np.zeros((0, 2))
    return wh[:max_boxes].astype(np.float32) if max_boxes else wh.astype(np.float32)


def _kmeans(points: np.ndarray, k: int, rng: np.random.Generator, iters: int = 30) -> np.ndarray:
    """Lloyd's k-means from a k-means++ start; an emptied cluster is re-seeded at the point
    farthest from its centre."""
    n = len(points)
    centres = [points[rng.integers(n)]]
    d2 = ((points - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        idx = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
        centres.append(points[idx])
        d2 = np.minimum(d2, ((points - points[idx]) ** 2).sum(1))
    centres = np.array(centres, dtype=np.float64)
    for _ in range(iters):
        dist = ((points[:, None, :] - centres[None]) ** 2).sum(2)
        assign = dist.argmin(1)
        new = centres.copy()
        for j in range(k):
            members = points[assign == j]
            if len(members):
                new[j] = members.mean(0)
            else:
                new[j] = points[dist.min(1).argmax()]
        if np.allclose(new, centres):
            centres = new
            break
        centres = new
    return centres


def kmeans_anchors(wh, n: int = 9, seed: int = 0) -> np.ndarray:
    """``n`` anchors (n, 2) from k-means on whitened box sizes, sorted by area."""
    wh = _as_wh(wh).astype(np.float64)
    unique = np.unique(wh, axis=0)
    if len(unique) < n:
        raise ValueError(f"{n} anchors need at least {n} distinct box sizes, got {len(unique)}")
    sigma = wh.std(0)
    sigma[sigma == 0] = 1.0
    k = _kmeans(wh / sigma, n, np.random.default_rng(seed)) * sigma
    return k[np.argsort(k.prod(1))]


def evolve_anchors(wh, anchors, anchor_t: float = 4.0, generations: int = 1000, *,
                   mutation_prob: float = 0.9, sigma: float = 0.1, seed: int = 0,
                   progress: bool = False) -> Tuple[np.ndarray, float]:
    """Genetic refinement (module doc). Returns (anchors sorted by area, fitness)."""
    wh = _as_wh(wh)
    k = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    rng = np.random.default_rng(seed)
    best = anchor_fitness(wh, k, anchor_t)
    steps = range(generations)
    bar = None
    if progress:
        from tqdm import tqdm

        steps = bar = tqdm(steps, desc=f"evolving anchors: fitness {best:.4f}")
    for _ in steps:
        v = np.ones_like(k)
        while (v == 1).all():  # mutate until something changes
            v = ((rng.random(k.shape) < mutation_prob) * rng.random()
                 * rng.standard_normal(k.shape) * sigma + 1).clip(0.3, 3.0)
        candidate = (k * v).clip(min=MIN_BOX_PX)
        f = anchor_fitness(wh, candidate, anchor_t)
        if f > best:
            best, k = f, candidate
            if bar is not None:
                bar.set_description(f"evolving anchors: fitness {best:.4f}", refresh=False)
    if bar is not None:
        bar.close()
    return k[np.argsort(k.prod(1))], best


def compute_anchors(wh, n: int = 9, anchor_t: float = 4.0, generations: int = 1000, *,
                    seed: int = 0, progress: bool = False) -> Tuple[np.ndarray, dict]:
    """k-means then evolution on boxes ``wh`` (tiny boxes filtered, module doc).
    Returns (anchors (n, 2) sorted by area, info with "boxes", "used", "small", fitness
    "kmeans" and "evolved")."""
    wh = _as_wh(wh)
    small = int((wh < SMALL_BOX_PX).any(1).sum())
    if small:
        logger.warning("%d of %d boxes have a side under %g px (extremely small objects)",
                       small, len(wh), SMALL_BOX_PX)
    used = wh[(wh >= MIN_BOX_PX).any(1)]
    k = kmeans_anchors(used, n, seed=seed)
    f0 = anchor_fitness(used, k, anchor_t)
    k, f1 = evolve_anchors(used, k, anchor_t, generations, seed=seed, progress=progress)
    return k, {"boxes": len(wh), "used": len(used), "small": small, "kmeans": f0, "evolved": f1}


def anchors_per_level(anchors, levels: int) -> List[List[float]]:
    """Anchors sorted by area, grouped into ``levels`` flat [w1, h1, w2, h2, ...] lists
    (stride 8 first: the smallest anchors), rounded to integers (at least 1)."""
    k = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    if len(k) % levels:
        raise ValueError(f"{len(k)} anchors cannot be split evenly into {levels} levels")
    k = np.maximum(np.round(k[np.argsort(k.prod(1), kind="stable")]), 1).astype(int)
    per = len(k) // levels
    return [k[i * per:(i + 1) * per].reshape(-1).tolist() for i in range(levels)]


def format_anchors(per_level: Iterable[Iterable[float]]) -> str:
    """``[[12,16,19,36,40,28],[...],[...]]``: a MODEL.YOLOV7.ANCHORS value without spaces."""
    return "[" + ",".join("[" + ",".join(f"{v:g}" for v in lvl) + "]" for lvl in per_level) + "]"


def check_anchors(anchors, dataset_dicts, *, image_size: int, anchor_t: float = 4.0,
                  min_bpr: float = 0.98, max_boxes: int = CHECK_MAX_BOXES, seed: int = 0,
                  config_hint: str = "CONFIG", autoanchor: bool = False,
                  levels: int = 3) -> Optional[dict]:
    """BPR and AAT of ``anchors`` on (at most ``max_boxes``) training boxes, logged. When BPR <
    ``min_bpr``: with ``autoanchor``, :func:`fit_new_anchors` (for ``levels`` levels); else a
    warning with the numbers and the command that computes better anchors.
    Returns {"bpr", "aat", "boxes"} and those of :func:`fit_new_anchors` (None without boxes)."""
    wh = box_sizes(dataset_dicts, image_size, max_boxes=max_boxes, random_scale=True, seed=seed)
    if not len(wh):
        logger.info("anchor check: no training boxes, skipped")
        return None
    bpr, aat = anchor_metrics(wh, anchors, anchor_t)
    logger.info("anchor check: best possible recall %.4f, %.2f anchors/box above threshold "
                "(%d boxes, image size %d, anchor_t %g)", bpr, aat, len(wh), image_size,
                anchor_t)
    result = {"bpr": bpr, "aat": aat, "boxes": len(wh)}
    if bpr >= min_bpr:
        return result
    if autoanchor:
        result.update(fit_new_anchors(wh, bpr, dataset_dicts, num_anchors=len(_as_wh(anchors)),
                                      levels=levels, image_size=image_size, anchor_t=anchor_t,
                                      max_boxes=max_boxes, seed=seed))
        return result
    logger.warning(
        "anchor check: the anchors fit the training boxes poorly: best possible recall "
        "%.4f < MODEL.YOLOV7.ANCHOR_CHECK_MIN_BPR %g (%.2f anchors/box above 1/anchor_t, "
        "%d boxes at image size %d). Boxes no anchor can be assigned to are never learned. "
        "Compute anchors for this data with `python tools/compute_anchors.py "
        "--config-file %s` and set the MODEL.YOLOV7.ANCHORS it prints.",
        bpr, min_bpr, aat, len(wh), image_size, config_hint)
    return result


def fit_new_anchors(wh, bpr: float, dataset_dicts, *, num_anchors: int, levels: int,
                    image_size: int, anchor_t: float = 4.0, max_boxes: int = CHECK_MAX_BOXES,
                    seed: int = 0, generations: int = 1000) -> dict:
    """Official autoanchor: :func:`compute_anchors` on the training boxes (not jittered, as the
    official ``kmean_anchors``), rounded, then their BPR on the check's boxes ``wh``, whose
    BPR with the current anchors is ``bpr``. Returns {"new_bpr", "new_aat"} and, when the new
    BPR is higher, "new_anchors" (levels, anchors per level, 2) to use instead."""
    logger.info("autoanchor: computing %d anchors for the training boxes (k-means, then %d "
                "generations of evolution)", num_anchors, generations)
    fit_wh = box_sizes(dataset_dicts, image_size, max_boxes=max_boxes, seed=seed)
    k, _ = compute_anchors(fit_wh, num_anchors, anchor_t, generations, seed=seed)
    per_level = anchors_per_level(k, levels)
    new = np.asarray(per_level, dtype=np.float32).reshape(levels, -1, 2)
    new_bpr, new_aat = anchor_metrics(wh, new, anchor_t)
    result = {"new_bpr": new_bpr, "new_aat": new_aat}
    if new_bpr > bpr:
        logger.warning(
            "autoanchor: best possible recall %.4f -> %.4f (%.2f anchors/box above threshold) "
            "with new anchors, used for training and saved with the checkpoints: "
            "MODEL.YOLOV7.ANCHORS %s", bpr, new_bpr, new_aat, format_anchors(per_level))
        result["new_anchors"] = new
    else:
        logger.warning("autoanchor: best possible recall %.4f with computed anchors, not above "
                       "%.4f: the anchors are kept", new_bpr, bpr)
    return result
