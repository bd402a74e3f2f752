"""Inference on odd inputs: YOLOv7Predictor on empty, 1 x 1, 10000 x 10, grayscale, BGRA and
16-bit arrays (a result or a clear error), and tools/export_onnx.py / tools/reparameterize.py
on checkpoints they cannot use (a clear error, no output file). yolov7-tiny at width 0.25,
128-px inference, random weights. demo.py on a folder of such files: tests/test_demo.py."""
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yolov7_d2.config import load_config
from yolov7_d2.predictor import YOLOv7Predictor

from detectron2.modeling import build_model

from log_records import records_of
from photos import photo
from scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "coco" / "yolov7-tiny.yaml")
NARROW = ["MODEL.YOLOV7.WIDTH_MULTIPLE", "0.25"]
# On random weights a threshold of 1e-4 keeps some boxes (see tests/test_demo.py); float32
# on any CPU, so that a channel mix-up changes the detections (in bfloat16 the random
# weights' near-constant outputs may round to the same).
FAST = NARROW + ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST",
                 "128", "MODEL.YOLOV7.CONF_THRESH_TEST", "0.0001", "TEST.YOLOV7.AMP", "False"]


@pytest.fixture(scope="module")
def predictor():
    # Module-scoped fixtures are built before the per-test seeding: seed the weights here.
    torch.manual_seed(0)
    return YOLOv7Predictor(load_config(TINY, FAST))


def detections(output):
    instances = output["instances"]
    return instances.pred_boxes.tensor, instances.scores, instances.pred_classes


def assert_same(a, b):
    for x, y in zip(detections(a), detections(b)):
        assert torch.equal(x, y)


@pytest.mark.parametrize("shape", [(0, 0, 3), (0, 12, 3), (12, 0), (0,)])
def test_empty_image_is_a_clear_error(predictor, shape):
    with pytest.raises(ValueError, match=re.escape(f"the image is empty (shape {shape})")):
        predictor(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("height, width", [(1, 1), (10000, 10), (10, 10000)])
def test_extreme_sizes_give_detections_inside_the_image(predictor, height, width):
    image = cv2.resize(photo("coffee"), (width, height), interpolation=cv2.INTER_AREA)
    instances = predictor(image)["instances"]
    assert instances.image_size == (height, width)
    boxes = instances.pred_boxes.tensor
    assert len(boxes) > 0 and torch.isfinite(boxes).all()
    assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= width).all()
    assert (boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= height).all()


def test_grayscale_bgra_and_16_bit_arrays_are_converted(predictor):
    bgr = photo("chelsea")
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    as_gray = predictor(np.repeat(gray[:, :, None], 3, axis=2))
    assert len(as_gray["instances"]) > 0
    assert_same(predictor(gray), as_gray)
    assert_same(predictor(gray[:, :, None]), as_gray)
    # BGRA (cv2.IMREAD_UNCHANGED): the alpha channel is dropped, B, G, R stay in their order
    # (the config's INPUT.FORMAT is RGB: a channel mix-up would change the detections).
    alpha = np.random.default_rng(0).integers(0, 256, bgr.shape[:2], dtype=np.uint8)
    as_bgr = predictor(bgr)
    assert_same(predictor(np.dstack([bgr, alpha])), as_bgr)
    swapped = detections(predictor(bgr[:, :, ::-1].copy()))
    assert not all(torch.equal(x, y) for x, y in zip(swapped, detections(as_bgr)))
    wide = bgr.astype(np.uint16) * 256 + 100  # 16 bits: the high byte is the 8-bit image
    assert_same(predictor(wide), as_bgr)


def test_model_input_is_detectron2s_resize_in_the_config_format(predictor):
    """The predictor's input: detectron2's ResizeShortestEdge (DefaultPredictor's), uint8,
    channels first, in INPUT.FORMAT (RGB); an image already at its size is not resized."""
    import detectron2.data.transforms as T

    resize = T.ResizeShortestEdge([128, 128], 128)
    for image in (photo("coffee"), cv2.resize(photo("coffee"), (128, 85))):
        expected = resize.get_transform(image).apply_image(image[:, :, ::-1])
        got = predictor.preprocess(image)
        assert got["image"].dtype == torch.uint8
        assert (got["height"], got["width"]) == image.shape[:2]
        np.testing.assert_array_equal(got["image"].permute(1, 2, 0).numpy(), expected)
    assert predictor.resize(image) is image  # the second: at its size, no copy


def test_other_arrays_are_clear_errors(predictor):
    image = photo("chelsea")
    with pytest.raises(ValueError, match="expected uint8 .* got float32"):
        predictor(image.astype(np.float32))
    with pytest.raises(ValueError, match=r"got shape \(300, 451, 2\)"):
        predictor(image[:, :, :2])
    with pytest.raises(ValueError, match=r"got shape \(1, 300, 451, 3\)"):
        predictor(image[None])
    with pytest.raises(TypeError, match="numpy array, got list"):
        predictor(image.tolist())


# ---------------------------------------------------------------------------- tools
@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory):
    """{kind: path} of checkpoints the yolov7-tiny tools cannot use: truncated, not a
    checkpoint at all, another scale (yolov7) and another width."""
    folder = tmp_path_factory.mktemp("checkpoints")
    tiny = build_model(load_config(TINY, NARROW + ["MODEL.DEVICE", "cpu"]))
    good = folder / "tiny.pth"
    torch.save({"model": tiny.state_dict()}, good)
    paths = {"truncated": folder / "truncated.pth", "photo": folder / "photo.pth",
             "scale": folder / "yolov7.pth", "width": folder / "tiny-full-width.pth"}
    paths["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    paths["photo"].write_bytes(cv2.imencode(".jpg", photo("chelsea"))[1].tobytes())
    for key, opts in (("scale", NARROW + ["MODEL.YOLOV7.ARCH", "yolov7"]), ("width", [])):
        model = build_model(load_config(TINY, opts + ["MODEL.DEVICE", "cpu"]))
        torch.save({"model": model.state_dict()}, paths[key])
    return {k: str(v) for k, v in paths.items()}


REASONS = {"truncated": "It may be truncated", "photo": "neither a detectron2 nor an official",
           "scale": "is a yolov7 checkpoint, the config builds yolov7-tiny",
           "width": "is a yolov7-tiny checkpoint of other channel widths"}


@pytest.mark.parametrize("tool", ["tools/export_onnx.py", "tools/reparameterize.py"])
def test_tools_refuse_wrong_checkpoints_and_write_nothing(tool, bad_checkpoints, tmp_path,
                                                          caplog):
    main = load_script(tool).main
    output = tmp_path / ("model.onnx" if "onnx" in tool else "deploy.pth")
    for kind, checkpoint in bad_checkpoints.items():
        caplog.clear()
        if "onnx" in tool:
            argv = ["--config-file", TINY, "--weights", checkpoint, "--output", str(output)]
        else:
            argv = ["--config-file", TINY, checkpoint, str(output)]
        assert main(argv + ["--opts", *NARROW]) == 1, kind
        assert checkpoint in caplog.text and REASONS[kind] in caplog.text, (kind, caplog.text)
        assert os.listdir(tmp_path) == [], kind  # no output, no temporary file
    caplog.clear()
    assert main(["--config-file", TINY, *argv[2:], "--opts", "MODEL.YOLOV7.WIDTH_MULTIPLY",
                 "0.25"]) == 1
    assert "Did you mean MODEL.YOLOV7.WIDTH_MULTIPLE?" in caplog.text


def test_compiled_predictor_gives_the_eager_detections(predictor):
    """TEST.YOLOV7.COMPILE (torch.compile, weights frozen into the graph): the same
    detections as the eager model of the same weights."""
    with records_of("yolov7_d2.predictor") as log:
        compiled = YOLOv7Predictor(load_config(TINY, FAST + ["TEST.YOLOV7.COMPILE", "True"]))
    assert any("compiles on its first input of each size" in m for m in log.messages())
    compiled.model.load_state_dict(predictor.model.state_dict())
    assert all(hasattr(m, "_compiled_call_impl") and m._compiled_call_impl is not None
               for m in (compiled.model.backbone, compiled.model.head))
    image = photo("coffee")
    expected, got = predictor(image), compiled(image)
    assert len(expected["instances"]) > 0
    assert_same(expected, got)


def test_compile_without_a_cxx_compiler_names_the_fix(monkeypatch):
    from torch._inductor import cpp_builder, exc

    def no_compiler():
        raise exc.InvalidCxxCompiler()

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    with pytest.raises(RuntimeError, match=r"TEST\.YOLOV7\.COMPILE needs a C\+\+ compiler.*"
                                           r"TEST\.YOLOV7\.COMPILE False"):
        YOLOv7Predictor(load_config(TINY, FAST + ["TEST.YOLOV7.COMPILE", "True"]))
