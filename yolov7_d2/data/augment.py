"""YOLOv7's train-time image augmentations as cfg-free numpy / OpenCV functions.

Every random choice is drawn from an explicit ``numpy.random.Generator`` so that a caller can
make the whole pipeline reproducible. Images are HxWxC uint8 arrays (any channel order, except
for :func:`augment_hsv`, which is told the order); annotations travel in :class:`Targets`
(pixel coordinates of the image they belong to).

The probabilities, ranges and order of operations follow ``utils/datasets.py`` of the official
YOLOv7 (https://github.com/WongKinYiu/yolov7: ``load_image``, ``load_mosaic``,
``load_mosaic9``, ``random_perspective``, ``box_candidates``, ``augment_hsv``, ``pastein``);
this is an independent implementation. Departures are listed where they occur.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

__all__ = [
    "PAD_VALUE",
    "Targets",
    "PasteSample",
    "PerspectiveRange",
    "BoxFilter",
    "LazyImage",
    "TiledCanvas",
    "long_side_resized",
    "resize_long_side",
    "fit_centered",
    "mosaic4",
    "mosaic9",
    "random_perspective",
    "box_candidates",
    "augment_hsv",
    "mixup",
    "extract_paste_samples",
    "paste_in",
    "flip_lr",
    "flip_ud",
    "transpose",
    "channels_first",
    "resample_polygons",
]

#: Grey level (0..255) of every border: those the augmentations create (official: 114 in
#: ``letterbox``, ``load_mosaic``, ``random_perspective``) and the model's batch padding.
PAD_VALUE = 114.0
#: Outline points per polygon part when a polygon is warped (official: 1000 per segment).
POLYGON_POINTS = 1000

# A polygon instance is a list of parts, each a (K, 2) float array of (x, y) vertices.
Polygon = List[np.ndarray]


@dataclass
class Targets:
    """Annotations of one image: N boxes (N, 4) xyxy pixels, N int64 classes and, per
    instance, its polygon parts or None (box-only annotation)."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    classes: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    polygons: List[Optional[Polygon]] = field(default_factory=list)

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.classes = np.asarray(self.classes, dtype=np.int64).reshape(-1)
        if not self.polygons:
            self.polygons = [None] * len(self.boxes)
        assert len(self.boxes) == len(self.classes) == len(self.polygons), (
            len(self.boxes), len(self.classes), len(self.polygons))

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def has_polygon(self) -> np.ndarray:
        """(N,) bool: which instances carry a polygon."""
        return np.array([p is not None for p in self.polygons], dtype=bool)

    def affine(self, scale: float = 1.0, dx: float = 0.0, dy: float = 0.0) -> "Targets":
        """Boxes and polygons mapped by x -> x * scale + dx, y -> y * scale + dy."""
        offset = np.array([dx, dy])
        boxes = self.boxes * scale + np.tile(offset, 2)
        polys = [None if p is None else [part * scale + offset for part in p]
                 for p in self.polygons]
        return Targets(boxes, self.classes.copy(), polys)

    def clip(self, width: float, height: float) -> "Targets":
        """Boxes and polygon vertices clamped into [0, width] x [0, height]."""
        hi = np.array([width, height])
        boxes = np.clip(self.boxes, 0, np.tile(hi, 2))
        polys = [None if p is None else [np.clip(part, 0, hi) for part in p]
                 for p in self.polygons]
        return Targets(boxes, self.classes.copy(), polys)

    @staticmethod
    def cat(items: Sequence["Targets"]) -> "Targets":
        items = list(items)
        if not items:
            return Targets()
        return Targets(np.concatenate([t.boxes for t in items]),
                       np.concatenate([t.classes for t in items]),
                       [p for t in items for p in t.polygons])


# ----------------------------------------------------------------------------- resizing
def long_side_resized(width: int, height: int, size: int) -> Tuple[int, int]:
    """(width, height) of an image resized so that its long side is ``size``, aspect kept.
    The long side is exactly ``size`` (the official ``int(w * r)`` can land one pixel short
    through float rounding)."""
    r = size / max(width, height)
    return (size if width >= height else max(1, int(round(width * r))),
            size if height > width else max(1, int(round(height * r))))


def resize_long_side(img: np.ndarray, size: int, interpolation: int) -> Tuple[np.ndarray, float]:
    """Resize so that the long side is ``size`` (up or down), aspect kept
    (:func:`long_side_resized`). Returns the image and its scale factor."""
    h, w = img.shape[:2]
    r = size / max(h, w)
    if r == 1:
        return img, 1.0
    return cv2.resize(img, long_side_resized(w, h, size), interpolation=interpolation), r


def fit_centered(img: np.ndarray, size: int, interpolation: int = cv2.INTER_LINEAR
                 ) -> Tuple[np.ndarray, float, Tuple[int, int]]:
    """Resize ``img`` so that its long side is ``size`` (aspect kept) and centre it on a
    ``size`` x ``size`` grey canvas (odd padding: the extra pixel goes right / bottom, as the
    official ``letterbox``). Returns canvas, scale, (pad_x, pad_y)."""
    h, w = img.shape[:2]
    r = 1.0
    if max(h, w) != size:
        img, r = resize_long_side(img, size, interpolation)
        h, w = img.shape[:2]
    pad_x, pad_y = (size - w) // 2, (size - h) // 2
    canvas = np.full((size, size, img.shape[2]), PAD_VALUE, dtype=np.uint8)
    canvas[pad_y:pad_y + h, pad_x:pad_x + w] = img
    return canvas, r, (pad_x, pad_y)


# ----------------------------------------------------------------------------- mosaics
class LazyImage:
    """An image whose shape is known before its pixels, read when they are first needed: a
    mosaic tile that the output may not show (a quarter of them never are), a paste-in
    source whose objects may not be chosen."""

    def __init__(self, shape: Tuple[int, int, int], read: Callable[[], np.ndarray]):
        """``read()`` returns the (H, W, C) uint8 array of ``shape``."""
        self.shape, self._read, self._pixels = tuple(shape), read, None

    def read(self) -> np.ndarray:
        """The pixels (read once)."""
        if self._pixels is None:
            self._pixels = self._read()
        return self._pixels


def _pixels_of(img: Union[np.ndarray, LazyImage]) -> np.ndarray:
    """The array of an image that may be a :class:`LazyImage` (read then)."""
    return img.read() if isinstance(img, LazyImage) else img


class TiledCanvas:
    """A grey ``height`` x ``width`` canvas with images placed on it, drawn on demand.

    A mosaic is one of these: :func:`random_perspective` draws only the window its output
    reads (on average a third of the canvas with the official scale range), not the whole
    canvas, and gets the same pixels.
    """

    def __init__(self, height: int, width: int, images: Sequence[Union[np.ndarray, LazyImage]],
                 origins: Sequence[Tuple[int, int]]):
        """``images``: arrays, or :class:`LazyImage` read when a window shows them;
        ``origins``: (x, y) of each image's top-left corner, which may be negative or reach
        past the canvas (the outside part is cut)."""
        self.height, self.width = int(height), int(width)
        self.images, self.origins = list(images), list(origins)

    @property
    def shape(self) -> Tuple[int, int, int]:
        return self.height, self.width, self.images[0].shape[2]

    def render(self, window: Optional[Tuple[int, int, int, int]] = None) -> np.ndarray:
        """The canvas as a new (height, width, C) array. With ``window`` (x0, y0, x1, y1),
        only [x0, x1) x [y0, y1) is drawn and the rest is left uninitialised, for a reader
        that reads nothing else."""
        x0, y0, x1, y1 = window or (0, 0, self.width, self.height)
        canvas = np.empty(self.shape, dtype=np.uint8)
        canvas[y0:y1, x0:x1] = PAD_VALUE
        for img, (ox, oy) in zip(self.images, self.origins):
            h, w = img.shape[:2]
            # the image's part inside the canvas and the window
            left, top = max(ox, x0, 0), max(oy, y0, 0)
            right, bottom = min(ox + w, x1), min(oy + h, y1)
            if right > left and bottom > top:
                canvas[top:bottom, left:right] = _pixels_of(img)[top - oy:bottom - oy,
                                                                left - ox:right - ox]
        return canvas


def _paste_tiles(canvas_hw: Tuple[int, int],
                 tiles: Sequence[Tuple[Union[np.ndarray, LazyImage], Targets]],
                 origins: Sequence[Tuple[int, int]]) -> Tuple[TiledCanvas, Targets]:
    """Place each tile with its top-left corner at ``origin`` (may be negative or reach past
    the canvas: the outside part is cut), on a grey canvas; targets follow, clamped to it."""
    ch, cw = canvas_hw
    moved = [targets.affine(1.0, ox, oy) for (_, targets), (ox, oy) in zip(tiles, origins)]
    canvas = TiledCanvas(ch, cw, [img for img, _ in tiles], origins)
    return canvas, Targets.cat(moved).clip(cw, ch)


def mosaic4(tiles: Sequence[Tuple[Union[np.ndarray, LazyImage], Targets]], size: int,
            rng: np.random.Generator) -> Tuple[TiledCanvas, Targets]:
    """Four images around a random centre of a 2s x 2s grey canvas (s = ``size``), as a
    :class:`TiledCanvas`.

    The centre is uniform in [s/2, 3s/2) on each axis; tile 0 ends at the centre (top left),
    tile 1 starts right of it (top right), tile 2 below-left, tile 3 below-right. Tiles are
    expected with their long side resized to s, so they never overlap.
    """
    assert len(tiles) == 4, len(tiles)
    s = size
    xc, yc = (int(v) for v in rng.uniform(s / 2, 3 * s / 2, size=2))
    (h0, w0), (h1, _), (_, w2) = (t[0].shape[:2] for t in tiles[:3])
    origins = [(xc - w0, yc - h0), (xc, yc - h1), (xc - w2, yc), (xc, yc)]
    return _paste_tiles((2 * s, 2 * s), tiles, origins)


def mosaic9(tiles: Sequence[Tuple[Union[np.ndarray, LazyImage], Targets]], size: int,
            rng: np.random.Generator) -> Tuple[TiledCanvas, Targets]:
    """Nine images laid out around the first on a 3s x 3s grid, then a random 2s x 2s crop
    (a :class:`TiledCanvas`).

    Layout (official ``load_mosaic9``): tile 0 at (s, s); then clockwise from the top: top,
    top-right, right, bottom-right, bottom, bottom-left, left, top-left, each placed against
    its predecessor. The crop's corner is uniform in [0, s) on each axis.
    """
    assert len(tiles) == 9, len(tiles)
    s = size
    hw = [t[0].shape[:2] for t in tiles]
    (h0, w0), (h1, w1), (h2, _), (h3, _), _, (_, w5), (_, w6), (h7, w7), (h8, w8) = hw
    origins = [
        (s, s),                          # centre
        (s, s - h1),                     # top
        (s + w1, s - h2),                # top right
        (s + w0, s),                     # right
        (s + w0, s + h3),                # bottom right
        (s + w0 - w5, s + h0),           # bottom
        (s + w0 - w5 - w6, s + h0),      # bottom left
        (s - w7, s + h0 - h7),           # left
        (s - w8, s + h0 - h7 - h8),      # top left
    ]
    # Paste straight into the crop window instead of building the 3s canvas first. Whatever
    # lies left of / above the 3s canvas lies left of / above the window too (the window's
    # corner is >= 0), so it is cut the same way.
    cx, cy = (int(v) for v in rng.uniform(0, s, size=2))
    return _paste_tiles((2 * s, 2 * s), tiles, [(ox - cx, oy - cy) for ox, oy in origins])


# ----------------------------------------------------------------------------- geometry
def resample_polygons(parts: Sequence[np.ndarray], n: int = POLYGON_POINTS) -> np.ndarray:
    """(P, n, 2): for each closed outline (K_i, 2) of ``parts``, ``n`` points evenly spaced by
    arc length from its first vertex round to it again (all of them at that vertex when the
    outline has no length).

    Departure: the official ``resample_segments`` spaces points evenly per vertex index; by
    arc length every part of the outline is sampled equally densely.
    """
    return np.stack(_resampled_xy(parts, n), axis=-1)


def _resampled_xy(parts: Sequence[np.ndarray], n: int) -> Tuple[np.ndarray, np.ndarray]:
    """x and y (P, n) of :func:`resample_polygons`, all outlines at once: the shorter ones
    are padded with zero-length segments, which move no point."""
    count, k = len(parts), max(len(q) for q in parts)
    closed = np.empty((count, k + 1, 2))
    for i, q in enumerate(parts):
        closed[i, :len(q)], closed[i, len(q):] = q, q[0]
    seg = np.zeros((count, k + 1))  # seg[:, i]: length from vertex i to i + 1 (last: 0)
    seg[:, :k] = np.hypot(*np.diff(closed, axis=1).transpose(2, 0, 1))
    dist = np.cumsum(seg, axis=1) - seg  # (P, k + 1) arc length at each vertex
    total = dist[:, -1:]
    t = total * np.linspace(0.0, 1.0, n)  # (P, n) arc length of each point
    # The segment of each point, in the flattened arrays: one sorted search over all
    # outlines, each moved past the end of the one before.
    shift = np.arange(count)[:, None] * (total.max() + 1.0)
    j = np.searchsorted((dist + shift).ravel(), (t + shift).ravel(), side="right") - 1
    first = np.arange(count).repeat(n) * (k + 1)
    j = np.clip(j, first, first + k - 1)
    length = seg.ravel()[j]
    frac = np.divide(t.ravel() - dist.ravel()[j], length, out=np.zeros(count * n),
                     where=length > 0)
    x, y = closed[..., 0].ravel(), closed[..., 1].ravel()
    x = x[j] + frac * (x[j + 1] - x[j])
    y = y[j] + frac * (y[j + 1] - y[j])
    return x.reshape(count, n), y.reshape(count, n)


def _apply_matrix(x: np.ndarray, y: np.ndarray, matrix: np.ndarray,
                  projective: bool) -> Tuple[np.ndarray, np.ndarray]:
    """The points (x, y) (arrays of one shape) moved by ``matrix`` (3, 3): new x and y."""
    wx, wy = (matrix[i, 0] * x + matrix[i, 1] * y + matrix[i, 2] for i in (0, 1))
    if projective:
        w = matrix[2, 0] * x + matrix[2, 1] * y + matrix[2, 2]
        wx, wy = wx / w, wy / w
    return wx, wy


def _warp_boxes(boxes: np.ndarray, matrix: np.ndarray, projective: bool) -> np.ndarray:
    """Each box's 4 corners warped; the enclosing axis-aligned box."""
    if not len(boxes):
        return boxes.copy()
    x, y = _apply_matrix(boxes[:, [0, 2, 2, 0]], boxes[:, [1, 1, 3, 3]], matrix, projective)
    return np.stack([x.min(1), y.min(1), x.max(1), y.max(1)], axis=1)


def _warp_polygon_boxes(polygons: Sequence[Polygon], matrix: np.ndarray, projective: bool,
                        width: int, height: int, chunk: int = 256) -> np.ndarray:
    """(N, 4): for each polygon instance, the box around its warped outline points
    (:func:`resample_polygons`) that land inside the canvas; all zeros if none does. Outlines
    are resampled ``chunk`` at a time (memory: about 50 kB per outline)."""
    parts = [part for polygon in polygons for part in polygon]
    lo, hi = np.empty((len(parts), 2)), np.empty((len(parts), 2))
    for start in range(0, len(parts), chunk):
        wx, wy = _apply_matrix(*_resampled_xy(parts[start:start + chunk], POLYGON_POINTS),
                               matrix, projective)
        inside = (wx >= 0) & (wy >= 0) & (wx <= width) & (wy <= height)
        rows = slice(start, start + chunk)
        lo[rows, 0], lo[rows, 1] = (np.where(inside, c, np.inf).min(1) for c in (wx, wy))
        hi[rows, 0], hi[rows, 1] = (np.where(inside, c, -np.inf).max(1) for c in (wx, wy))
    first_parts = np.cumsum([0] + [len(polygon) for polygon in polygons[:-1]])
    boxes = np.concatenate([np.minimum.reduceat(lo, first_parts),
                            np.maximum.reduceat(hi, first_parts)], axis=1)
    boxes[~np.isfinite(boxes).all(1)] = 0.0
    return boxes


def _warp(img: Union[np.ndarray, TiledCanvas], matrix: np.ndarray, size: int,
          projective: bool) -> np.ndarray:
    """``img`` warped by ``matrix`` (3, 3) onto a ``size`` square (bilinear, grey outside).

    Of a :class:`TiledCanvas` under an affine ``matrix``, only the window holding the
    source of every output pixel is drawn, with a margin of 2 pixels for the bilinear
    neighbours and OpenCV's 1/32-pixel rounding: the pixels of the whole canvas warped.
    """
    border = (PAD_VALUE,) * img.shape[2]
    if projective:
        img = img.render() if isinstance(img, TiledCanvas) else img
        return cv2.warpPerspective(img, matrix, (size, size), borderValue=border)
    if isinstance(img, TiledCanvas):
        inverse = np.linalg.inv(matrix)
        corners = np.array([[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]])
        src = corners @ inverse[:2, :2].T + inverse[:2, 2]
        x0, y0 = np.clip(np.floor(src.min(0)).astype(int) - 2, 0, (img.width, img.height))
        x1, y1 = np.clip(np.floor(src.max(0)).astype(int) + 3, (x0, y0), (img.width, img.height))
        img = img.render((x0, y0, x1, y1))
    return cv2.warpAffine(img, matrix[:2], (size, size), borderValue=border)


@dataclass(frozen=True)
class PerspectiveRange:
    """Ranges of :func:`random_perspective` (official ``hyp`` keys of the same names):
    rotation U(-degrees, degrees) in degrees; scale gain U(1 - scale, 1.1 + scale); shear
    U(-shear, shear) in degrees on each axis; translation U(0.5 - translate, 0.5 + translate)
    of the output size; perspective U(-perspective, perspective) (0: affine only)."""

    degrees: float = 0.0
    translate: float = 0.2
    scale: float = 0.9
    shear: float = 0.0
    perspective: float = 0.0


@dataclass(frozen=True)
class BoxFilter:
    """Which boxes survive an augmentation (see :func:`box_candidates`): width and height over
    ``min_size`` px, aspect (long / short) under ``max_aspect``, area over ``min_area_ratio``
    of the box before the warp times its scale (``polygon_min_area_ratio`` for instances
    whose box is re-fitted around their warped polygon)."""

    min_size: float = 2.0
    max_aspect: float = 20.0
    min_area_ratio: float = 0.1
    polygon_min_area_ratio: float = 0.01


def box_candidates(before: Optional[np.ndarray], after: np.ndarray, min_size: float,
                   max_aspect: float, min_area_ratio=None, eps: float = 1e-16) -> np.ndarray:
    """(N,) bool: boxes worth keeping after an augmentation (official ``box_candidates``; the
    thresholds of a :class:`BoxFilter`).

    Kept: width and height above ``min_size`` px, aspect ratio (long / short) below
    ``max_aspect``, and area above ``min_area_ratio`` (a scalar or (N,) array) times the
    area of the same box ``before`` the augmentation. ``before`` may be None (no area test,
    no ``min_area_ratio`` needed).

    Departure: a box of zero area ``before`` is never kept. It is an object clipped away
    (outside its image or the mosaic canvas); the official ratio test passes it (x / eps),
    and a rotation turns that line into a box around nothing.
    """
    w, h = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    aspect = np.maximum(w / (h + eps), h / (w + eps))
    keep = (w > min_size) & (h > min_size) & (aspect < max_aspect)
    if before is not None:
        area0 = (before[:, 2] - before[:, 0]) * (before[:, 3] - before[:, 1])
        keep &= (area0 > 0) & (w * h / (area0 + eps) > min_area_ratio)
    return keep


def random_perspective(img: Union[np.ndarray, TiledCanvas], targets: Targets, out_size: int,
                       rng: np.random.Generator,
                       ranges: PerspectiveRange = PerspectiveRange(),
                       box_filter: BoxFilter = BoxFilter()) -> Tuple[np.ndarray, Targets, int]:
    """Random rotation / scale / shear / translation / perspective within ``ranges``, output
    ``out_size`` square.

    The input is centred on the origin, then (official order) warped by perspective, rotation
    with scale ``U(1 - scale, 1.1 + scale)``, shear, and moved to ``U(0.5 - t, 0.5 + t)`` of
    the output size; what falls outside is cut and new area is grey. A mosaic (2s input, s
    output) thus keeps a random crop around its middle.

    Instances with a polygon get their box re-fitted around the warped outline (resampled to
    ``POLYGON_POINTS`` points per part, points outside the canvas ignored) and pass the area
    test at ``box_filter.polygon_min_area_ratio`` (official: 0.01 with segments); box-only
    instances get the box around their 4 warped corners, clipped, and ``min_area_ratio``.
    Boxes failing ``box_filter`` are dropped. ``img`` may be a :class:`TiledCanvas` (a
    mosaic): only the part the warp reads is drawn. Returns (image, targets without polygons,
    #dropped).
    """
    in_h, in_w = img.shape[:2]
    size = out_size
    center = np.eye(3)
    center[:2, 2] = (-in_w / 2, -in_h / 2)
    persp = np.eye(3)
    persp[2, :2] = rng.uniform(-ranges.perspective, ranges.perspective, size=2)
    angle = rng.uniform(-ranges.degrees, ranges.degrees)
    gain = rng.uniform(1 - ranges.scale, 1.1 + ranges.scale)
    rot = np.eye(3)
    rot[:2] = cv2.getRotationMatrix2D(center=(0, 0), angle=angle, scale=gain)
    skew = np.eye(3)
    skew[0, 1], skew[1, 0] = np.tan(np.deg2rad(rng.uniform(-ranges.shear, ranges.shear, size=2)))
    move = np.eye(3)
    move[:2, 2] = rng.uniform(0.5 - ranges.translate, 0.5 + ranges.translate, size=2) * size
    matrix = move @ skew @ rot @ persp @ center  # applied right to left
    projective = bool(ranges.perspective)

    if (in_h, in_w) != (size, size) or not np.allclose(matrix, np.eye(3)):
        img = _warp(img, matrix, size, projective)
    elif isinstance(img, TiledCanvas):
        img = img.render()

    if not len(targets):
        return img, Targets(), 0
    new = _warp_boxes(targets.boxes, matrix, projective)
    new[:, [0, 2]] = new[:, [0, 2]].clip(0, size)
    new[:, [1, 3]] = new[:, [1, 3]].clip(0, size)
    has_poly = targets.has_polygon
    if has_poly.any():
        new[has_poly] = _warp_polygon_boxes([p for p in targets.polygons if p is not None],
                                            matrix, projective, size, size)
    area_ratio = np.where(has_poly, box_filter.polygon_min_area_ratio, box_filter.min_area_ratio)
    keep = box_candidates(targets.boxes * gain, new, box_filter.min_size, box_filter.max_aspect,
                          area_ratio)
    return img, Targets(new[keep], targets.classes[keep]), int((~keep).sum())


# ----------------------------------------------------------------------------- colour, mixing
def augment_hsv(img: np.ndarray, gains: Sequence[float], rng: np.random.Generator,
                rgb: bool = True) -> np.ndarray:
    """Random hue / saturation / value gains ``1 + U(-1, 1) * gain``, applied in place via
    look-up tables in OpenCV's HSV space (hue 0..179 wraps around). Returns ``img``."""
    factors = rng.uniform(-1, 1, size=3) * np.asarray(gains, dtype=np.float64) + 1
    if np.all(factors == 1):
        return img
    to_hsv, from_hsv = ((cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB) if rgb
                        else (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR))
    levels = np.arange(256, dtype=np.float64)
    tables = [
        np.mod(levels * factors[0], 180).astype(np.uint8),
        np.clip(levels * factors[1], 0, 255).astype(np.uint8),
        np.clip(levels * factors[2], 0, 255).astype(np.uint8),
    ]
    hsv = cv2.cvtColor(img, to_hsv)
    # In place, plane by plane: 1.5x faster than one 3-channel table, 4x faster than new
    # planes (each a fresh allocation that the kernel maps page by page). The results are
    # taken from the return values, which are the given arrays where OpenCV wrote into them.
    planes = [cv2.LUT(plane, table, dst=plane) for plane, table in zip(cv2.split(hsv), tables)]
    out = cv2.cvtColor(cv2.merge(planes, dst=hsv), from_hsv, dst=img)
    if out is not img:
        img[...] = out
    return img


def mixup(img1: np.ndarray, t1: Targets, img2: np.ndarray, t2: Targets,
          rng: np.random.Generator, alpha: float = 8.0) -> Tuple[np.ndarray, Targets]:
    """Blend two same-size images with ratio r ~ Beta(alpha, alpha); keep both label sets.
    Departure: pixels are rounded (OpenCV's ``addWeighted``), not truncated as official."""
    r = rng.beta(alpha, alpha)
    return cv2.addWeighted(img1, r, img2, 1.0 - r, 0.0), Targets.cat([t1, t2])


# ----------------------------------------------------------------------------- paste-in
@dataclass
class PasteSample:
    """An object cut out along its polygon: class, HxWxC crop (zero outside), HxW uint8 mask."""

    category: int
    image: np.ndarray
    mask: np.ndarray


def extract_paste_samples(images_targets: Sequence[Tuple[Union[np.ndarray, LazyImage], Targets]],
                          rng: np.random.Generator, fraction: float = 0.5) -> List[PasteSample]:
    """Cut ``round(fraction * n)`` of the n polygon instances of a group of images (chosen
    without replacement; Python rounding, so one instance alone is never cut, as official).

    Departure: the official code takes the group as a 4-image mosaic and cuts objects out
    of it (objects partly outside that mosaic lose their outside part); here they are cut
    from each image directly.
    """
    pool = [(img, t, i) for img, t in images_targets for i in np.flatnonzero(t.has_polygon)]
    k = round(fraction * len(pool))
    samples = []
    for j in (rng.choice(len(pool), size=k, replace=False) if k else []):
        img, targets, i = pool[j]
        h, w = img.shape[:2]
        x0, y0, x1, y1 = targets.boxes[i].astype(int)
        x0, x1 = np.clip([x0, x1], 0, w - 1)
        y0, y1 = np.clip([y0, y1], 0, h - 1)
        if x1 <= x0 or y1 <= y0:
            continue
        mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        parts = [np.round(p - (x0, y0)).astype(np.int32) for p in targets.polygons[i]]
        cv2.fillPoly(mask, parts, 255)
        crop = _pixels_of(img)[y0:y1, x0:x1] * (mask[:, :, None] > 0)
        samples.append(PasteSample(int(targets.classes[i]), crop, mask))
    return samples


def _ioa(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection of ``box`` with each of ``boxes`` over the area of that one of ``boxes``."""
    iw = (np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])).clip(0)
    ih = (np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])).clip(0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return iw * ih / (area + 1e-16)


#: Target box sizes of paste-in, as fractions of the image side (official ``pastein``).
PASTE_SCALES = (0.75,) * 2 + (0.5,) * 4 + (0.25,) * 4 + (0.125,) * 4 + (0.0625,) * 6


def paste_in(img: np.ndarray, targets: Targets, samples: Sequence[PasteSample],
             rng: np.random.Generator, *, skip_prob: float = 0.2, max_ioa: float = 0.3,
             min_region: int = 20, min_side: int = 10, min_mask_pixels: int = 60) -> Targets:
    """Paste random ``samples`` into ``img`` (in place); returns the targets plus new boxes.

    For each of :data:`PASTE_SCALES` (each skipped with ``skip_prob``) a random region up to
    that fraction of the image is drawn; a sample is scaled to fit it (aspect kept) and
    pasted through its mask if the region covers less than ``max_ioa`` of every existing box,
    is over ``min_region`` px on both sides, the scaled sample over ``min_side`` px and its
    mask over ``min_mask_pixels`` px. Departure: the new box is the tight box of the pasted
    mask (the official code labels the whole scaled crop, which the mask nearly fills).
    """
    h, w = img.shape[:2]
    boxes, classes = [targets.boxes], [targets.classes]
    for frac in PASTE_SCALES:
        if rng.random() < skip_prob:
            continue
        rh = int(rng.integers(1, max(int(h * frac), 1) + 1))
        rw = int(rng.integers(1, max(int(w * frac), 1) + 1))
        x0 = max(0, int(rng.integers(0, w + 1)) - rw // 2)
        y0 = max(0, int(rng.integers(0, h + 1)) - rh // 2)
        x1, y1 = min(w, x0 + rw), min(h, y0 + rh)
        region = np.array([x0, y0, x1, y1], dtype=np.float64)
        existing = np.concatenate(boxes)
        if len(existing) and (_ioa(region, existing) >= max_ioa).any():
            continue
        if not samples or x1 - x0 <= min_region or y1 - y0 <= min_region:
            continue
        sample = samples[int(rng.integers(len(samples)))]
        sh, sw = sample.mask.shape
        r = min((y1 - y0) / sh, (x1 - x0) / sw)
        pw, ph = int(sw * r), int(sh * r)
        if pw <= min_side or ph <= min_side:
            continue
        mask = cv2.resize(sample.mask, (pw, ph)) > 0
        if mask.sum() <= min_mask_pixels:
            continue
        patch = cv2.resize(sample.image, (pw, ph))
        img[y0:y0 + ph, x0:x0 + pw][mask] = patch[mask]
        ys, xs = np.nonzero(mask)
        boxes.append(np.array([[x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1,
                                y0 + ys.max() + 1]], dtype=np.float64))
        classes.append(np.array([sample.category], dtype=np.int64))
    if len(boxes) == 1:
        return targets
    return Targets(np.concatenate(boxes), np.concatenate(classes))


# ----------------------------------------------------------------------------- flips
# The flips are OpenCV's copies (0.04 ms at 640), not views: the image stays contiguous, as
# OpenCV's move to channels-first (channels_first) needs it (a view is copied first).
def flip_lr(img: np.ndarray, targets: Targets) -> Tuple[np.ndarray, Targets]:
    w = img.shape[1]
    boxes = targets.boxes.copy()
    boxes[:, [0, 2]] = w - targets.boxes[:, [2, 0]]
    polys = [None if p is None else [np.stack([w - q[:, 0], q[:, 1]], 1) for q in p]
             for p in targets.polygons]
    return cv2.flip(img, 1), Targets(boxes, targets.classes, polys)


def flip_ud(img: np.ndarray, targets: Targets) -> Tuple[np.ndarray, Targets]:
    h = img.shape[0]
    boxes = targets.boxes.copy()
    boxes[:, [1, 3]] = h - targets.boxes[:, [3, 1]]
    polys = [None if p is None else [np.stack([q[:, 0], h - q[:, 1]], 1) for q in p]
             for p in targets.polygons]
    return cv2.flip(img, 0), Targets(boxes, targets.classes, polys)


def transpose(img: np.ndarray, targets: Targets) -> Tuple[np.ndarray, Targets]:
    """Swap x and y (mirror about the main diagonal): with the two flips, every rotation by a
    multiple of 90 degrees and every reflection of the square, with boxes kept exact."""
    boxes = targets.boxes[:, [1, 0, 3, 2]].copy()
    polys = [None if p is None else [q[:, ::-1].copy() for q in p] for p in targets.polygons]
    return np.ascontiguousarray(img.transpose(1, 0, 2)), Targets(boxes, targets.classes, polys)


def channels_first(img: np.ndarray, reverse: bool = False) -> np.ndarray:
    """A (C, H, W) copy of the (H, W, C) ``img``, its channels in reverse order if
    ``reverse`` (BGR <-> RGB): OpenCV splits the planes straight into the new array, 7x
    faster than numpy's strided copy of ``img.transpose(2, 0, 1)``."""
    img = np.ascontiguousarray(img)
    out = np.empty((img.shape[2], *img.shape[:2]), dtype=img.dtype)
    planes = list(out[::-1] if reverse else out)
    for given, written in zip(planes, cv2.split(img, planes)):
        if written.ctypes.data != given.ctypes.data:  # a binding that made new arrays
            given[...] = written
    return out
