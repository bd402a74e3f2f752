"""demo.py and yolov7_d2.predictor on real photos: outputs, printed detections, errors, video,
and that MODEL.WEIGHTS is what runs. Small and fast: yolov7-tiny at width 0.25, 256 px."""
import logging
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from photos import PHOTOS, photo, write_photos
from scripts import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "coco", "yolov7-tiny.yaml")
FAST = ["MODEL.YOLOV7.WIDTH_MULTIPLE", "0.25", "MODEL.DEVICE", "cpu",
        "INPUT.MIN_SIZE_TEST", "256", "INPUT.MAX_SIZE_TEST", "256"]
# On random weights the tiny model scores every prior far below 1e-3: a threshold of 1e-4
# keeps some boxes (after NMS), the demo's default 0.25 keeps none.
LOW = "0.0001"

HEADER = re.compile(r"^(?P<path>.+) \((?P<w>\d+)x(?P<h>\d+)\): (?P<n>\d+) detections "
                    r"in (?P<t>\d+\.\d+)s$")
DETECTION = re.compile(r"^  (?P<name>\S.*?)  (?P<score>[0-9][0-9.e+-]*)  "
                       r"\[(?P<box>[^\]]+)\]$")


def _load_demo():
    return load_script("demo.py")


demo = _load_demo()


def run_demo(capsys, *argv, opts=()):
    """main(argv + --opts FAST opts) -> (exit status, stdout, stderr)."""
    rc = demo.main([*argv, "--config-file", CONFIG, "--opts", *FAST, *opts])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def parse_detections(out):
    """{image path: (width, height, [(name, score, [x0, y0, x1, y1]), ...])} from stdout;
    asserts every line about an image is well-formed."""
    result, current = {}, None
    for line in out.splitlines():
        header = HEADER.match(line)
        if header:
            current = header["path"]
            result[current] = (int(header["w"]), int(header["h"]), [])
            continue
        if line.startswith("  -> "):
            continue
        detection = DETECTION.match(line)
        if detection:
            assert current is not None, line
            box = [float(v) for v in detection["box"].split(", ")]
            assert len(box) == 4, line
            result[current][2].append((detection["name"], float(detection["score"]), box))
            continue
        assert re.match(r"^\d+ images? in ", line), f"unexpected output line {line!r}"
    for path, (width, height, detections) in result.items():
        for name, score, (x0, y0, x1, y1) in detections:
            assert 0.0 <= score <= 1.0
            assert 0.0 <= x0 <= x1 <= width and 0.0 <= y0 <= y1 <= height, (path, x0, y0, x1, y1)
    return result


def check_counts(out, parsed):
    for path, (_, _, detections) in parsed.items():
        match = re.search(rf"^{re.escape(path)} \(\d+x\d+\): (\d+) detections", out, re.M)
        assert int(match[1]) == len(detections)


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    """The three photos as PNG (lossless, so a direct forward sees the same pixels)."""
    directory = tmp_path_factory.mktemp("photos")
    write_photos(directory, ext=".png")
    return directory


@pytest.fixture(scope="module")
def coco_names():
    from detectron2.data import MetadataCatalog

    return MetadataCatalog.get("coco_2017_val").thing_classes


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--config-file", "--input", "--video-input", "--output",
                 "--confidence-threshold", "--nms-threshold", "--opts"):
        assert flag in out
    for words in ("0.25", "0.45", "skipped with a warning", "MODEL.WEIGHTS", "mp4v", "cpu"):
        assert words in out, words


def test_folder_to_folder_draws_detections(capsys, caplog, photo_dir, tmp_path, coco_names):
    out_dir = tmp_path / "out"
    rc, out, err = run_demo(capsys, "--input", str(photo_dir), "--output", str(out_dir),
                            "--confidence-threshold", LOW)
    assert rc == 0, err
    assert "meaningless" in caplog.text  # random weights
    parsed = parse_detections(out)
    check_counts(out, parsed)
    assert sorted(os.path.basename(p) for p in parsed) == sorted(n + ".png" for n in PHOTOS)
    assert re.search(r"^3 images in \d+\.\d+s \(model \d+\.\d+s, \d+\.\d ms/image\)$", out, re.M)
    for path, (width, height, detections) in parsed.items():
        name = os.path.splitext(os.path.basename(path))[0]
        original = photo(name)
        assert (height, width) == original.shape[:2]
        assert detections, path
        assert all(n in coco_names for n, _, _ in detections)
        assert all(s > float(LOW) for _, s, _ in detections)
        drawn = cv2.imread(str(out_dir / (name + ".png")))
        assert drawn is not None and drawn.shape == original.shape
        assert (drawn != original).any(axis=2).mean() > 0.001  # boxes were drawn


def test_threshold_one_gives_no_detections_and_unchanged_images(capsys, photo_dir, tmp_path):
    out_dir = tmp_path / "out"
    rc, out, err = run_demo(capsys, "--input", str(photo_dir / "*.png"), "--output",
                            str(out_dir), "--confidence-threshold", "1.0")
    assert rc == 0, err
    parsed = parse_detections(out)
    assert len(parsed) == 3 and all(not d for _, _, d in parsed.values())
    for name in PHOTOS:  # nothing drawn: the picture is the input, pixel for pixel
        np.testing.assert_array_equal(cv2.imread(str(out_dir / (name + ".png"))), photo(name))


def test_single_image_to_file_path(capsys, photo_dir, tmp_path):
    target = tmp_path / "sub" / "drawn.jpg"
    rc, out, err = run_demo(capsys, "--input", str(photo_dir / "coffee.png"),
                            "--output", str(target), "--confidence-threshold", LOW)
    assert rc == 0, err
    assert f"  -> {target}" in out
    assert cv2.imread(str(target)).shape == photo("coffee").shape


def test_unnamed_dataset_prints_class_numbers(capsys, photo_dir):
    rc, out, err = run_demo(capsys, "--input", str(photo_dir / "chelsea.png"),
                            "--confidence-threshold", LOW,
                            opts=["DATASETS.TEST", "('not_registered',)"])
    assert rc == 0, err
    (_, _, detections), = parse_detections(out).values()
    assert detections and all(re.fullmatch(r"class \d+", n) for n, _, _ in detections)


def test_missing_path_is_an_error_naming_it(capsys, photo_dir, tmp_path):
    missing = str(tmp_path / "nope.jpg")
    rc, out, err = run_demo(capsys, "--input", str(photo_dir / "coffee.png"), missing)
    assert rc == 1
    assert missing in err and "does not exist" in err
    assert "detections" not in out  # checked before anything ran


def test_no_image_matched_is_an_error(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    for pattern in (str(tmp_path), str(tmp_path / "*.jpg")):
        rc, _, err = run_demo(capsys, "--input", pattern)
        assert rc == 1 and "no image found" in err and pattern in err


def test_corrupt_explicit_file_is_an_error_naming_it(capsys, tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(os.urandom(2000))
    rc, _, err = run_demo(capsys, "--input", str(bad))
    assert rc == 1
    assert f"cannot read image {str(bad)!r}" in err and "1 of 1 images failed" in err


def test_folder_of_good_odd_and_bad_files(capsys, caplog, tmp_path):
    """Every readable image is processed, whatever its size or channels (grayscale, RGBA,
    16-bit, 1 x 1, 10000 x 10); the unreadable ones are skipped with a warning, listed at the
    end on stderr, and the exit status is 1."""
    folder = tmp_path / "in"
    write_photos(folder, names=("chelsea",))
    gray = cv2.cvtColor(photo("coffee"), cv2.COLOR_BGR2GRAY)
    good = {"chelsea.jpg": photo("chelsea"), "gray.png": gray,
            "rgba.png": cv2.cvtColor(photo("astronaut"), cv2.COLOR_BGR2BGRA),
            "gray16.png": gray.astype(np.uint16) * 257,
            "dot.png": np.full((1, 1, 3), 200, np.uint8),
            "strip.png": cv2.resize(photo("coffee"), (10, 10000))}
    for name, image in good.items():
        if name != "chelsea.jpg":
            assert cv2.imwrite(str(folder / name), image)
    (folder / "x.jpg").write_bytes(os.urandom(2000))
    truncated = (folder / "chelsea.jpg").read_bytes()
    (folder / "y.jpg").write_bytes(truncated[: len(truncated) // 3])
    rc, out, err = run_demo(capsys, "--input", str(folder), "--output", str(tmp_path / "out"))
    assert rc == 1
    parsed = parse_detections(out)
    assert sorted(parsed) == sorted(str(folder / name) for name in good)
    for name, image in good.items():  # drawn at the input's size
        width, height, _ = parsed[str(folder / name)]
        assert (height, width) == image.shape[:2]
        assert cv2.imread(str(tmp_path / "out" / name)).shape[:2] == image.shape[:2]
    assert f"{len(good)} images in" in out and "2 failed (listed on stderr)" in out
    assert f"2 of {len(good) + 2} images failed" in err
    for name in ("x.jpg", "y.jpg"):
        assert f"cannot read image {str(folder / name)!r}" in err
        assert str(folder / name) in caplog.text  # warned when met
        assert not (tmp_path / "out" / name).exists()

    for name in good:
        os.remove(folder / name)
    rc, out, err = run_demo(capsys, "--input", str(folder))
    assert rc == 1 and "2 of 2 images failed" in err and "images in" not in out


def test_bad_weights_and_options_are_errors(capsys, tmp_path, photo_dir):
    bad = tmp_path / "model.pth"
    bad.write_bytes(b"garbage")
    image = str(photo_dir / "coffee.png")
    rc, _, err = run_demo(capsys, "--input", image, opts=["MODEL.WEIGHTS", str(bad)])
    assert rc == 1 and str(bad) in err
    rc, _, err = run_demo(capsys, "--input", image, opts=["MODEL.NO_SUCH_KEY", "1"])
    assert rc == 1 and "MODEL.NO_SUCH_KEY" in err
    rc, _, err = run_demo(capsys, "--input", image, "--confidence-threshold", "1.5")
    assert rc == 1 and "--confidence-threshold" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the fallback without CUDA")
def test_device_falls_back_to_cpu_unless_explicit(capsys, caplog, photo_dir):
    caplog.set_level(logging.INFO, logger="yolov7_d2")
    image = str(photo_dir / "chelsea.png")
    rc = demo.main(["--input", image, "--config-file", CONFIG, "--opts", *FAST[:2],
                    *FAST[4:]])  # no MODEL.DEVICE: get_cfg's "cuda"
    assert rc == 0, capsys.readouterr().err
    assert "CUDA is not available: running on the CPU" in caplog.text
    rc, _, err = run_demo(capsys, "--input", image, opts=["MODEL.DEVICE", "cuda"])
    assert rc == 1 and "CUDA is not available" in err


def test_video_in_video_out(capsys, tmp_path):
    frames, size = 4, (160, 112)
    source = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(source, cv2.VideoWriter_fourcc(*"mp4v"), 5.0, size)
    assert writer.isOpened()
    for i in range(frames):  # a slow pan over a real photo
        writer.write(np.ascontiguousarray(cv2.resize(photo("coffee")[:, 10 * i:], size)))
    writer.release()

    rc, out, err = run_demo(capsys, "--video-input", source, "--output", str(tmp_path / "out"),
                            "--confidence-threshold", LOW)
    assert rc == 0, err
    counts = re.findall(rf"^frame (\d+)/{frames}: (\d+) detections in \d+\.\d+s$", out, re.M)
    assert [int(i) for i, _ in counts] == list(range(1, frames + 1))
    assert all(int(n) > 0 for _, n in counts)
    result = tmp_path / "out" / "clip.mp4"
    assert f"{frames} frames in" in out and str(result) in out
    capture = cv2.VideoCapture(str(result))
    read = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        read.append(frame)
    capture.release()
    assert len(read) == frames and all(f.shape == (size[1], size[0], 3) for f in read)

    rc, _, err = run_demo(capsys, "--video-input", str(tmp_path / "missing.mp4"))
    assert rc == 1 and "missing.mp4" in err and "does not exist" in err


def _trained_like_state_dict(cfg):
    """A YOLOv7 state dict whose head scores boxes well above 0.25 (random init: < 0.001),
    so that detections at 0.25 exist only when these weights are loaded."""
    from detectron2.modeling import build_model

    model = build_model(cfg)
    with torch.no_grad():
        for predictor in model.head.predictors:
            predictor.weight *= 10
            bias = predictor.bias.view(model.anchors.shape[1], -1)
            bias[:, 4] += 5.0  # objectness
            bias[:, 5:] += 4.0 + torch.randn_like(bias[:, 5:])  # classes
    return model.state_dict()


def test_weights_are_loaded_and_match_a_direct_forward(capsys, caplog, photo_dir, tmp_path,
                                                       coco_names):
    from yolov7_d2 import load_config
    from yolov7_d2.modeling import reparameterize

    import detectron2.data.transforms as T
    from detectron2.modeling import build_model

    cfg = load_config(CONFIG, FAST + ["MODEL.YOLOV7.CONF_THRESH_TEST", "0.25",
                                      "MODEL.YOLOV7.NMS_THRESH_TEST", "0.45",
                                      "MODEL.YOLOV7.MULTI_LABEL_TEST", "False"])
    state = _trained_like_state_dict(cfg)
    checkpoint = str(tmp_path / "model.pth")
    torch.save({"model": state}, checkpoint)
    images = [str(photo_dir / f"{n}.png") for n in ("astronaut", "coffee")]

    rc, out, err = run_demo(capsys, "--input", *images, opts=["MODEL.WEIGHTS", checkpoint])
    assert rc == 0, err
    assert "meaningless" not in caplog.text
    printed = parse_detections(out)

    # The demo's predictor runs the deploy form in NHWC layout: the same computation here.
    model = build_model(cfg).eval()
    model.load_state_dict(state)
    with torch.no_grad():
        reparameterize(model)
    model.to(memory_format=torch.channels_last)
    model.channels_last = True
    resize = T.ResizeShortestEdge([256, 256], 256)
    for path in images:
        rgb = cv2.imread(path)[:, :, ::-1]
        resized = resize.get_transform(rgb).apply_image(rgb)
        inputs = {"image": torch.as_tensor(resized.astype("float32").transpose(2, 0, 1)),
                  "height": rgb.shape[0], "width": rgb.shape[1]}
        with torch.no_grad():
            instances = model([inputs])[0]["instances"]
        expected = list(zip([coco_names[c] for c in instances.pred_classes.tolist()],
                            instances.scores.tolist(), instances.pred_boxes.tensor.tolist()))
        got = printed[path][2]
        assert len(expected) > 0 and len(got) == len(expected), (len(got), len(expected))
        # One to one (the boosted head gives many equal scores, whose order is arbitrary).
        unmatched = list(expected)
        for name, score, box in got:
            match = next((e for e in unmatched if e[0] == name
                          and e[1] == pytest.approx(score, abs=1e-3)
                          and e[2] == pytest.approx(box, abs=0.051)), None)
            assert match is not None, (name, score, box, unmatched[:3])
            unmatched.remove(match)

    # The same run on random weights finds nothing at 0.25: the detections came from the file.
    rc, out, _ = run_demo(capsys, "--input", *images)
    assert rc == 0 and all(not d for _, _, d in parse_detections(out).values())


def test_command_line_exit_status(tmp_path):
    """`python demo.py` itself: the __main__ block, its logging and its exit status."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    missing = str(tmp_path / "missing.jpg")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "demo.py"), "--config-file", CONFIG,
                           "--input", missing, "--opts", *FAST],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 1
    assert f"demo.py: error: input {missing!r} does not exist" in proc.stderr
