"""ONNX export (yolov7_d2.export.onnx, tools/export_onnx.py) and demo.py --onnx
(yolov7_d2.export.onnx_predictor), run with onnxruntime on real photos fitted into 320 x 320
(top left, grey below and right): raw head maps equal PyTorch's, the end-to-end graph (ONNX
NonMaxSuppression) gives PyTorch's own postprocessing results, the batch dimension is
dynamic. Mostly yolov7-tiny at width 0.25, one full-width check."""
import copy
import logging
import os
import re

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from yolov7_d2.config import load_config  # noqa: E402
from yolov7_d2.export.onnx import (  # noqa: E402
    END2END_OUTPUTS,
    ONNXExportError,
    YOLOv7End2EndExport,
    export_onnx,
    read_metadata,
)
from yolov7_d2.export.onnx_predictor import (  # noqa: E402
    ONNXPredictor,
    create_session,
    fit_top_left,
)
from yolov7_d2.modeling import reparameterize  # noqa: E402
from yolov7_d2.modeling.box_coder import decode_predictions  # noqa: E402
from yolov7_d2.modeling.meta_arch import postprocess_single_image  # noqa: E402

from detectron2.modeling import build_model  # noqa: E402

from photos import PHOTOS, photo, write_photos  # noqa: E402
from scripts import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "coco", "yolov7-tiny.yaml")
SIZE = 320
NARROW = ["MODEL.YOLOV7.WIDTH_MULTIPLE", "0.25"]
# The demo's / official detect.py's postprocessing: the export defaults.
DEFAULTS = dict(conf_thresh=0.25, iou_thresh=0.45, max_det=100, multi_label=False)



def fitted_batch(names=PHOTOS, size=SIZE):
    """(N, 3, size, size) float32 RGB 0..255 canvases of the photos."""
    return np.stack([fit_top_left(np.ascontiguousarray(photo(n)[:, :, ::-1]), size, size)[0]
                     for n in names])


def detecting_model(*opts, gamma=(0.2, 0.4), scale=3.0, objectness=3.8, size=2.0):
    """yolov7-tiny with random weights that detect like a trained model: BatchNorm statistics
    measured on the photos (with random BN statistics a random network's output hardly
    depends on its input) and random BN scales ``gamma`` (small: with gains near 1 this random
    network amplifies float32 rounding to ~1.5e-4 on its outputs, PyTorch's own float32 vs
    float64 included), then prediction convs scaled and biased so that tens to 300 boxes per
    photo score above 0.25, spread out (no ties), large enough to overlap (so that NMS
    suppresses), with class 0 favoured (same-class overlaps)."""
    cfg = load_config(CONFIG, ["MODEL.DEVICE", "cpu", *opts])
    model = build_model(cfg)
    batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in batch_norms:
            bn.weight.uniform_(*gamma)
            bn.bias.uniform_(-0.2, 0.2)
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average: the statistics of the photos
        model.train()
        model.forward_raw(torch.from_numpy(fitted_batch()) / 255.0)
        model.eval()
        for bn in batch_norms:
            bn.momentum = 0.03
        anchors = model.anchors.shape[1]
        for conv in model.head.predictors:
            conv.weight *= scale
            bias = conv.bias.view(anchors, -1)
            bias[:, 2:4] += size  # larger boxes
            bias[:, 4] += objectness
            bias[:, 5:] += 4.0 + torch.randn_like(bias[:, 5:])
            bias[:, 5] += 3.0
    return cfg, model


def pytorch_detections(model, images, conf_thresh, iou_thresh, max_det, multi_label, maps=None):
    """PyTorch's own postprocessing of ``model`` on (N, 3, H, W) 0..255 images (or, given, on
    the raw head ``maps`` of those images): per image (boxes, scores, classes) numpy arrays in
    input pixels."""
    with torch.no_grad():
        if maps is None:
            maps = model.forward_raw(torch.as_tensor(images) / 255.0)["lead"]
        maps = [torch.as_tensor(m) for m in maps]
        decoded = decode_predictions(maps, model.anchors, model.strides)
        results = [postprocess_single_image(
            d, tuple(images.shape[2:]), num_classes=model.num_classes, conf_thresh=conf_thresh,
            nms_thresh=iou_thresh, max_detections=max_det, multi_label=multi_label)
            for d in decoded]
    return [(r.pred_boxes.tensor.numpy(), r.scores.numpy(), r.pred_classes.numpy())
            for r in results]


def assert_same_detections(onnx_outputs, expected, max_det, box_tol=1e-3, score_tol=1e-5):
    """End-to-end outputs (boxes, scores, classes, num_detections) equal PyTorch's per-image
    detections up to ties: the same count, and each PyTorch detection matches its own ONNX
    detection (same class, box within ``box_tol`` pixels, score within ``score_tol``; scores
    closer than float noise may come in another order). Returns the largest box and score
    differences."""
    boxes, scores, classes, counts = onnx_outputs
    assert boxes.shape == (len(expected), max_det, 4) and boxes.dtype == np.float32
    assert scores.shape == classes.shape == (len(expected), max_det)
    assert classes.dtype == np.int64 and counts.dtype == np.int64
    worst_box = worst_score = 0.0
    for i, (e_boxes, e_scores, e_classes) in enumerate(expected):
        n = int(counts[i])
        assert n == len(e_scores), (i, n, len(e_scores))
        assert (scores[i, n:] == 0).all() and (classes[i, n:] == -1).all()  # padding
        assert (boxes[i, n:] == 0).all()
        assert (np.diff(scores[i, :n]) <= 0).all()  # highest first
        unmatched = set(range(n))
        for j in range(n):  # PyTorch's detection j, in score order
            candidates = [k for k in unmatched if classes[i, k] == e_classes[j]
                          and np.abs(boxes[i, k] - e_boxes[j]).max() <= box_tol
                          and abs(scores[i, k] - e_scores[j]) <= score_tol]
            assert candidates, (i, j, e_classes[j], e_boxes[j], e_scores[j])
            k = min(candidates, key=lambda k: abs(scores[i, k] - e_scores[j]))
            unmatched.remove(k)
            worst_box = max(worst_box, float(np.abs(boxes[i, k] - e_boxes[j]).max()))
            worst_score = max(worst_score, float(abs(scores[i, k] - e_scores[j])))
    return worst_box, worst_score


def run(session, images):
    return session.run(None, {"images": np.ascontiguousarray(images, dtype=np.float32)})


@pytest.fixture(scope="module")
def model():
    """The training-form model (not fused) and its config."""
    torch.manual_seed(0)
    return detecting_model(*NARROW)


@pytest.fixture(scope="module")
def deploy(model):
    return reparameterize(copy.deepcopy(model[1]))


@pytest.fixture(scope="module")
def images():
    return fitted_batch()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, model):
    """Raw (static batch 1) and end-to-end (dynamic batch, demo defaults) exports."""
    directory = tmp_path_factory.mktemp("onnx")
    paths = {"raw": str(directory / "raw.onnx"), "e2e": str(directory / "e2e.onnx")}
    export_onnx(model[1], paths["raw"], image_size=SIZE)
    export_onnx(model[1], paths["e2e"], image_size=SIZE, end2end=True, dynamic_batch=True,
                **DEFAULTS)
    return paths


def test_raw_heads_match_pytorch(exported, model, deploy, images, capsys):
    session = create_session(exported["raw"], 1)
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["head_p3", "head_p4", "head_p5"]
    worst = {"training": 0.0, "deploy": 0.0}
    for i in range(len(images)):
        outputs = run(session, images[i:i + 1])
        assert [o.shape for o in outputs] == [(1, 3, SIZE // s, SIZE // s, 85) for s in (8, 16, 32)]
        x = torch.from_numpy(images[i:i + 1]) / 255.0
        with torch.no_grad():
            for form, net in (("training", model[1]), ("deploy", deploy)):
                expected = net.forward_raw(x)["lead"]
                diff = max(float(np.abs(o - e.numpy()).max()) for o, e in zip(outputs, expected))
                worst[form] = max(worst[form], diff)
    with capsys.disabled():
        print(f"\n  raw heads, onnxruntime vs PyTorch: max |diff| {worst}")
    assert worst["deploy"] < 1e-4 and worst["training"] < 1e-4
    # the model itself was not changed by the export
    assert model[1].head.implicit_a is not None


def test_metadata(exported, model):
    raw, e2e = read_metadata(exported["raw"]), read_metadata(create_session(exported["e2e"], 1))
    assert raw["format"] == "raw" and e2e["format"] == "end2end"
    assert raw["input"] == {"name": "images", "channels": "RGB", "range": "0-255",
                            "pad_value": 114.0, "height": SIZE, "width": SIZE, "batch": 1}
    assert e2e["input"]["batch"] == "dynamic" and e2e["outputs"] == list(END2END_OUTPUTS)
    assert raw["strides"] == [8, 16, 32] and raw["num_classes"] == 80
    assert torch.tensor(raw["anchors"]).equal(model[1].anchors)
    assert (e2e["conf_thresh"], e2e["iou_thresh"], e2e["max_det"], e2e["multi_label"]) == \
        (0.25, 0.45, 100, False)
    assert raw["opset"] == e2e["opset"] == 17


def onnx_raw_maps(path, images):
    """The raw export's head maps for a batch, run one image at a time (static batch 1)."""
    session = create_session(path, 1)
    outputs = [run(session, images[i:i + 1]) for i in range(len(images))]
    return [np.concatenate(level) for level in zip(*outputs)]


# The network's own float32 noise: raw logits of this random model move by up to ~5e-5 between
# any two float32 implementations (PyTorch float32 is itself that far from float64), which
# moves a box side by up to ~2e-3 px through (2 sigmoid)^2 x anchor. Compared with PyTorch's
# postprocessing of onnxruntime's own raw maps, the graph's decode + NMS agrees to 1e-3 / 1e-5.
NETWORK_BOX_TOL, NETWORK_SCORE_TOL = 1e-2, 1e-4


def test_end2end_matches_pytorch_postprocess(exported, deploy, images, capsys):
    session = create_session(exported["e2e"], 1)
    assert [o.name for o in session.get_outputs()] == list(END2END_OUTPUTS)
    outputs = run(session, images)
    # 1. the graph's postprocessing = PyTorch's, on the same raw maps
    same_maps = pytorch_detections(deploy, images, maps=onnx_raw_maps(exported["raw"], images),
                                   **DEFAULTS)
    graph_box, graph_score = assert_same_detections(outputs, same_maps, 100)
    # 2. end to end: onnxruntime = the PyTorch model + its postprocessing
    expected = pytorch_detections(deploy, images, **DEFAULTS)
    counts = [len(s) for _, s, _ in expected]
    # the test is meaningful: detections everywhere, the cap reached and not reached
    assert min(counts) >= 10 and max(counts) == 100 and min(counts) < 100, counts
    net_box, net_score = assert_same_detections(outputs, expected, 100, NETWORK_BOX_TOL,
                                                NETWORK_SCORE_TOL)
    # 3. the eager PyTorch run of the exported module (torchvision NMS) agrees as well
    with torch.no_grad():
        eager = YOLOv7End2EndExport(deploy, **DEFAULTS).eval()(torch.from_numpy(images))
    assert_same_detections([t.numpy() for t in eager], expected, 100)
    with capsys.disabled():
        print(f"\n  end-to-end, onnxruntime: counts {counts}; vs PyTorch postprocess of the same "
              f"raw maps: max |box diff| {graph_box:.2e} px, |score diff| {graph_score:.2e}; vs "
              f"the PyTorch model: {net_box:.2e} px, {net_score:.2e}")


def test_end2end_multi_label_other_thresholds(tmp_path, model, deploy, images, exported):
    settings = dict(conf_thresh=0.3, iou_thresh=0.6, max_det=300, multi_label=True)
    path = str(tmp_path / "multi.onnx")
    export_onnx(model[1], path, image_size=SIZE, end2end=True, batch_size=3, **settings)
    outputs = run(create_session(path, 1), images)
    expected = pytorch_detections(deploy, images, **settings)
    counts = [len(s) for _, s, _ in expected]
    assert max(counts) > 100  # more than the single-label default cap
    # some boxes are reported for two classes
    assert any(len({tuple(b) for b in boxes.tolist()}) < len(boxes) for boxes, _, _ in expected)
    assert_same_detections(outputs, expected, 300, NETWORK_BOX_TOL, NETWORK_SCORE_TOL)
    same_maps = pytorch_detections(deploy, images, maps=onnx_raw_maps(exported["raw"], images),
                                   **settings)
    assert_same_detections(outputs, same_maps, 300)


def test_dynamic_batch_1_and_3(exported, images):
    session = create_session(exported["e2e"], 1)
    batch = run(session, images)
    for i in range(len(images)):
        single = run(session, images[i:i + 1])
        n = int(single[3][0])
        assert n == int(batch[3][i])
        np.testing.assert_allclose(single[0][0, :n], batch[0][i, :n], atol=1e-3)
        np.testing.assert_allclose(single[1][0, :n], batch[1][i, :n], atol=1e-5)
        np.testing.assert_array_equal(np.sort(single[2][0]), np.sort(batch[2][i]))
    # a static export rejects another batch size
    raw = create_session(exported["raw"], 1)
    with pytest.raises(Exception):
        run(raw, images)


def test_opset_11_and_no_detections(tmp_path, model, deploy, images):
    path = str(tmp_path / "opset11.onnx")
    export_onnx(model[1], path, image_size=SIZE, end2end=True, dynamic_batch=True, opset=11,
                **DEFAULTS)
    session = create_session(path, 1)
    assert_same_detections(run(session, images[:1]), pytorch_detections(
        deploy, images[:1], **DEFAULTS), 100, NETWORK_BOX_TOL, NETWORK_SCORE_TOL)
    # a flat grey image: nothing above 0.999, the outputs are all padding
    strict = str(tmp_path / "strict.onnx")
    export_onnx(model[1], strict, image_size=SIZE, end2end=True, conf_thresh=0.999)
    grey = np.full((1, 3, SIZE, SIZE), 114.0)
    boxes, scores, classes, counts = run(create_session(strict, 1), grey)
    assert counts.tolist() == [0] and (scores == 0).all() and (classes == -1).all()
    assert (boxes == 0).all()
    with pytest.raises(ONNXExportError, match="opset"):
        export_onnx(model[1], path, image_size=SIZE, opset=10)
    with pytest.raises(ONNXExportError, match="multiples of the model's stride 32"):
        export_onnx(model[1], path, image_size=(320, 300))


def test_full_width_tiny(tmp_path, images, capsys):
    torch.manual_seed(1)
    _, full = detecting_model()
    path = str(tmp_path / "tiny.onnx")
    export_onnx(full, path, image_size=SIZE, dynamic_batch=True)
    outputs = run(create_session(path, 1), images[:2])
    with torch.no_grad():
        expected = full.forward_raw(torch.from_numpy(images[:2]) / 255.0)["lead"]
    diff = max(float(np.abs(o - e.numpy()).max()) for o, e in zip(outputs, expected))
    assert diff < 1e-4
    e2e = str(tmp_path / "tiny-e2e.onnx")
    export_onnx(full, e2e, image_size=SIZE, end2end=True, batch_size=3, **DEFAULTS)
    expected = pytorch_detections(reparameterize(full), images, **DEFAULTS)
    assert all(len(s) > 0 for _, s, _ in expected)
    box, score = assert_same_detections(run(create_session(e2e, 1), images), expected, 100,
                                        NETWORK_BOX_TOL, NETWORK_SCORE_TOL)
    with capsys.disabled():
        print(f"\n  full-width yolov7-tiny, onnxruntime vs PyTorch: raw heads max |diff| "
              f"{diff:.2e}; end-to-end {[len(s) for _, s, _ in expected]} detections, max "
              f"|box diff| {box:.2e} px, |score diff| {score:.2e}")


def test_one_class_and_fewer_priors_than_max_det(tmp_path):
    """One class: the score is the objectness (as PyTorch's postprocessing); 64 x 64 has 252
    priors, fewer than max_det 300: the outputs are padded."""
    torch.manual_seed(2)
    _, net = detecting_model(*NARROW, "MODEL.YOLOV7.NUM_CLASSES", "1", objectness=4.5)
    path = str(tmp_path / "one.onnx")
    settings = dict(DEFAULTS, max_det=300)
    export_onnx(net, path, image_size=64, end2end=True, **settings)
    images = fitted_batch(("coffee",), 64)
    outputs = run(create_session(path, 1), images)
    assert outputs[0].shape == (1, 300, 4)
    expected = pytorch_detections(reparameterize(net), images, **settings)
    assert 0 < len(expected[0][1]) < 252
    assert (expected[0][2] == 0).all()
    assert_same_detections(outputs, expected, 300, NETWORK_BOX_TOL, NETWORK_SCORE_TOL)


@pytest.mark.parametrize("name", ["yolov7", "yolov7-w6", "yolov7-e6e"])
def test_other_scales_export(name, tmp_path):
    """RepConv heads (yolov7), ReOrg / DownC and a fourth level (P6), E-ELAN (e6e)."""
    cfg = load_config(os.path.join(ROOT, "configs", "coco", f"{name}.yaml"),
                      ["MODEL.DEVICE", "cpu", "MODEL.YOLOV7.WIDTH_MULTIPLE", "0.125"])
    net = build_model(cfg).eval()
    path = str(tmp_path / "model.onnx")
    info = export_onnx(net, path, image_size=256, dynamic_batch=True)
    levels = 4 if name != "yolov7" else 3
    assert info["outputs"] == [f"head_p{i}" for i in range(3, 3 + levels)]
    x = torch.rand(2, 3, 256, 256) * 255
    outputs = run(create_session(path, 1), x.numpy())
    with torch.no_grad():
        expected = net.forward_raw(x / 255.0)["lead"]
    assert [o.shape for o in outputs] == [tuple(e.shape) for e in expected]
    assert max(float(np.abs(o - e.numpy()).max()) for o, e in zip(outputs, expected)) < 1e-4


def test_timm_backbone_normalizes_inside_the_graph(tmp_path):
    """A research config with ImageNet PIXEL_MEAN / PIXEL_STD and LayerNorm (ConvNeXt): the
    graph takes the same 0..255 input and applies the config's normalization."""
    config = os.path.join(ROOT, "configs", "research", "yolov7-convnext-tiny.yaml")
    if not os.path.isfile(config):
        pytest.skip("no ConvNeXt research config")
    cfg = load_config(config, ["MODEL.DEVICE", "cpu"])
    net = build_model(cfg).eval()
    assert net.pixel_std.flatten()[0] != 255.0  # not the YOLO /255
    path = str(tmp_path / "convnext.onnx")
    export_onnx(net, path, image_size=128)
    x = torch.from_numpy(fitted_batch(("chelsea",), 128))
    with torch.no_grad():
        expected = net.forward_raw((x - net.pixel_mean) / net.pixel_std)["lead"]
    outputs = run(create_session(path, 1), x.numpy())
    assert max(float(np.abs(o - e.numpy()).max()) for o, e in zip(outputs, expected)) < 1e-4


# ----------------------------------------------------------------------------- command line

@pytest.fixture(scope="module")
def export_tool():
    return load_script("tools/export_onnx.py")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, model):
    """A training checkpoint whose EMA entry holds the detecting weights (its "model" entry is
    a different, random model: the export must take the EMA weights)."""
    path = str(tmp_path_factory.mktemp("ckpt") / "model_final.pth")
    other = build_model(model[0])
    torch.save({"model": other.state_dict(), "ema": {"updates": 10, "model": model[1].state_dict()},
                "iteration": 99}, path)
    return path


def test_export_tool_help(export_tool, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export_tool.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--config-file", "--weights", "--output", "--size", "--batch", "--dynamic-batch",
                 "--end2end", "--conf-thres", "--iou-thres", "--max-det", "--multi-label",
                 "--opset", "--no-ema", "--opts"):
        assert flag in out, flag
    for words in ("0..255", "114", "NonMaxSuppression", "num_detections", "dynamo=False",
                  "EMA", "reparameterize.py", "0.25", "0.45"):
        assert words in out, words


def test_export_tool_end2end(export_tool, checkpoint, deploy, images, tmp_path, capsys):
    output = str(tmp_path / "tool.onnx")
    rc = export_tool.main(["--config-file", CONFIG, "--weights", checkpoint, "--output", output,
                           "--size", str(SIZE), "--end2end", "--dynamic-batch",
                           "--opts", *NARROW])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"wrote {output}" in out and "opset 17" in out
    assert re.search(r"verified with onnxruntime: \[\d+, \d+\] detections \(same as", out), out
    info = read_metadata(output)
    assert info["arch"] == "yolov7-tiny" and info["class_names"][0] == "person"
    # the EMA weights were exported: PyTorch's detections of the detecting model
    assert_same_detections(run(create_session(output, 1), images),
                           pytorch_detections(deploy, images, **DEFAULTS), 100,
                           NETWORK_BOX_TOL, NETWORK_SCORE_TOL)


def test_export_tool_takes_a_deploy_checkpoint(export_tool, checkpoint, deploy, images, tmp_path,
                                               capsys):
    fused = str(tmp_path / "deploy.pth")
    tool = load_script("tools/reparameterize.py")
    assert tool.main(["--config-file", CONFIG, checkpoint, fused, "--check-size", "0",
                      "--opts", *NARROW]) == 0
    output = str(tmp_path / "raw.onnx")
    rc = export_tool.main(["--config-file", CONFIG, "--weights", fused, "--output", output,
                           "--size", "320", "256", "--opts", *NARROW])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert re.search(r"raw head maps within \S+ of PyTorch", out)
    outputs = run(create_session(output, 1), images[:1, :, :, :256])
    with torch.no_grad():
        expected = deploy.forward_raw(torch.from_numpy(images[:1, :, :, :256]) / 255.0)["lead"]
    assert [o.shape for o in outputs] == [tuple(e.shape) for e in expected]
    assert max(float(np.abs(o - e.numpy()).max()) for o, e in zip(outputs, expected)) < 1e-4

    rc = export_tool.main(["--config-file", CONFIG, "--weights", str(tmp_path / "nope.pth"),
                           "--output", output, "--opts", *NARROW])
    assert rc == 1


# ---------------------------------------------------------------------------- demo.py --onnx

DETECTION = re.compile(r"^  (?P<name>\S.*?)  (?P<score>[0-9][0-9.e+-]*)  \[(?P<box>[^\]]+)\]$")


def printed_detections(out):
    """{image path: [(name, score, [x0, y0, x1, y1]), ...]} from the demo's stdout."""
    result, current = {}, None
    for line in out.splitlines():
        header = re.match(r"^(.+) \(\d+x\d+\): (\d+) detections in", line)
        if header:
            current = header[1]
            result[current] = []
        elif DETECTION.match(line):
            match = DETECTION.match(line)
            result[current].append((match["name"], float(match["score"]),
                                    [float(v) for v in match["box"].split(", ")]))
    return result


def assert_same_printed(got, reference, label):
    """The demo printed the same detections, up to the order of ties."""
    got = list(got)
    assert len(got) == len(reference), label
    for name, score, box in reference:
        match = [d for d in got if d[0] == name and abs(d[1] - score) <= 1e-3
                 and np.abs(np.subtract(d[2], box)).max() <= 0.11]
        assert match, (label, name, score, box)
        got.remove(match[0])


def test_demo_runs_the_onnx_model(exported, model, tmp_path, capsys):
    demo = load_script("demo.py")
    astronaut, coffee = write_photos(tmp_path / "in", names=("astronaut", "coffee"), ext=".png")
    checkpoint = str(tmp_path / "model.pth")
    torch.save({"model": model[1].state_dict()}, checkpoint)
    # at most 100 detections as the end-to-end export (the config's default is 300)
    opts = ["--opts", *NARROW, "MODEL.DEVICE", "cpu", "TEST.DETECTIONS_PER_IMAGE", "100"]
    # PyTorch: the 512 x 512 astronaut resized to 320 x 320 is exactly the ONNX input; in
    # float32 as onnxruntime (the default would be bfloat16 on a CPU that has it natively).
    rc = demo.main(["--config-file", CONFIG, "--input", astronaut, *opts,
                    "MODEL.WEIGHTS", checkpoint, "INPUT.MIN_SIZE_TEST", str(SIZE),
                    "INPUT.MAX_SIZE_TEST", str(SIZE), "TEST.YOLOV7.AMP", "False"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    reference = printed_detections(captured.out)[astronaut]
    assert len(reference) >= 10
    for kind in ("e2e", "raw"):
        out_dir = tmp_path / f"out_{kind}"
        rc = demo.main(["--config-file", CONFIG, "--input", astronaut, coffee, "--onnx",
                        exported[kind], "--output", str(out_dir), *opts])
        captured = capsys.readouterr()
        assert rc == 0, captured.err
        printed = printed_detections(captured.out)
        assert_same_printed(printed[astronaut], reference, kind)
        assert printed[coffee], kind  # a non-square photo: fitted, boxes inside it
        for _, _, (x0, y0, x1, y1) in printed[coffee]:
            assert 0 <= x0 <= x1 <= 600 and 0 <= y0 <= y1 <= 400
        assert (out_dir / "astronaut.png").is_file() and (out_dir / "coffee.png").is_file()

    rc = demo.main(["--config-file", CONFIG, "--input", astronaut, "--onnx",
                    str(tmp_path / "missing.onnx"), *opts])
    assert rc == 1 and "missing.onnx" in capsys.readouterr().err
    rc = demo.main(["--config-file", CONFIG, "--input", astronaut, "--onnx", exported["raw"],
                    "--opts", *NARROW, "MODEL.YOLOV7.NUM_CLASSES", "3"])
    assert rc == 1 and "80 classes" in capsys.readouterr().err


def test_onnx_predictor_merges_boxes_and_names_what_it_does_not_run(exported, model, tmp_path,
                                                                     capsys, caplog):
    """MODEL.YOLOV7.MERGE_IOU_TEST on raw heads as in PyTorch; a warning where the config asks
    for what an export cannot run (merge NMS in an end-to-end file, test-time flips)."""
    demo = load_script("demo.py")
    (astronaut,) = write_photos(tmp_path / "in", names=("astronaut",), ext=".png")
    checkpoint = str(tmp_path / "model.pth")
    torch.save({"model": model[1].state_dict()}, checkpoint)
    opts = ["--opts", *NARROW, "MODEL.DEVICE", "cpu", "TEST.DETECTIONS_PER_IMAGE", "100"]
    printed = {}
    for merge in ("0.0", "0.65"):
        rc = demo.main(["--config-file", CONFIG, "--input", astronaut, *opts,
                        "MODEL.WEIGHTS", checkpoint, "INPUT.MIN_SIZE_TEST", str(SIZE),
                        "INPUT.MAX_SIZE_TEST", str(SIZE), "TEST.YOLOV7.AMP", "False",
                        "MODEL.YOLOV7.MERGE_IOU_TEST", merge])
        printed[merge] = printed_detections(capsys.readouterr().out)[astronaut]
        assert rc == 0
    rc = demo.main(["--config-file", CONFIG, "--input", astronaut, "--onnx", exported["raw"],
                    *opts, "MODEL.YOLOV7.MERGE_IOU_TEST", "0.65"])
    assert rc == 0
    assert_same_printed(printed_detections(capsys.readouterr().out)[astronaut],
                        printed["0.65"], "raw, merged")
    moved = [max(np.abs(np.subtract(a[2], b[2])).max() for b in printed["0.65"])
             for a in printed["0.0"]]
    assert max(moved) > 0.5  # the merge moved boxes: the comparison is not the plain NMS's
    cfg = load_config(CONFIG, [*NARROW, "MODEL.YOLOV7.MERGE_IOU_TEST", "0.65",
                               "TEST.YOLOV7.FLIPS", '("lr",)', "TEST.YOLOV7.SCALES", "(0.83,)"])
    with caplog.at_level(logging.WARNING, logger="yolov7_d2.export.onnx_predictor"):
        ONNXPredictor(exported["e2e"], cfg, num_threads=1)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "does not merge boxes" in messages and "MERGE_IOU_TEST 0.65" in messages
    assert "TEST.YOLOV7.FLIPS ('lr',)" in messages and "TEST.YOLOV7.SCALES (0.83,)" in messages
