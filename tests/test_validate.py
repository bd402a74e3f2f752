"""Dataset validation before training (yolov7_d2/data/validate.py) and the one image reader
(yolov7_d2/data/image_io.py): tiny images written in tmp_path, registered as detectron2
datasets; truncated, missing and changed files; the cache; box sanitizing; config checks;
files that go bad after validation, in training and in evaluation."""
import logging
import os
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from yolov7_d2.config import load_config
from yolov7_d2.data import (
    ImageLoadError,
    YOLOv7MosaicMapper,
    build_yolov7_test_loader,
    build_yolov7_test_mapper,
    build_yolov7_train_loader,
    image_io,
    register_yolo_dataset,
)
from yolov7_d2.data import validate as V
from yolov7_d2.data.image_io import read_image
from yolov7_d2.engine.trainer import YOLOv7Trainer

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from log_records import Records

NAME = "yolov7_d2_test_validate"
TINY = Path(__file__).resolve().parents[1] / "configs" / "coco" / "yolov7-tiny.yaml"
LOGGERS = ["yolov7_d2.data.validate", "yolov7_d2.data.datasets.yolo_format",
           "yolov7_d2.data.datasets.bad_labels", "yolov7_d2.data.mapper",
           "yolov7_d2.data.test_mapper"]


@pytest.fixture
def logs():
    handler = Records()
    for name in LOGGERS:
        logging.getLogger(name).addHandler(handler)
    yield handler
    for name in LOGGERS:
        logging.getLogger(name).removeHandler(handler)


@pytest.fixture
def registered():
    """register(name, dicts, classes): registers a dataset, removed after the test."""
    names = []

    def register(name, dicts, classes=("a", "b")):
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, lambda: [dict(d) for d in dicts])
        MetadataCatalog.get(name).set(thing_classes=list(classes))
        names.append(name)
        return name

    yield register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def noise(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_images(root, n=3, size=(48, 64)):
    """``n`` good PNGs, a JPEG cut in half and a missing file; their dataset dicts (one
    box each) in that order."""
    root.mkdir(parents=True, exist_ok=True)
    h, w = size
    paths = []
    for i in range(n):
        paths.append(root / f"good{i}.png")
        cv2.imwrite(str(paths[-1]), noise(h, w, i))
    data = cv2.imencode(".jpg", noise(h, w, 9))[1].tobytes()
    paths.append(root / "truncated.jpg")
    paths[-1].write_bytes(data[: len(data) // 2])  # the header (and size) survive
    paths.append(root / "missing.png")
    return [{"file_name": str(p), "image_id": i, "height": h, "width": w,
             "annotations": [{"bbox": [4, 4, 20, 20], "bbox_mode": BoxMode.XYXY_ABS,
                              "category_id": i % 2, "iscrowd": 0}]}
            for i, p in enumerate(paths)]


def make_cfg(tmp_path, *opts):
    return load_config(opts=["MODEL.YOLOV7.NUM_CLASSES", "2", "OUTPUT_DIR", str(tmp_path / "out"),
                             "INPUT.FORMAT", "RGB", "INPUT.YOLOV7.IMAGE_SIZE", "64", "SEED", "0",
                             *opts])


# ---------------------------------------------------------------------------- reading
def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """A PNG chunk: length, type, data, CRC of type and data."""
    return (len(payload).to_bytes(4, "big") + kind + payload
            + zlib.crc32(kind + payload).to_bytes(4, "big"))


@pytest.mark.parametrize("decoder", ["spng", "opencv", "pil"])
def test_read_image_matches_opencv_for_16bit_gray_rgba_and_exif(tmp_path, monkeypatch, decoder):
    """Every decoder gives cv2.imread's pixels: libspng (8-bit RGB / RGBA PNGs, the test extra
    installs it), OpenCV (the other complete files, or everything without libspng), PIL
    (``strict``, the dataset check)."""
    strict = decoder == "pil"
    spng_reads = []
    if decoder == "spng":
        load = image_io.pyspng.load
        monkeypatch.setattr(image_io.pyspng, "load",
                            lambda data: spng_reads.append(len(data)) or load(data))
    else:
        monkeypatch.setattr(image_io, "pyspng", None)
    ramp = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "gray16.png"), ramp)
    gray16 = read_image(tmp_path / "gray16.png", format="RGB", strict=strict)
    assert gray16.dtype == np.uint8 and gray16.shape == (48, 64, 3)
    np.testing.assert_array_equal(gray16, np.repeat((ramp >> 8)[..., None], 3, -1))
    assert gray16.max() > 200 and gray16.min() == 0  # not the solid white of convert("RGB")

    bgr = noise(48, 64).astype(np.uint16) * 257
    rgba = np.dstack([noise(48, 64, 1), np.full((48, 64), 7, np.uint8)])
    files = {"rgb16.png": bgr, "rgba.png": rgba, "gray8.png": noise(48, 64, 2)[..., 0],
             "gray16.png": ramp, "rgb.png": noise(48, 64, 3)}
    for name, array in files.items():
        cv2.imwrite(str(tmp_path / name), array)
    # An RGB file with a gamma, a transparent colour and significant bits: no decoder may
    # apply them (OpenCV does not).
    data = (tmp_path / "rgb.png").read_bytes()
    extra = b"".join(png_chunk(kind, payload) for kind, payload in (
        (b"gAMA", (220000).to_bytes(4, "big")), (b"tRNS", bytes(6)), (b"sBIT", bytes([5, 6, 5]))))
    (tmp_path / "rgb_chunks.png").write_bytes(data[:33] + extra + data[33:])  # after IHDR
    for name in [*files, "rgb_chunks.png"]:
        expected = cv2.imread(str(tmp_path / name))  # official: cv2.imread, BGR
        for fmt, want in (("BGR", expected), ("RGB", expected[..., ::-1])):
            got = read_image(tmp_path / name, format=fmt, strict=strict)
            np.testing.assert_array_equal(got, want, f"{name} {fmt}")

    # libspng read the three 8-bit RGB and RGBA files, twice each (BGR, RGB)
    assert len(spng_reads) == (6 if decoder == "spng" else 0)

    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: width and height swap
    Image.fromarray(noise(48, 64)).save(tmp_path / "rotated.jpg", exif=exif)
    assert read_image(tmp_path / "rotated.jpg", strict=strict).shape == (64, 48, 3)
    Image.fromarray(noise(48, 64)).save(tmp_path / "rotated.png", exif=exif)
    # the same EXIF chunk moved after the image data (where the PNG format allows it too)
    data = (tmp_path / "rotated.png").read_bytes()
    at = data.index(b"eXIf") - 4
    chunk = data[at:at + 12 + int.from_bytes(data[at:at + 4], "big")]
    data = data[:at] + data[at + len(chunk):]
    (tmp_path / "exif_last.png").write_bytes(data[:-12] + chunk + data[-12:])
    for name in ("rotated.png", "exif_last.png"):
        np.testing.assert_array_equal(read_image(tmp_path / name, strict=strict),
                                      cv2.imread(str(tmp_path / name)))
    with pytest.raises(ImageLoadError, match="missing.png"):
        read_image(tmp_path / "missing.png", strict=strict)


@pytest.mark.parametrize("name", ["cut.png", "cut.jpg"])
def test_read_image_names_a_truncated_file_and_the_reason(tmp_path, name):
    cv2.imwrite(str(tmp_path / name), noise(48, 64))
    data = (tmp_path / name).read_bytes()
    assert image_io._decode_fast(data, "BGR") is not None  # complete: the fast path
    (tmp_path / name).write_bytes(data[:len(data) // 2])
    assert image_io._decode_fast(data[:len(data) // 2], "BGR") is None
    with pytest.raises(ImageLoadError, match=rf"{name}.*truncated"):
        read_image(tmp_path / name)
    with pytest.raises(ImageLoadError, match=rf"{name}.*truncated"):
        image_io.read_image_reduced(tmp_path / name, 8)


def test_jpeg_decoded_at_a_fraction_of_its_size(tmp_path):
    """read_image_reduced: a JPEG at 1/2, 1/4, 1/8 (the largest factor allowed), its sides
    divided rounding up, EXIF orientation applied; the pixels of a whole decode shrunk
    (within JPEG's rounding); other files whole."""
    smooth = cv2.GaussianBlur(noise(203, 301), (0, 0), 6)
    cv2.imwrite(str(tmp_path / "a.jpg"), smooth, [cv2.IMWRITE_JPEG_QUALITY, 98])
    cv2.imwrite(str(tmp_path / "a.png"), smooth)
    whole = read_image(tmp_path / "a.jpg", format="RGB")
    for max_factor, factor in ((1, 1), (3, 2), (4, 4), (7, 4), (100, 8)):
        image, got = image_io.read_image_reduced(tmp_path / "a.jpg", max_factor, format="RGB")
        assert got == factor and image.shape == (-(-203 // factor), -(-301 // factor), 3)
        shrunk = cv2.resize(whole, image.shape[1::-1], interpolation=cv2.INTER_AREA)
        assert np.abs(image.astype(int) - shrunk).mean() < 2.0, factor
    image, factor = image_io.read_image_reduced(tmp_path / "a.png", 8)
    assert factor == 1
    np.testing.assert_array_equal(image, cv2.imread(str(tmp_path / "a.png")))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: width and height swap
    Image.fromarray(smooth).save(tmp_path / "rotated.jpg", exif=exif)
    image, factor = image_io.read_image_reduced(tmp_path / "rotated.jpg", 2)
    assert factor == 2 and image.shape == (151, 102, 3)


# ---------------------------------------------------------------------------- images
def test_bad_images_are_skipped_with_warnings_naming_them(tmp_path, logs, registered):
    dicts = write_images(tmp_path / "img")
    dicts[1]["width"] = 99  # the file is 64 wide: would fail detectron2's size check mid-run
    name = registered(NAME, dicts)
    out = V.dataset_dicts_from_config(make_cfg(tmp_path), [name], "DATASETS.TRAIN")
    assert [os.path.basename(d["file_name"]) for d in out] == ["good0.png", "good2.png"]
    warnings = logs.messages(logging.WARNING)
    for file, reason in (("truncated.jpg", "image file is truncated"),
                         ("missing.png", "file does not exist"),
                         ("good1.png", "the image is 64x48 (after EXIF orientation) but the "
                                       "dataset says 99x48")):
        assert any(file in m and reason in m for m in warnings), (file, warnings)
    assert any("3 bad image file(s) skipped" in m for m in warnings)
    assert (tmp_path / "out" / V.CACHE_NAME).is_file()


def test_error_mode_lists_every_bad_file(tmp_path, registered):
    name = registered(NAME, write_images(tmp_path / "img"))
    cfg = make_cfg(tmp_path, "DATASETS.YOLOV7.ON_BAD_IMAGE", "error")
    with pytest.raises(V.BadImageError) as e:
        V.dataset_dicts_from_config(cfg, [name], "DATASETS.TEST")
    message = str(e.value)
    assert "2 bad image file(s)" in message and "ON_BAD_IMAGE skip" in message
    assert "truncated.jpg: OSError: image file is truncated" in message
    assert "missing.png: file does not exist" in message
    with pytest.raises(ValueError, match="DATASETS.YOLOV7.ON_BAD_IMAGE must be one of"):
        V.dataset_dicts_from_config(make_cfg(tmp_path, "DATASETS.YOLOV7.ON_BAD_IMAGE", "warn"),
                                    [name], "DATASETS.TEST")


def test_second_run_reads_the_cache_and_a_changed_file_is_checked_again(tmp_path,
                                                                        monkeypatch):
    dicts = write_images(tmp_path / "img")
    files = [d["file_name"] for d in dicts]
    decoded = []
    check = V.image_check
    monkeypatch.setattr(V, "image_check", lambda f: decoded.append(f) or check(f))
    cache = str(tmp_path / "checks.json")
    first = V.check_images(files, cache)
    assert len(decoded) == 4  # the missing file is not decoded
    assert V.check_images(files, cache) == first and len(decoded) == 4  # no decode at all

    cv2.imwrite(files[0], noise(32, 40, 5))  # same path, new size (and file size)
    second = V.check_images(files, cache)
    assert decoded[4:] == [files[0]]
    assert second[files[0]] == V.ImageCheck(40, 32, None)
    assert V.check_images(files, None) == second and len(decoded) == 9  # no cache: all again


# ---------------------------------------------------------------------------- boxes
def test_bad_boxes_are_dropped_or_clipped_with_counts(tmp_path, logs):
    anns = [[100, 100, -40, -30, BoxMode.XYWH_ABS],  # negative size (not [60, 70, 100, 100])
            [10, 10, float("inf"), 30, BoxMode.XYWH_ABS],  # infinite width
            [5, float("nan"), 9, 9, BoxMode.XYXY_ABS],
            [20, 20, 20, 40, BoxMode.XYXY_ABS],  # zero width
            [300, 10, 320, 30, BoxMode.XYXY_ABS],  # right of the 200 x 150 image
            [190, 140, 30, 40, BoxMode.XYWH_ABS],  # partly outside: clipped
            [10.1, 10.1, 20.2, 30.3, BoxMode.XYWH_ABS]]  # fine, kept as it is
    d = {"file_name": "x.jpg", "width": 200, "height": 150,
         "annotations": [{"bbox": a[:4], "bbox_mode": a[4], "category_id": 0} for a in anns]}
    counts = V.sanitize_boxes([d], "toy")
    assert counts == {"negative width or height": 1, "non-finite coordinate": 2,
                      "zero width or height": 1, "outside the image": 1, "clipped": 1}
    assert [a["bbox"] for a in d["annotations"]] == [[190, 140, 10, 10], [10.1, 10.1, 20.2, 30.3]]
    warnings = logs.messages(logging.WARNING)
    assert any(m.startswith("x.jpg: 5 box(es) dropped") and "1 box(es) clipped" in m
               and "e.g. [100, 100, -40, -30] (XYWH_ABS): negative width or height" in m
               for m in warnings), warnings


# ---------------------------------------------------------------------------- config
def test_unregistered_empty_and_wrong_class_count_are_clear_errors(tmp_path, registered):
    registered(NAME, write_images(tmp_path / "img")[:3])  # classes a, b
    registered(NAME + "_empty", [])
    with pytest.raises(V.DatasetConfigError, match="DATASETS.TEST names dataset 'nope'"):
        V.check_datasets(make_cfg(tmp_path, "DATASETS.TEST", "('nope',)"))
    with pytest.raises(V.DatasetConfigError, match="DATASETS.TEST: Dataset .*_empty' is empty"):
        V.check_datasets(make_cfg(tmp_path, "DATASETS.TEST", f"('{NAME}_empty',)"))
    cfg = make_cfg(tmp_path, "DATASETS.TEST", f"('{NAME}',)", "MODEL.YOLOV7.NUM_CLASSES", "3")
    with pytest.raises(V.DatasetConfigError, match="has 2 classes .*NUM_CLASSES is 3: set "
                                                   "MODEL.YOLOV7.NUM_CLASSES 2"):
        V.check_datasets(cfg)
    V.check_datasets(make_cfg(tmp_path, "DATASETS.TEST", f"('{NAME}',)"))
    # The trainer checks DATASETS.TEST before anything else touches the data.
    cfg = load_config(str(TINY), ["MODEL.YOLOV7.NUM_CLASSES", "2", "MODEL.DEVICE", "cpu",
                                  "MODEL.YOLOV7.WIDTH_MULTIPLE", "0.25", "OUTPUT_DIR",
                                  str(tmp_path), "DATASETS.TRAIN", f"('{NAME}',)",
                                  "DATASETS.TEST", "('nope',)"])
    with pytest.raises(V.DatasetConfigError, match="DATASETS.TEST names dataset 'nope'"):
        YOLOv7Trainer(cfg)


def test_category_ids_beyond_the_model_are_refused_when_loaded(tmp_path, registered):
    dicts = write_images(tmp_path / "img")[:2]
    dicts[1]["annotations"][0]["category_id"] = 3
    # Four names (detectron2's own check passes), a model of three classes.
    name = registered(NAME + "_ids", dicts, classes=("a", "b", "c", "d"))
    cfg = make_cfg(tmp_path, "MODEL.YOLOV7.NUM_CLASSES", "3")
    with pytest.raises(V.DatasetConfigError, match="has category_id 3 but MODEL.YOLOV7."
                                                   "NUM_CLASSES is 3"):
        V.dataset_dicts_from_config(cfg, [name], "DATASETS.TRAIN")
    dicts[1]["annotations"][0]["category_id"] = 2
    name = registered(NAME + "_ids_ok", dicts, classes=("a", "b", "c", "d"))
    assert len(V.dataset_dicts_from_config(cfg, [name], "DATASETS.TRAIN")) == 2


def test_yolo_truncated_image_passes_the_loader_but_not_validation(tmp_path, logs):
    root = tmp_path / "ds"
    (root / "labels" / "train").mkdir(parents=True)
    for d in write_images(root / "images" / "train", n=2)[:3]:
        stem = os.path.splitext(os.path.basename(d["file_name"]))[0]
        (root / "labels" / "train" / f"{stem}.txt").write_text("0 0.5 0.5 0.2 0.2\n" * 2)
    (root / "data.yaml").write_text("train: images/train\nval: images/train\nnames: [a, b]\n")
    names = register_yolo_dataset(root / "data.yaml", name_prefix=NAME, on_bad_label="skip")
    try:
        loaded = DatasetCatalog.get(names["train"])  # header only: the truncated file passes
        assert len(loaded) == 3 and all(len(d["annotations"]) == 1 for d in loaded)
        assert any("3 duplicate label line(s) removed from 3 label file(s)" in m
                   for m in logs.messages(logging.WARNING))
        out = V.dataset_dicts_from_config(make_cfg(tmp_path), [names["train"]],
                                          "DATASETS.TRAIN")
    finally:
        for name in names.values():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    assert sorted(os.path.basename(d["file_name"]) for d in out) == ["good0.png", "good1.png"]


# ---------------------------------------------------------------------------- after validation
def test_file_deleted_after_validation_is_skipped_in_training(tmp_path, logs, registered):
    name = registered(NAME, write_images(tmp_path / "img", n=4)[:4])
    cfg = make_cfg(tmp_path, "DATASETS.TRAIN", f"('{name}',)", "SOLVER.IMS_PER_BATCH", "4",
                   "DATALOADER.NUM_WORKERS", "0", "INPUT.YOLOV7.MIXUP_PROB", "0.0",
                   "INPUT.YOLOV7.PASTE_IN_PROB", "0.0")
    loader = build_yolov7_train_loader(cfg)  # validates: all 4 files are fine
    gone = loader.mapper.dataset[1]["file_name"]
    os.remove(gone)
    batches = iter(loader)
    for _ in range(3):  # 12 samples, each a mosaic of 4 to 9 random images of the 4
        batch = next(batches)
        assert len(batch) == 4
        assert all(s["image"].shape == (3, 64, 64) and s["file_name"] != gone for s in batch)
    warnings = [m for m in logs.messages(logging.WARNING) if gone in m]
    assert len(warnings) == 1 and "No such file" in warnings[0] and "replaced" in warnings[0]
    assert loader.mapper.stats["unreadable_skipped"] >= 1

    # Without a dataset to draw from, the error names the file.
    lone = YOLOv7MosaicMapper(cfg, is_train=False, dataset_dicts=None)
    with pytest.raises(ImageLoadError, match=os.path.basename(gone)):
        lone({"file_name": gone, "image_id": 1})


def test_file_deleted_after_validation_is_skipped_in_evaluation(tmp_path, logs, registered):
    name = registered(NAME, write_images(tmp_path / "img", n=3)[:3])
    cfg = make_cfg(tmp_path)
    dicts = V.dataset_dicts_from_config(cfg, [name], "DATASETS.TEST")
    gone = dicts[1]["file_name"]
    os.remove(gone)
    loader = build_yolov7_test_loader(dicts, mapper=build_yolov7_test_mapper(cfg))
    batches = list(loader)
    assert len(loader) == 3 and [b[0]["image_id"] for b in batches] == [0, 2]
    assert all(isinstance(b[0]["image"], torch.Tensor) and "annotations" not in b[0]
               for b in batches)
    warnings = logs.messages(logging.WARNING)
    assert any(gone in m and "image skipped" in m for m in warnings)
    assert any("1 unreadable image(s) skipped" in m for m in warnings)
