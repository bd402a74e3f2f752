"""YOLOv7MosaicMapper on real photos (scikit-image, CC0): each photo gets a filled box (or
disk) of a colour of its own, annotated as one object; after augmentation the pixels under
each output box must still be that colour."""
import logging

import cv2
import numpy as np
import pytest
import torch

from yolov7_d2.config import load_config
from yolov7_d2.data import (
    ImageLoadError,
    YOLOv7MosaicMapper,
    YOLOv7TrainLoader,
    build_yolov7_test_mapper,
    build_yolov7_train_loader,
)
from yolov7_d2.data import augment as A
from yolov7_d2.data.eval_letterbox import rect_batch_shapes
from yolov7_d2.data.mapper import FlipProbs

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from photos import PHOTOS, photo

SIZE = 256
#: RGB colour of the object drawn on each photo (class id = index), far from the photos' own.
COLOURS = [(255, 0, 255), (0, 255, 0), (0, 0, 255)]
NO_AUG = ["INPUT.YOLOV7.HSV_H", "0.0", "INPUT.YOLOV7.HSV_S", "0.0", "INPUT.YOLOV7.HSV_V", "0.0",
          "INPUT.YOLOV7.MIXUP_PROB", "0.0", "INPUT.YOLOV7.PASTE_IN_PROB", "0.0"]


def make_cfg(*opts):
    return load_config(opts=["INPUT.FORMAT", "RGB", "SEED", "0", "INPUT.YOLOV7.IMAGE_SIZE",
                             str(SIZE), *opts])


def disk_polygon(cx, cy, r, n=48):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)


def write_dataset(tmp_path, shape="box", polygons=True):
    """One dict per photo with one object: a filled box (XYWH and XYXY modes alternate) or a
    filled disk with its polygon. Images are written as PNG (no JPEG colour bleeding)."""
    dicts = []
    for i, name in enumerate(PHOTOS):
        rgb = np.ascontiguousarray(photo(name)[:, :, ::-1])
        h, w = rgb.shape[:2]
        x0, y0, x1, y1 = int(w * 0.3), int(h * 0.25), int(w * 0.75), int(h * 0.7)
        ann = {"category_id": i, "iscrowd": 0}
        if shape == "box":
            rgb[y0:y1, x0:x1] = COLOURS[i]
            if i % 2:
                ann.update(bbox=[x0, y0, x1, y1], bbox_mode=BoxMode.XYXY_ABS)
            else:
                ann.update(bbox=[x0, y0, x1 - x0, y1 - y0], bbox_mode=BoxMode.XYWH_ABS)
        else:
            r = min(x1 - x0, y1 - y0) / 2
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            poly = disk_polygon(cx, cy, r)
            cv2.fillPoly(rgb, [np.round(poly).astype(np.int32)], COLOURS[i])
            ann.update(bbox=[cx - r, cy - r, cx + r, cy + r], bbox_mode=BoxMode.XYXY_ABS)
            if polygons:
                ann["segmentation"] = [poly.ravel().tolist()]
        path = tmp_path / f"{name}.png"
        cv2.imwrite(str(path), rgb[:, :, ::-1])
        dicts.append({"file_name": str(path), "image_id": i, "height": h, "width": w,
                      "annotations": [ann]})
    return dicts


def colour_fraction(image, box, colour, tol=40):
    """Share of the pixels inside ``box`` (1 px margin) within ``tol`` of ``colour``."""
    x0, y0, x1, y1 = box
    x0, y0 = int(np.ceil(x0)) + 1, int(np.ceil(y0)) + 1
    x1, y1 = int(np.floor(x1)) - 1, int(np.floor(y1)) - 1
    patch = image[y0:y1, x0:x1].astype(int)
    if patch.size == 0:
        return 0.0
    close = np.abs(patch - np.array(colour)).max(-1) <= tol
    return float(close.mean())


def check_output(out, size=SIZE, min_size=2.0, max_aspect=20.0):
    image, inst = out["image"], out["instances"]
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, size, size)
    assert out["height"] == out["width"] == size and inst.image_size == (size, size)
    assert inst.gt_classes.dtype == torch.int64
    b = inst.gt_boxes.tensor
    assert b.dtype == torch.float32 and b.shape[1] == 4
    assert (b >= 0).all() and (b <= size).all(), "a box leaves the canvas"
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    assert (w > min_size).all() and (h > min_size).all()
    assert (torch.maximum(w / h, h / w) < max_aspect).all()
    return image.permute(1, 2, 0).numpy(), b.numpy(), inst.gt_classes.numpy()


def test_boxes_keep_their_colour_through_mosaic_perspective_flips(tmp_path):
    dicts = write_dataset(tmp_path)
    # No rotation here (a rotated rectangle fills its box only partly, down to ~45% for thin
    # slivers): boxes stay exact. Rotation is checked with disks in the polygon test.
    cfg = make_cfg(*NO_AUG, "INPUT.YOLOV7.SCALE", "0.5", "INPUT.YOLOV7.MOSAIC9_PROB", "0.5",
                   "INPUT.YOLOV7.FLIP_UD", "0.5", "INPUT.YOLOV7.TRANSPOSE", "0.5")
    mapper = YOLOv7MosaicMapper(cfg, is_train=True, dataset_dicts=dicts)
    checked = 0
    for k in range(12):
        image, boxes, classes = check_output(mapper(dicts[k % 3]))
        for box, c in zip(boxes, classes):
            if min(box[2] - box[0], box[3] - box[1]) < 12:
                continue  # tiny boxes are mostly interpolated edge
            assert colour_fraction(image, box, COLOURS[c]) > 0.9, (k, box, c)
            checked += 1
    assert checked >= 15, checked


def test_default_pipeline_outputs_valid_boxes(tmp_path):
    """Everything on (mixup, paste-in with polygons, HSV): the output contract holds."""
    dicts = write_dataset(tmp_path, shape="disk")
    cfg = make_cfg("INPUT.YOLOV7.MIXUP_PROB", "0.5", "INPUT.YOLOV7.PASTE_IN_PROB", "0.5")
    mapper = YOLOv7MosaicMapper(cfg, is_train=True, dataset_dicts=dicts)
    n = 0
    for k in range(8):
        out = mapper(dicts[k % 3])
        check_output(out, min_size=cfg.INPUT.YOLOV7.BOX_MIN_SIZE,
                     max_aspect=cfg.INPUT.YOLOV7.BOX_MAX_ASPECT)
        assert out["file_name"] == dicts[k % 3]["file_name"]
        n += len(out["instances"])
    assert n > 0 and mapper.stats["samples"] == 8


def test_paste_in_pastes_objects_along_their_polygons(tmp_path):
    dicts = write_dataset(tmp_path, shape="disk")
    cfg = make_cfg(*NO_AUG[:-2], "INPUT.YOLOV7.PASTE_IN_PROB", "1.0")
    mapper = YOLOv7MosaicMapper(cfg, is_train=True, dataset_dicts=dicts)
    for k in range(4):
        image, boxes, classes = check_output(mapper(dicts[k % 3]))
        for box, c in zip(boxes, classes):
            if min(box[2] - box[0], box[3] - box[1]) >= 12:
                # a disk fills pi/4 of its box; pasted objects may hide up to 30% of a box
                assert colour_fraction(image, box, COLOURS[c]) > 0.45, (k, box, c)
    assert mapper.stats["pasted"] > 0


def test_polygons_refit_boxes_after_rotation(tmp_path):
    """With polygons the box is re-fitted around the rotated disk (tight); from the box
    corners alone it grows with the rotation. Same seed: same geometry in both runs."""
    opts = [*NO_AUG, "INPUT.YOLOV7.DEGREES", "45.0", "INPUT.YOLOV7.SCALE", "0.2",
            "INPUT.YOLOV7.MOSAIC_PROB", "0.0", "INPUT.YOLOV7.FLIP_LR", "0.5"]
    cfg = make_cfg(*opts)
    with_poly = write_dataset(tmp_path, shape="disk")
    without = [dict(d, annotations=[{k: v for k, v in a.items() if k != "segmentation"}
                                    for a in d["annotations"]]) for d in with_poly]
    m_poly = YOLOv7MosaicMapper(cfg, is_train=True, dataset_dicts=with_poly)
    m_box = YOLOv7MosaicMapper(cfg, is_train=True, dataset_dicts=without)
    ratios = []
    for k in range(6):
        # same seed, file and call number: both mappers draw the same geometry
        img_p, boxes_p, cls_p = check_output(m_poly(with_poly[k % 3]))
        img_b, boxes_b, _ = check_output(m_box(without[k % 3]))
        np.testing.assert_array_equal(img_p, img_b)
        assert len(boxes_p) == len(boxes_b) == 1
        (bp,), (bb,), (c,) = boxes_p, boxes_b, cls_p
        # the re-fitted box lies inside the corner box and hugs the disk's pixels
        assert (bp[:2] >= bb[:2] - 1e-3).all() and (bp[2:] <= bb[2:] + 1e-3).all()
        ys, xs = np.nonzero(np.abs(img_p.astype(int) - COLOURS[c]).max(-1) <= 40)
        tight = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        assert np.abs(bp - tight).max() <= 3, (bp, tight)
        assert colour_fraction(img_p, bp, COLOURS[c]) > 0.7
        ratios.append((bp[2] - bp[0]) * (bp[3] - bp[1]) / ((bb[2] - bb[0]) * (bb[3] - bb[1])))
    assert min(ratios) < 0.85, ratios  # at least one clearly rotated sample


def test_same_seed_same_output_different_seed_different(tmp_path):
    dicts = write_dataset(tmp_path, shape="disk")

    def run(seed):
        cfg = make_cfg("SEED", str(seed), "INPUT.YOLOV7.MIXUP_PROB", "0.5",
                       "INPUT.YOLOV7.PASTE_IN_PROB", "0.5")
        m = YOLOv7MosaicMapper(cfg, is_train=True, dataset_dicts=dicts)
        outs = [m(dicts[k % 3]) for k in range(3)]
        return [(o["image"], o["instances"].gt_boxes.tensor, o["instances"].gt_classes)
                for o in outs]

    a, b, c = run(1), run(1), run(2)
    for x, y in zip(a, b):
        assert all(torch.equal(u, v) for u, v in zip(x, y))
    assert any(not torch.equal(x[0], z[0]) for x, z in zip(a, c))
    # successive calls on the same image differ (the call counter is in the seed)
    m = YOLOv7MosaicMapper(make_cfg(), is_train=True, dataset_dicts=dicts)
    assert not torch.equal(m(dicts[0])["image"], m(dicts[0])["image"])


def test_transpose_swaps_axes_of_image_boxes_and_polygons(tmp_path):
    image = np.zeros((4, 6, 3), np.uint8)
    image[1, 5] = 255
    targets = A.Targets([[5, 1, 6, 2]], [0], [[np.array([[5.0, 1.0], [6.0, 1.0], [6.0, 2.0]])]])
    out, moved = A.transpose(image, targets)
    assert out.shape == (6, 4, 3) and out[5, 1, 0] == 255
    np.testing.assert_array_equal(moved.boxes, [[1, 5, 2, 6]])
    np.testing.assert_array_equal(moved.polygons[0][0], [[1, 5], [1, 6], [2, 6]])

    dicts = write_dataset(tmp_path, shape="disk")
    plain = YOLOv7MosaicMapper(make_cfg(), is_train=True, dataset_dicts=dicts)
    swapped = YOLOv7MosaicMapper(make_cfg("INPUT.YOLOV7.TRANSPOSE", "1.0"), is_train=True,
                                 dataset_dicts=dicts)
    for k in range(3):  # same seed: the same sample up to the final transpose
        a, b = plain(dicts[k]), swapped(dicts[k])
        assert torch.equal(b["image"], a["image"].transpose(1, 2))
        assert len(a["instances"]) > 0
        torch.testing.assert_close(b["instances"].gt_boxes.tensor,
                                   a["instances"].gt_boxes.tensor[:, [1, 0, 3, 2]])
        assert torch.equal(b["instances"].gt_classes, a["instances"].gt_classes)


def test_image_cache_decodes_each_file_once_and_changes_nothing(tmp_path):
    dicts = write_dataset(tmp_path, shape="disk")
    opts = ["INPUT.YOLOV7.MIXUP_PROB", "0.5", "INPUT.YOLOV7.PASTE_IN_PROB", "0.5"]
    plain = YOLOv7MosaicMapper(make_cfg(*opts, "INPUT.YOLOV7.CACHE_IMAGES_MEMORY_FRACTION", "0.0"),
                               is_train=True, dataset_dicts=dicts)
    cached = YOLOv7MosaicMapper(make_cfg(*opts, "INPUT.YOLOV7.CACHE_IMAGES", "True"),
                                is_train=True, dataset_dicts=dicts)
    reads = {id(plain): [], id(cached): []}
    for mapper in (plain, cached):
        read = mapper._read
        mapper._read = (
            lambda d, read=read, log=reads[id(mapper)]: log.append(d["file_name"]) or read(d)
        )
    for k in range(6):  # HSV and flips write into the images: the cache must not see it
        a, b = plain(dicts[k % 3]), cached(dicts[k % 3])
        assert torch.equal(a["image"], b["image"])
        assert torch.equal(a["instances"].gt_boxes.tensor, b["instances"].gt_boxes.tensor)
    assert len(reads[id(plain)]) > 2 * len(dicts)  # mosaic, mixup and paste-in partners
    assert sorted(reads[id(cached)]) == sorted(d["file_name"] for d in dicts)


@pytest.mark.parametrize("shape", ["disk", "box"])
def test_partners_are_read_only_when_their_pixels_are_used(tmp_path, shape):
    """Mosaic partners whose size the dict gives are read when the perspective's window
    reaches them, paste-in sources when one of their objects is cut out (never, for
    box-only annotations): fewer reads, the same samples as reading every image (dicts
    without a size)."""
    dicts = write_dataset(tmp_path, shape=shape)
    unsized = [{k: v for k, v in d.items() if k not in ("width", "height")} for d in dicts]
    cfg = make_cfg("INPUT.YOLOV7.MOSAIC9_PROB", "0.5", "INPUT.YOLOV7.PASTE_IN_PROB", "0.5",
                   "INPUT.YOLOV7.CACHE_IMAGES_MEMORY_FRACTION", "0.0")
    lazy = YOLOv7MosaicMapper(cfg, is_train=True, dataset_dicts=dicts)
    eager = YOLOv7MosaicMapper(cfg, is_train=True, dataset_dicts=unsized)
    reads = {id(lazy): 0, id(eager): 0}
    for mapper in (lazy, eager):
        read = mapper._read

        def counted(d, read=read, key=id(mapper)):
            reads[key] += 1
            return read(d)
        mapper._read = counted
    for k in range(12):
        a, b = lazy(dicts[k % 3], iteration=k), eager(unsized[k % 3], iteration=k)
        assert torch.equal(a["image"], b["image"]), k
        assert torch.equal(a["instances"].gt_boxes.tensor, b["instances"].gt_boxes.tensor)
        assert a["instances"].gt_classes.tolist() == b["instances"].gt_classes.tolist()
    assert lazy.stats == eager.stats
    assert reads[id(lazy)] < 0.9 * reads[id(eager)], reads
    # paste-in alone: sources are read for the objects cut out of them, none without polygons
    before = reads[id(lazy)]
    lazy._paste_in(np.zeros((SIZE, SIZE, 3), np.uint8), A.Targets(), np.random.default_rng(0))
    assert (reads[id(lazy)] > before) == (shape == "disk")


def test_large_jpegs_are_decoded_at_a_fraction_of_their_size(tmp_path):
    """INPUT.YOLOV7.REDUCED_JPEG_DECODE: photos 4.1-8.2x the training size, as JPEGs, are
    decoded at 1/4 or 1/8 of their size; the samples have the same boxes as decoding them
    whole and nearly the same pixels (the DCT scaling is a low-pass filter where the
    bilinear shrink aliases). Evaluation decodes them whole."""
    dicts = write_dataset(tmp_path)
    for d in dicts:
        big = cv2.resize(cv2.imread(d["file_name"]), None, fx=3.5, fy=3.5,
                         interpolation=cv2.INTER_CUBIC)
        d["file_name"] = d["file_name"].replace(".png", ".jpg")
        cv2.imwrite(d["file_name"], big, [cv2.IMWRITE_JPEG_QUALITY, 95])
        d["height"], d["width"] = big.shape[:2]
        ann = d["annotations"][0]
        ann["bbox"] = [v * 3.5 for v in ann["bbox"]]
    cfgs = [make_cfg(*NO_AUG, "INPUT.YOLOV7.REDUCED_JPEG_DECODE", str(on),
                     "INPUT.YOLOV7.CACHE_IMAGES_MEMORY_FRACTION", "0.0") for on in (True, False)]
    mappers = [YOLOv7MosaicMapper(cfg, is_train=True, dataset_dicts=dicts) for cfg in cfgs]
    mappers.append(YOLOv7MosaicMapper(cfgs[0], is_train=False))
    factors = {id(m): [] for m in mappers}
    for mapper in mappers:
        read = mapper._read

        def logged(d, read=read, log=factors[id(mapper)]):
            image, factor = read(d)
            log.append(factor)
            return image, factor
        mapper._read = logged
    for k in range(6):
        reduced, whole = (m(dicts[k % 3], iteration=k) for m in mappers[:2])
        assert torch.equal(reduced["instances"].gt_boxes.tensor,
                           whole["instances"].gt_boxes.tensor)
        difference = (reduced["image"].int() - whole["image"].int()).abs().float().mean()
        assert difference < 4.0, (k, difference)
        mappers[2](dicts[k % 3])
    assert [set(factors[id(m)]) for m in mappers] == [{4, 8}, {1}, {1}]


def test_images_are_cached_when_all_copies_fit_the_memory_fraction(tmp_path, monkeypatch):
    from yolov7_d2.data import mapper as M

    dicts = write_dataset(tmp_path)
    # bytes of the images decoded with their long side at SIZE, and at half of it
    needed, half = (sum(round(d["width"] * size / max(d["width"], d["height"]))
                        * round(d["height"] * size / max(d["width"], d["height"])) * 3
                        for d in dicts) for size in (SIZE, SIZE // 2))
    assert needed > 3.5 * half
    monkeypatch.setattr(M, "available_memory_bytes", lambda: 4 * needed)
    assert M.cache_fits_in_memory(dicts, SIZE, processes=1, fraction=0.25)
    assert not M.cache_fits_in_memory(dicts, SIZE, processes=2, fraction=0.25)
    assert not M.cache_fits_in_memory(dicts, SIZE, processes=1, fraction=0.0)
    assert M.cache_fits_in_memory(dicts, SIZE // 2, processes=3, fraction=0.25)
    assert not M.cache_fits_in_memory(dicts, SIZE // 2, processes=5, fraction=0.25)
    monkeypatch.setattr(M, "available_memory_bytes", lambda: None)  # unknown: no cache
    assert not M.cache_fits_in_memory(dicts, SIZE, processes=1, fraction=1.0)

    monkeypatch.setattr(M, "available_memory_bytes", lambda: 4 * needed)
    for workers, fraction, expected in ((0, "0.25", True), (2, "0.25", False), (0, "0.0", False)):
        cfg = make_cfg("DATALOADER.NUM_WORKERS", str(workers),
                       "INPUT.YOLOV7.CACHE_IMAGES_MEMORY_FRACTION", fraction)
        mapper = YOLOv7MosaicMapper(cfg, is_train=True, dataset_dicts=dicts)
        assert (mapper._cache is not None) == expected, (workers, fraction)
    assert YOLOv7MosaicMapper(cfg, is_train=False)._cache is None  # evaluation reads once


# The gain of random perspective is U(1 - SCALE, 1.1 + SCALE) (official): SCALE -0.05 pins it
# at 1.05; with no translation, rotation, shear or flip the geometry is then fixed.
GAIN = 1.05
FIXED_GEOMETRY = [*NO_AUG, "INPUT.YOLOV7.TRANSLATE", "0.0", "INPUT.YOLOV7.SCALE", "-0.05",
                  "INPUT.YOLOV7.FLIP_LR", "0.0"]


def zoom(xy):
    """Where a point of the centred image lands after the fixed perspective (zoom about the
    centre)."""
    return (np.asarray(xy, dtype=np.float64) - SIZE / 2) * GAIN + SIZE / 2


def centered(d, size=SIZE):
    rgb = np.ascontiguousarray(cv2.imread(d["file_name"])[:, :, ::-1])
    canvas, r, (px, py) = A.fit_centered(rgb, size)
    return canvas, r, px, py


def expected_without_mosaic(d):
    """The output of the path without mosaic (image centred on the canvas) under
    FIXED_GEOMETRY."""
    canvas = centered(d)[0]
    image, _, _ = A.random_perspective(canvas, A.Targets(), SIZE, np.random.default_rng(0),
                                       A.PerspectiveRange(translate=0.0, scale=-0.05))
    return image


def test_close_mosaic_switches_to_the_centred_image(tmp_path):
    dicts = write_dataset(tmp_path)
    cfg = make_cfg(*FIXED_GEOMETRY, "INPUT.YOLOV7.CLOSE_MOSAIC_ITERS", "10",
                   "SOLVER.MAX_ITER", "100")
    mapper = YOLOv7MosaicMapper(cfg, is_train=True, dataset_dicts=dicts)
    coffee = dicts[1]  # 400 x 600: centred with grey bars above and below
    expected = expected_without_mosaic(coffee)
    _, r, px, py = centered(coffee)
    assert mapper.mosaic_enabled(89) and mapper.mosaic_enabled(None)
    mosaic = mapper(coffee, iteration=89)["image"].permute(1, 2, 0).numpy()
    assert not np.array_equal(mosaic, expected)
    assert not mapper.mosaic_enabled(90)
    image, boxes, _ = check_output(mapper(coffee, iteration=90))
    np.testing.assert_array_equal(image, expected)
    assert (image[:int(zoom(py)) - 1] == 114).all()  # the grey bar above the image
    x0, y0, x1, y1 = coffee["annotations"][0]["bbox"]
    np.testing.assert_allclose(boxes[0], zoom([x0 * r + px, y0 * r + py, x1 * r + px,
                                               y1 * r + py]), atol=1e-3)


def test_hsv_step_is_told_the_channel_order_of_the_image(tmp_path, monkeypatch):
    """The pipeline decodes to BGR and orders the channels at the end: the HSV step must
    be told which order its image is in, or hue would turn the wrong way round."""
    dicts = write_dataset(tmp_path)
    seen = []

    def spy(img, gains, rng, rgb=True):
        seen.append((img.copy(), rgb))
        return hsv(img, gains, rng, rgb=rgb)

    hsv = A.augment_hsv
    monkeypatch.setattr(A, "augment_hsv", spy)
    cfg = make_cfg(*FIXED_GEOMETRY, "INPUT.YOLOV7.MOSAIC_PROB", "0.0")
    mapper = YOLOv7MosaicMapper(cfg, is_train=True, dataset_dicts=dicts)
    for k, d in enumerate(dicts):
        _, boxes, _ = check_output(mapper(d))
        image, rgb = seen[-1]
        x, y = ((boxes[0, :2] + boxes[0, 2:]) / 2).astype(int)
        pixel = image[y, x] if rgb else image[y, x, ::-1]
        np.testing.assert_array_equal(pixel, COLOURS[k])


def test_mosaic_crop_is_a_window_at_the_same_scale(tmp_path):
    """INPUT.YOLOV7.MOSAIC_CROP_SIZE: a mosaic sample is the centre window of the one the full
    size would give (same draws; no translation here), objects at the same scale; plain
    (close-mosaic) samples stay full size."""
    dicts = write_dataset(tmp_path)
    crop = SIZE - 64
    opts = [*NO_AUG, "INPUT.YOLOV7.TRANSLATE", "0.0", "INPUT.YOLOV7.SCALE", "0.3",
            "INPUT.YOLOV7.CLOSE_MOSAIC_ITERS", "10", "SOLVER.MAX_ITER", "100"]
    full = YOLOv7MosaicMapper(make_cfg(*opts), is_train=True, dataset_dicts=dicts)
    cropped = YOLOv7MosaicMapper(make_cfg(*opts, "INPUT.YOLOV7.MOSAIC_CROP_SIZE", str(crop)),
                                 is_train=True, dataset_dicts=dicts)
    checked = 0
    for k in range(8):
        big_image, big_boxes, big_classes = check_output(full(dicts[k % 3], iteration=k))
        image, boxes, classes = check_output(cropped(dicts[k % 3], iteration=k), size=crop)
        window = big_image[32:32 + crop, 32:32 + crop].astype(int)
        assert (np.abs(image.astype(int) - window) <= 1).mean() > 0.999, k
        # Each box is a full-size box moved into the window and clipped to it.
        expected = np.clip(big_boxes - 32, 0, crop)
        for box, c in zip(boxes, classes):
            match = np.abs(expected - box).max(1) < 1e-3
            assert (match & (big_classes == c)).any(), (k, box)
            checked += 1
    assert checked >= 8, checked
    image, _, _ = check_output(cropped(dicts[1], iteration=95))  # closed: full size, centred
    np.testing.assert_array_equal(image, check_output(full(dicts[1], iteration=95))[0])
    # A window as large as the canvas or larger is no crop.
    larger = YOLOv7MosaicMapper(make_cfg(*opts, "INPUT.YOLOV7.MOSAIC_CROP_SIZE", str(2 * SIZE)),
                                is_train=True, dataset_dicts=dicts)
    np.testing.assert_array_equal(larger(dicts[0], iteration=3)["image"],
                                  full(dicts[0], iteration=3)["image"])


def test_close_mosaic_in_dataloader_workers(tmp_path):
    """The train loader gives each sample its iteration, in worker processes too: mosaic
    closes exactly at iteration max_iter - CLOSE_MOSAIC_ITERS."""
    dicts = write_dataset(tmp_path)[1:2]
    cfg = make_cfg(*FIXED_GEOMETRY, "INPUT.YOLOV7.CLOSE_MOSAIC_ITERS", "10",
                   "SOLVER.MAX_ITER", "100")
    mapper = YOLOv7MosaicMapper(cfg, is_train=True, dataset_dicts=dicts)
    expected = torch.as_tensor(expected_without_mosaic(dicts[0]).transpose(2, 0, 1).copy())
    loader = YOLOv7TrainLoader(mapper, batch_size=1, num_workers=1)
    loader.start_iter = 88
    it = iter(loader)
    images = [next(it)[0]["image"] for _ in range(4)]  # iterations 88 to 91
    assert [torch.equal(x, expected) for x in images] == [False, False, True, True]
    del it


def test_box_clipping_degenerate_boxes_and_crowd(tmp_path, caplog):
    dicts = write_dataset(tmp_path)
    d = dicts[0]
    h, w = d["height"], d["width"]
    d["annotations"] += [
        {"bbox": [-50, -50, 40, 40], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0},
        {"bbox": [w - 30, h - 30, w + 60, h + 60], "bbox_mode": BoxMode.XYXY_ABS,
         "category_id": 0},
        {"bbox": [100, 100, 100, 160], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0},
        {"bbox": [10, 10, 50, 50], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0,
         "iscrowd": 1},
    ]
    cfg = make_cfg(*FIXED_GEOMETRY, "INPUT.YOLOV7.MOSAIC_PROB", "0.0")
    mapper = YOLOv7MosaicMapper(cfg, is_train=True, dataset_dicts=dicts)
    with caplog.at_level(logging.DEBUG, logger="yolov7_d2.data.mapper"):
        out = mapper(d)
    image, boxes, _ = check_output(out)
    _, r, px, py = centered(d)
    assert len(boxes) == 3  # the coloured box, two clipped ones; zero-width and crowd gone
    # clipped to the image, then (zoomed past the canvas edge) clipped to the canvas
    np.testing.assert_allclose(boxes[1], zoom([px, py, 40 * r + px, 40 * r + py]).clip(0, SIZE),
                               atol=1e-3)
    np.testing.assert_allclose(boxes[2], zoom([(w - 30) * r + px, (h - 30) * r + py,
                                               w * r + px, h * r + py]).clip(0, SIZE), atol=1e-3)
    assert mapper.stats["dropped_by_filter"] == 1 and mapper.stats["crowd_skipped"] == 1
    assert any("'dropped_by_filter': 1" in rec.getMessage() for rec in caplog.records)


def test_unreadable_image_error_names_the_file(tmp_path):
    dicts = write_dataset(tmp_path)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    cfg = make_cfg()
    # is_train=False: nothing to draw instead (training replaces the sample, see
    # tests/test_validate.py).
    mapper = YOLOv7MosaicMapper(cfg, is_train=False, dataset_dicts=None)
    for path in (bad, tmp_path / "missing.png"):
        d = dict(dicts[0], file_name=str(path))
        with pytest.raises(ImageLoadError, match=path.name):
            mapper(d)


def test_config_errors_and_eval_paths(tmp_path):
    dicts = write_dataset(tmp_path)
    with pytest.raises(ValueError, match="dataset_dicts"):
        YOLOv7MosaicMapper(make_cfg(), is_train=True, dataset_dicts=[])
    with pytest.raises(ValueError, match="image_format"):
        YOLOv7MosaicMapper(dataset_dicts=dicts, image_format="YUV-BT.601")
    with pytest.raises(ValueError, match="max_iter"):
        YOLOv7MosaicMapper(dataset_dicts=dicts, close_mosaic_iters=5)
    with pytest.raises(ValueError, match=r"MixProbs.mixup is a probability.*got 1.5"):
        YOLOv7MosaicMapper(make_cfg("INPUT.YOLOV7.MIXUP_PROB", "1.5"), dataset_dicts=dicts)
    with pytest.raises(ValueError, match=r"FlipProbs.ud is a probability.*got -0.5"):
        FlipProbs(ud=-0.5)
    # is_train=False: deterministic resize and centring, no partners needed
    m = YOLOv7MosaicMapper(make_cfg(), is_train=False, dataset_dicts=None)
    out = m(dicts[1])
    image, boxes, _ = check_output(out)
    np.testing.assert_array_equal(image[0:10], 114)
    # the evaluation mapper without the letterbox: long side = IMAGE_SIZE, original size kept
    # for rescaling
    test_mapper = build_yolov7_test_mapper(make_cfg("TEST.YOLOV7.LETTERBOX", "False"))
    out = test_mapper(dict(dicts[1]))
    assert tuple(out["image"].shape) == (3, round(400 * SIZE / 600), SIZE)
    assert (out["height"], out["width"]) == (400, 600)
    out = test_mapper(dict(dicts[2]))  # chelsea 300 x 451
    assert max(out["image"].shape[1:]) == SIZE
    # the default, official letterbox: the long side resized, centred in its batch's shape
    letterboxed = build_yolov7_test_mapper(make_cfg())
    out = letterboxed(dict(dicts[1]))
    left, top, h, w = out["letterbox"]
    # official load_image floors the resized side (170.7 -> 170)
    assert (h, w) == (int(400 * SIZE / 600), SIZE) and (out["height"], out["width"]) == (400, 600)
    assert tuple(out["image"].shape[1:]) == rect_batch_shapes([(400, 600)], SIZE, 32)[0]
    assert left == (out["image"].shape[2] - w) // 2 and top == (out["image"].shape[1] - h) // 2


def test_build_train_loader_shares_the_dicts(tmp_path):
    dicts = write_dataset(tmp_path)
    name = "yolov7_d2_test_mapper_photos"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["a", "b", "c"])
    cfg = make_cfg("DATASETS.TRAIN", f"('{name}',)", "SOLVER.IMS_PER_BATCH", "2",
                   "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(tmp_path))
    try:
        loader = build_yolov7_train_loader(cfg)
        batch = next(iter(loader))
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert len(batch) == 2 and all(check_output(o) is not None for o in batch)
    assert isinstance(loader.mapper, YOLOv7MosaicMapper)
    assert len(loader.mapper.dataset) == 3
