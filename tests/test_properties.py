"""Property tests (hypothesis) of the box transforms and of the training mapper end to end, on
random small images and boxes: no NaN, no box outside the canvas, no degenerate box out of
the mapper, class ids unchanged and carried by their own box, the resize-and-centre of the
mapper and the evaluation resize with their inverses.

Examples are derived from a fixed seed (``derandomize``) so that every run, CI included,
tests the same ones; a failure found once is kept below as an explicit ``@example``.
"""
import functools
import itertools
from collections import Counter

import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from yolov7_d2.config import load_config
from yolov7_d2.data import YOLOv7MosaicMapper, build_yolov7_test_mapper
from yolov7_d2.data import augment as A
from yolov7_d2.data.mapper import FlipProbs, MixProbs

from detectron2.modeling import detector_postprocess
from detectron2.structures import Boxes, BoxMode, Instances

# conftest's autouse seeding fixture is function-scoped: harmless here, every random draw
# below comes from hypothesis or an explicit generator.
PROPERTIES = settings(derandomize=True, database=None, deadline=None, max_examples=40,
                      suppress_health_check=[HealthCheck.too_slow,
                                             HealthCheck.function_scoped_fixture])


def noise(seed: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@st.composite
def integer_boxes(draw, width: int, height: int, max_boxes: int = 5):
    """(N, 4) float xyxy boxes with integer corners inside a width x height image, each at
    least 1 px wide and high."""
    boxes = []
    for _ in range(draw(st.integers(0, max_boxes))):
        x0, x1 = sorted(draw(st.lists(st.integers(0, width), min_size=2, max_size=2,
                                      unique=True)))
        y0, y1 = sorted(draw(st.lists(st.integers(0, height), min_size=2, max_size=2,
                                      unique=True)))
        boxes.append([x0, y0, x1, y1])
    return np.array(boxes, dtype=np.float64).reshape(-1, 4)


def check_boxes(boxes: np.ndarray, width: float, height: float):
    """Finite boxes inside the width x height canvas, corners in order."""
    assert np.isfinite(boxes).all(), boxes
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width).all(), boxes
    assert (boxes[:, 3] <= height).all(), boxes
    assert (boxes[:, 2:] >= boxes[:, :2]).all(), boxes


# ----------------------------------------------------------------------------- flips
FLIPS = {
    "flip_lr": (A.flip_lr, lambda crop: crop[:, ::-1]),
    "flip_ud": (A.flip_ud, lambda crop: crop[::-1]),
    "transpose": (A.transpose, lambda crop: crop.transpose(1, 0, 2)),
}


@PROPERTIES
@given(data=st.data(), name=st.sampled_from(sorted(FLIPS)))
def test_flips_and_transpose_move_each_box_with_its_pixels(data, name):
    """The pixels under each output box are the flipped pixels under its input box; classes
    keep their order; applying the flip twice gives the input back."""
    op, flip_crop = FLIPS[name]
    h, w = data.draw(st.integers(1, 40)), data.draw(st.integers(1, 40))
    boxes = data.draw(integer_boxes(w, h))
    classes = data.draw(st.lists(st.integers(0, 5), min_size=len(boxes), max_size=len(boxes)))
    image = noise(data.draw(st.integers(0, 2**16)), h, w)
    targets = A.Targets(boxes, classes)
    out_image, out = op(image, targets)
    out_h, out_w = out_image.shape[:2]
    assert (out_h, out_w) == ((w, h) if name == "transpose" else (h, w))
    check_boxes(out.boxes, out_w, out_h)
    assert out.classes.tolist() == classes
    for before, after in zip(boxes.astype(int), out.boxes.astype(int)):
        crop = image[before[1]:before[3], before[0]:before[2]]
        np.testing.assert_array_equal(out_image[after[1]:after[3], after[0]:after[2]],
                                      flip_crop(crop))
    back_image, back = op(out_image, out)
    np.testing.assert_array_equal(back_image, image)
    np.testing.assert_array_equal(back.boxes, boxes)


# ----------------------------------------------------------------------------- mosaics
def tile_colour(k: int):
    return (20 + 25 * k, 240 - 20 * k, 7 * k)  # never the grey 114 border


@PROPERTIES
@given(data=st.data(), nine=st.booleans())
def test_mosaic_places_each_box_on_its_own_tile(data, nine):
    """Tiles of one colour each (long side s, the mapper's resize), boxes with class
    10 * tile + box: every output box is the input box moved with its tile and clipped to
    the 2s canvas, and every pixel under it has its tile's colour (tiles never overlap)."""
    s = data.draw(st.integers(4, 32))
    tiles = []
    for k in range(9 if nine else 4):
        short = data.draw(st.integers(1, s))
        h, w = (s, short) if data.draw(st.booleans()) else (short, s)
        boxes = data.draw(integer_boxes(w, h, max_boxes=3))
        tiles.append((np.full((h, w, 3), tile_colour(k), np.uint8),
                      A.Targets(boxes, 10 * k + np.arange(len(boxes)))))
    seed = data.draw(st.integers(0, 2**16))
    mosaic, out = (A.mosaic9 if nine else A.mosaic4)(tiles, s, np.random.default_rng(seed))
    canvas = mosaic.render()
    assert mosaic.shape == canvas.shape == (2 * s, 2 * s, 3)
    check_boxes(out.boxes, 2 * s, 2 * s)
    inputs = [(k, box) for k, (_, t) in enumerate(tiles) for box in t.boxes]
    assert out.classes.tolist() == [c for _, t in tiles for c in t.classes]
    for (k, before), after in zip(inputs, out.boxes):
        size = after[2:] - after[:2]
        assert (size <= before[2:] - before[:2]).all()  # moved (integer offsets), clipped
        if (size > 0).all():
            x0, y0, x1, y1 = after.astype(int)
            assert (canvas[y0:y1, x0:x1] == tile_colour(k)).all(), (k, before, after)


# ----------------------------------------------------------------------------- perspective
@st.composite
def unit_boxes(draw, max_boxes: int = 6):
    """Boxes as fractions of the image size, some of zero width or height (the boxes of
    objects clipped away: outside the image or the mosaic canvas)."""
    boxes = []
    for _ in range(draw(st.integers(0, max_boxes))):
        x0, x1 = sorted(draw(st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0))))
        y0, y1 = sorted(draw(st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0))))
        flat = draw(st.sampled_from(["no", "no", "width", "height"]))
        boxes.append([x0, y0, x0 if flat == "width" else x1, y0 if flat == "height" else y1])
    return boxes


@st.composite
def perspective_args(draw):
    return dict(
        degrees=draw(st.sampled_from([0.0, 10.0, 45.0, 180.0])),
        translate=draw(st.floats(0.0, 0.5)),
        scale=draw(st.floats(0.0, 0.9)),
        shear=draw(st.sampled_from([0.0, 5.0, 30.0])),
        perspective=draw(st.sampled_from([0.0, 0.0005, 0.002])),
    )


@PROPERTIES
@example(  # found by this test: an object clipped away (a zero-width box on the image edge)
    # came back as a 25 x 34 px box once rotated; box_candidates now drops zero-area boxes.
    in_hw=(64, 64), out_size=64, boxes=[[0.0, 0.15625, 0.0, 0.9375], [0.3125, 0.3125, 0.625,
                                                                     0.625]],
    polygon_mask=[False, False], args=dict(degrees=45.0, translate=0.1, scale=0.1, shear=0.0,
                                           perspective=0.0), seed=0)
@given(in_hw=st.tuples(st.integers(4, 96), st.integers(4, 96)), out_size=st.integers(8, 96),
       boxes=unit_boxes(),
       polygon_mask=st.lists(st.booleans(), min_size=6, max_size=6), args=perspective_args(),
       seed=st.integers(0, 2**16))
def test_random_perspective_keeps_valid_boxes_of_real_objects(in_hw, out_size, boxes,
                                                              polygon_mask, args, seed):
    """Boxes (some of zero width or height), some with a polygon (the box's outline): the
    output boxes are finite, inside the canvas, pass the box filter, keep their class (class
    = input index, so in increasing order), and none comes from a box of zero area. The
    dropped count is reported."""
    in_h, in_w = in_hw
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4) * [in_w, in_h, in_w, in_h]
    polygons = [[b[[0, 1, 2, 1, 2, 3, 0, 3]].reshape(4, 2)] if p else None
                for b, p in zip(boxes, polygon_mask)]
    targets = A.Targets(boxes, np.arange(len(boxes)), polygons)
    image, out, dropped = A.random_perspective(noise(seed, in_h, in_w), targets, out_size,
                                               np.random.default_rng(seed),
                                               A.PerspectiveRange(**args))
    assert image.shape == (out_size, out_size, 3)
    check_boxes(out.boxes, out_size, out_size)
    w, h = out.boxes[:, 2] - out.boxes[:, 0], out.boxes[:, 3] - out.boxes[:, 1]
    assert (w > 2).all() and (h > 2).all() and (np.maximum(w / h, h / w) < 20).all()
    assert (np.diff(out.classes) > 0).all() and dropped == len(boxes) - len(out)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert (area[out.classes] > 0).all(), "a box of zero area came back"


def resampled_one_by_one(points: np.ndarray, n: int) -> np.ndarray:
    """The arc-length resampling of one closed outline, with np.interp."""
    closed = np.concatenate([points, points[:1]])
    dist = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(closed, axis=0), axis=1))])
    if dist[-1] <= 0:
        return np.repeat(points[:1], n, axis=0)
    t = np.linspace(0.0, dist[-1], n)
    return np.stack([np.interp(t, dist, closed[:, 0]), np.interp(t, dist, closed[:, 1])], 1)


@PROPERTIES
@given(sizes=st.lists(st.integers(1, 12), min_size=1, max_size=6),
       repeats=st.booleans(), seed=st.integers(0, 2**16))
def test_outlines_resampled_together_as_one_by_one(sizes, repeats, seed):
    """resample_polygons pads outlines of different lengths to one array: each outline's
    points are those of resampling it alone (vertices repeated or all at one point too)."""
    rng = np.random.default_rng(seed)
    parts = [rng.integers(0, 20, (k, 2)).astype(np.float64) for k in sizes]
    if repeats:  # zero-length edges inside outlines, and outlines of no length
        parts = [np.repeat(q, 2, axis=0) for q in parts] + [np.full((3, 2), 5.0)]
    together = A.resample_polygons(parts, n=50)
    assert together.shape == (len(parts), 50, 2)
    for q, points in zip(parts, together):
        np.testing.assert_allclose(points, resampled_one_by_one(q, 50), atol=1e-9)
    # Instances of 1 or 2 parts: the box around their points inside a 12 x 10 canvas (after
    # a shift), whatever number of outlines is resampled at a time.
    polygons = [parts[i:i + 1 + i % 2] for i in range(0, len(parts), 2)]
    shift = np.array([[1.0, 0.0, -3.0], [0.0, 1.0, -4.0], [0.0, 0.0, 1.0]])
    expected = []
    for polygon in polygons:
        xy = np.concatenate([resampled_one_by_one(q, A.POLYGON_POINTS) for q in polygon]) - (3, 4)
        xy = xy[(xy >= 0).all(1) & (xy[:, 0] <= 12) & (xy[:, 1] <= 10)]
        expected.append(np.concatenate([xy.min(0), xy.max(0)]) if len(xy) else np.zeros(4))
    for chunk in (1, 256):
        boxes = A._warp_polygon_boxes(polygons, shift, False, 12, 10, chunk=chunk)
        np.testing.assert_allclose(boxes, expected, atol=1e-9)


@PROPERTIES
@given(s=st.integers(8, 96), nine=st.booleans(), args=perspective_args(),
       out_fraction=st.sampled_from([0.5, 1.0]), seed=st.integers(0, 2**16))
def test_mosaic_warps_as_its_whole_canvas(s, nine, args, out_fraction, seed):
    """random_perspective of a mosaic draws only the window of the canvas its output reads:
    the pixels are those of the whole canvas warped (every geometry, windows cut at the
    canvas edges, outputs smaller than s). Noise tiles of random aspect, so any pixel taken
    from the wrong place differs."""
    shapes = np.random.default_rng(seed).integers(1, s + 1, size=9)
    tiles = [(noise(seed + k, s, int(shapes[k])) if k % 2 else noise(seed + k, int(shapes[k]), s),
              A.Targets()) for k in range(9 if nine else 4)]
    mosaic, _ = (A.mosaic9 if nine else A.mosaic4)(tiles, s, np.random.default_rng(seed))
    out_size, ranges = max(4, int(s * out_fraction)), A.PerspectiveRange(**args)
    windowed, _, _ = A.random_perspective(mosaic, A.Targets(), out_size,
                                          np.random.default_rng(seed + 1), ranges)
    whole, _, _ = A.random_perspective(mosaic.render(), A.Targets(), out_size,
                                       np.random.default_rng(seed + 1), ranges)
    np.testing.assert_array_equal(windowed, whole)


@PROPERTIES
@given(h=st.integers(1, 40), w=st.integers(1, 40), view=st.sampled_from(["", "lr", "ud", "t"]),
       reverse=st.booleans(), seed=st.integers(0, 2**16))
def test_channels_first_copies_any_view(h, w, view, reverse, seed):
    img = noise(seed, h, w)
    img = {"": img, "lr": img[:, ::-1], "ud": img[::-1], "t": img.transpose(1, 0, 2)}[view]
    out = A.channels_first(img, reverse)
    expected = img.transpose(2, 0, 1)[::-1] if reverse else img.transpose(2, 0, 1)
    assert out.flags.c_contiguous and not np.shares_memory(out, img)
    np.testing.assert_array_equal(out, expected)


def test_channels_first_with_a_split_that_returns_new_arrays(monkeypatch):
    """An OpenCV binding that returns new planes instead of writing into the given ones."""
    img = noise(0, 5, 7)
    monkeypatch.setattr(A.cv2, "split", lambda m, planes: [m[..., i].copy() for i in range(3)])
    np.testing.assert_array_equal(A.channels_first(img, reverse=True),
                                  img.transpose(2, 0, 1)[::-1])


@PROPERTIES
@given(gains=st.tuples(*[st.floats(0.0, 0.9)] * 3), seed=st.integers(0, 2**16))
def test_hsv_gains_change_the_image_in_place_as_the_official_lookup(gains, seed):
    """augment_hsv: the image itself becomes that of the official steps (HSV, a table per
    channel, back), for the gains drawn; an RGB image with ``rgb`` gives the same pixels.
    Gains of 1 leave the image as it is (the round trip through HSV would not)."""
    bgr = noise(seed, 9, 11)
    factors = np.random.default_rng(seed).uniform(-1, 1, 3) * gains + 1
    levels = np.arange(256)
    tables = [np.mod(levels * factors[0], 180), np.clip(levels * factors[1], 0, 255),
              np.clip(levels * factors[2], 0, 255)]
    h, s, v = cv2.split(cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV))
    hsv = cv2.merge([cv2.LUT(c, t.astype(np.uint8)) for c, t in zip((h, s, v), tables)])
    expected = bgr if (factors == 1).all() else cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    image = bgr.copy()
    assert A.augment_hsv(image, gains, np.random.default_rng(seed), rgb=False) is image
    np.testing.assert_array_equal(image, expected)
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    A.augment_hsv(rgb, gains, np.random.default_rng(seed), rgb=True)
    np.testing.assert_array_equal(rgb, expected[..., ::-1])


# ----------------------------------------------------------------------------- resize and pad
@PROPERTIES
@example(  # found by this test: detectron2's ResizeShortestEdge made this image 0 px wide, and
    # detector_postprocess divided by 0; the evaluation resize (ResizeLongSide) keeps 1 px.
    hw=(65, 1), size=32, rel=(0.0, 0.0, 1.0, 1.0))
@given(hw=st.tuples(st.integers(1, 300), st.integers(1, 300)),
       size=st.sampled_from([32, 64, 160]), rel=st.tuples(*[st.floats(0.0, 1.0)] * 4))
def test_fit_centered_and_eval_resize_invert_to_the_boxes(hw, size, rel):
    """Training resize and centring (the mapper: scale r then pad): the inverse gives the box
    back within 1 px, and a rectangle drawn under the box lands under the mapped box (1 px
    margin). Evaluation (the test mapper's resize, then the model's detector_postprocess to
    the original size): the same round trip within 1 px."""
    h, w = hw
    x0, x1 = sorted([rel[0] * w, rel[2] * w])
    y0, y1 = sorted([rel[1] * h, rel[3] * h])
    box = np.array([[np.floor(x0), np.floor(y0), np.ceil(x1), np.ceil(y1)]])
    image = np.full((h, w, 3), 30, np.uint8)
    bx0, by0, bx1, by1 = box[0].astype(int)
    image[by0:by1, bx0:bx1] = 250

    canvas, r, (pad_x, pad_y) = A.fit_centered(image, size)
    assert canvas.shape == (size, size, 3)
    lb = A.Targets(box, [3]).affine(r).affine(1.0, pad_x, pad_y)  # as the mapper
    check_boxes(lb.boxes, size, size)
    back = (lb.boxes - [pad_x, pad_y, pad_x, pad_y]) / r
    np.testing.assert_allclose(back, box, atol=1.0)
    ys, xs = np.nonzero(canvas[:, :, 0] > 200)
    if len(xs):  # the drawn rectangle, where interpolation left it bright
        lx0, ly0, lx1, ly1 = lb.boxes[0]
        assert xs.min() >= lx0 - 1 and xs.max() + 1 <= lx1 + 1, (xs.min(), xs.max(), lb.boxes)
        assert ys.min() >= ly0 - 1 and ys.max() + 1 <= ly1 + 1, (ys.min(), ys.max(), lb.boxes)

    transform = _eval_resize(size).get_transform(image)
    resized = transform.apply_box(box)
    result = Instances((transform.new_h, transform.new_w),
                       pred_boxes=Boxes(torch.as_tensor(resized, dtype=torch.float32)))
    restored = detector_postprocess(result, h, w).pred_boxes.tensor.numpy()
    if (box[0, 2:] > box[0, :2]).all():
        np.testing.assert_allclose(restored, box, atol=1.0)


@functools.lru_cache(maxsize=None)
def _eval_resize(size: int):
    cfg = load_config(opts=["INPUT.YOLOV7.IMAGE_SIZE", str(size), "TEST.YOLOV7.LETTERBOX", "False"])
    (resize,) = build_yolov7_test_mapper(cfg).augmentations.augs
    return resize


# ----------------------------------------------------------------------------- the mapper
#: RGB colour of each class's objects; class OUTSIDE only labels objects outside the image.
CLASS_COLOURS = [(250, 30, 30), (30, 250, 30), (30, 30, 250), (250, 250, 30)]
OUTSIDE = len(CLASS_COLOURS)


@st.composite
def dataset(draw):
    """1 to 3 images of 8 to 80 px, grey, with up to 4 non-overlapping objects of 3 px or more
    each (one per cell of a 2 x 2 grid) filled with their class colour, annotated XYXY or
    XYWH, with or without a polygon; plus objects wholly outside the image (class OUTSIDE,
    with a polygon): boxes that clipping to the image leaves with zero area. Returns
    [(image, annotations)]."""
    images = []
    for _ in range(draw(st.integers(1, 3))):
        h, w = draw(st.integers(8, 80)), draw(st.integers(8, 80))
        image = np.full((h, w, 3), 114, np.uint8)
        annotations = []
        for cx, cy in itertools.product((0, 1), (0, 1)):
            if not draw(st.booleans()):
                continue
            cell_w, cell_h = w // 2, h // 2
            x0 = cx * cell_w + draw(st.integers(0, cell_w - 3))
            y0 = cy * cell_h + draw(st.integers(0, cell_h - 3))
            x1 = draw(st.integers(x0 + 3, (cx + 1) * cell_w))
            y1 = draw(st.integers(y0 + 3, (cy + 1) * cell_h))
            c = draw(st.integers(0, OUTSIDE - 1))
            image[y0:y1, x0:x1] = CLASS_COLOURS[c]
            annotations.append(_annotation([x0, y0, x1, y1], c, xywh=draw(st.booleans()),
                                           polygon=draw(st.booleans())))
        for _ in range(draw(st.integers(0, 2))):
            x0 = draw(st.sampled_from([-20, w + 1]))
            annotations.append(_annotation([x0, 2, x0 + 10, h - 2], OUTSIDE, xywh=False,
                                           polygon=True))
        images.append((image, annotations))
    return images


def _annotation(xyxy, category, xywh: bool, polygon: bool):
    x0, y0, x1, y1 = xyxy
    ann = {"category_id": category, "iscrowd": 0, "bbox_mode": BoxMode.XYXY_ABS,
           "bbox": [x0, y0, x1, y1]}
    if xywh:
        ann.update(bbox_mode=BoxMode.XYWH_ABS, bbox=[x0, y0, x1 - x0, y1 - y0])
    if polygon and x1 - x0 > 1 and y1 - y0 > 1:
        ann["segmentation"] = [[x0, y0, x1, y0, x1, y1, x0, y1]]
    return ann


@st.composite
def mapper_args(draw, plain: bool = False):
    """Mapper arguments; ``plain``: no rotation, shear, perspective, HSV or mixup (the
    augmentations that change the colour of an object's pixels or the shape of its box)."""
    geometry = "scale" if plain else draw(st.sampled_from(["none", "scale", "rotate", "all"]))
    # Drawn in this order (keyword arguments are evaluated left to right): the examples of
    # the derandomized search depend on it.
    return dict(
        image_size=draw(st.sampled_from([32, 64])),
        mix=MixProbs(
            mosaic=draw(st.sampled_from([0.0, 1.0])),
            mosaic9=draw(st.sampled_from([0.0, 0.5, 1.0])),
            mixup=0.0 if plain else draw(st.sampled_from([0.0, 0.5])),
            paste_in=draw(st.sampled_from([0.0, 1.0])),
        ),
        perspective=A.PerspectiveRange(
            degrees=0.0 if geometry in ("none", "scale") else draw(st.sampled_from([10.0, 180.0])),
            translate=0.0 if geometry == "none" else draw(st.floats(0.0, 0.3)),
            scale=0.0 if geometry == "none" else draw(st.floats(0.0, 0.9)),
            shear=draw(st.sampled_from([0.0, 10.0])) if geometry == "all" else 0.0,
            perspective=draw(st.sampled_from([0.0, 0.001])) if geometry == "all" else 0.0,
        ),
        hsv_gains=(0.0,) * 3 if plain else draw(st.sampled_from([(0.0,) * 3,
                                                                 (0.015, 0.7, 0.4)])),
        flips=FlipProbs(lr=0.5, ud=draw(st.sampled_from([0.0, 0.5])),
                        transpose=draw(st.sampled_from([0.0, 0.5]))),
        seed=draw(st.integers(0, 2**16)),
    )


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("property_images")


_written = itertools.count()


def map_first(image_dir, images, args):
    """Writes ``images`` as PNG files and maps the first one with a mapper drawing partners
    from all. Checks what every output must be: a (3, s, s) uint8 image, finite boxes inside
    it that pass the box filter. Returns the dataset dicts and the output's image (s, s, 3),
    boxes (N, 4) and classes (list of N)."""
    dicts = []
    for image, annotations in images:
        path = image_dir / f"{next(_written)}.png"
        cv2.imwrite(str(path), image[:, :, ::-1])
        h, w = image.shape[:2]
        dicts.append({"file_name": str(path), "image_id": len(dicts), "height": h, "width": w,
                      "annotations": annotations})
    mapper = YOLOv7MosaicMapper(is_train=True, dataset_dicts=dicts, image_format="RGB", **args)
    size = args["image_size"]
    out = mapper(dicts[0])
    assert out["image"].dtype == torch.uint8 and tuple(out["image"].shape) == (3, size, size)
    boxes = out["instances"].gt_boxes.tensor.numpy().astype(np.float64)
    check_boxes(boxes, size, size)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    box_filter = mapper.box_filter
    assert (w > box_filter.min_size).all() and (h > box_filter.min_size).all(), boxes
    assert (np.maximum(w / h, h / w) < box_filter.max_aspect).all(), boxes
    image = out["image"].permute(1, 2, 0).numpy()
    return dicts, image, boxes, out["instances"].gt_classes.numpy().tolist()


@PROPERTIES
@example(  # found by this test (before the box_candidates fix, see the perspective test):
    # the object left of this image came back as a box once rotated by 10 degrees.
    images=[(np.full((9, 8, 3), 114, np.uint8),
             [_annotation([-20, 2, -10, 7], OUTSIDE, xywh=False, polygon=True)])],
    args=dict(image_size=32, mix=MixProbs(mosaic=0.0, mosaic9=0.0, mixup=0.0, paste_in=0.0),
              perspective=A.PerspectiveRange(degrees=10.0, translate=0.0, scale=0.0),
              hsv_gains=(0.0,) * 3, flips=FlipProbs(lr=0.5, ud=0.0, transpose=0.0), seed=2))
@given(images=dataset(), args=mapper_args())
def test_mapper_outputs_valid_boxes_of_real_objects(image_dir, images, args):
    """Every augmentation: valid outputs (see map_first) with only classes of objects in the
    images, never OUTSIDE (objects outside their image); without mosaic and paste-in, a
    sub-multiset of the sample's own classes."""
    dicts, _, _, classes = map_first(image_dir, images, args)
    assert OUTSIDE not in classes
    assert set(classes) <= {a["category_id"] for _, anns in images for a in anns}
    if args["mix"].mosaic == 0 and args["mix"].paste_in == 0:
        own = Counter(a["category_id"] for a in dicts[0]["annotations"])
        assert not Counter(classes) - own, (classes, own)


@PROPERTIES
@given(images=dataset(), args=mapper_args(plain=True))
def test_mapper_boxes_keep_their_own_class(image_dir, images, args):
    """Mosaic, scale, translation, paste-in, flips, transpose: each output box of 6 px or more
    is mostly its class's colour (its edges are interpolated)."""
    _, image, boxes, classes = map_first(image_dir, images, args)
    image = image.astype(int)
    for box, c in zip(boxes, classes):
        x0, y0 = np.ceil(box[:2]).astype(int)
        x1, y1 = np.floor(box[2:]).astype(int)
        if min(x1 - x0, y1 - y0) < 6:
            continue
        close = np.abs(image[y0:y1, x0:x1] - CLASS_COLOURS[c]).max(-1) <= 40
        assert close.mean() > 0.3, (box, c, close.mean())
