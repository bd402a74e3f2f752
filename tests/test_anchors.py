"""Anchor fit metrics, k-means + genetic evolution, tools/compute_anchors.py on the real
DeepForest tiles, and the anchor check at training start."""
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from yolov7_d2 import anchors as A
from yolov7_d2.config import load_config
from yolov7_d2.engine.hooks import AnchorCheckHook

from detectron2.structures import BoxMode

from log_records import Records
from scripts import load_script

# Trains or loads the bundled tree tiles.
pytestmark = pytest.mark.usefixtures("deepforest_prepared")

ROOT = Path(__file__).resolve().parents[1]
TREES = ROOT / "configs" / "deepforest" / "yolov7-tiny-trees.yaml"


def test_metrics_of_a_hand_made_case():
    wh = [[10, 10], [40, 40], [100, 100], [2, 2], [11, 50]]
    anchors = [[10, 10], [30, 60]]
    # Best ratio metric per box: 1 (first anchor), min(30/40, 40/60) = 2/3, min(30/100,
    # 60/100) = 0.3, 2/10 = 0.2 (not above 1/4), min(11/30, 50/60) = 11/30. The 40x40 box is
    # exactly 4x the first anchor: 0.25 is not above 1/anchor_t, so only the second counts.
    bpr, aat = A.anchor_metrics(wh, anchors, anchor_t=4.0)
    assert bpr == pytest.approx(4 / 5) and aat == pytest.approx(4 / 5)
    assert A.anchor_fitness(wh, anchors, 4.0) == pytest.approx((1 + 2 / 3 + 0.3 + 11 / 30) / 5)
    np.testing.assert_allclose(A.ratio_metric([[40, 40]], anchors), [[0.25, 2 / 3]], rtol=1e-6)
    # A looser threshold accepts the small box: 0.2 > 1/6.
    assert A.anchor_metrics(wh, anchors, anchor_t=6.0)[0] == pytest.approx(1.0)


def test_box_sizes_scale_like_training():
    dicts = [
        {"width": 1000, "height": 500, "annotations": [
            {"bbox": [100, 100, 200, 150], "bbox_mode": BoxMode.XYXY_ABS},
            {"bbox": [10, 10, 50, 25], "bbox_mode": BoxMode.XYWH_ABS},
            {"bbox": [0, 0, 500, 500], "bbox_mode": BoxMode.XYXY_ABS, "iscrowd": 1},
            {"bbox": [900, 400, 1100, 600], "bbox_mode": BoxMode.XYXY_ABS},  # clipped
        ]},
        {"width": 320, "height": 640, "annotations": []},
        {"width": 320, "height": 640, "annotations": [
            {"bbox": [0, 0, 32, 64], "bbox_mode": BoxMode.XYXY_ABS}]},
    ]
    wh = A.box_sizes(dicts, 640)
    np.testing.assert_allclose(wh, [[64, 32], [32, 16], [64, 64], [32, 64]], rtol=1e-6)
    assert len(A.box_sizes(dicts, 640, max_boxes=2)) == 2
    jittered = A.box_sizes(dicts, 640, random_scale=True, seed=1)
    assert np.all(np.abs(jittered / wh - 1) <= 0.1 + 1e-6)


def three_clusters(seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[20.0, 20.0], [60.0, 30.0], [150.0, 200.0]])
    wh = np.concatenate([c * np.exp(rng.normal(0, 0.05, (300, 2))) for c in centres])
    return centres, wh


def test_kmeans_and_evolution_recover_three_clusters():
    centres, wh = three_clusters()
    anchors, info = A.compute_anchors(wh, n=3, anchor_t=4.0, generations=200, seed=0)
    np.testing.assert_allclose(anchors, centres, rtol=0.1)  # sorted by area like the centres
    assert info["evolved"] >= info["kmeans"] and info["used"] == info["boxes"] == 900
    assert A.anchor_metrics(wh, anchors)[0] == 1.0
    again, _ = A.compute_anchors(wh, n=3, anchor_t=4.0, generations=200, seed=0)
    np.testing.assert_array_equal(anchors, again)  # seeded

    # Evolution from poor anchors raises the fitness and moves them toward the clusters.
    start = np.array([[10.0, 40.0], [100.0, 50.0], [300.0, 120.0]])
    evolved, fitness = A.evolve_anchors(wh, start, 4.0, generations=300, seed=0)
    assert fitness > A.anchor_fitness(wh, start, 4.0) + 0.1
    assert fitness == pytest.approx(A.anchor_fitness(wh, evolved, 4.0))
    assert np.all(evolved >= A.MIN_BOX_PX)


def test_tiny_boxes_are_left_out_of_the_computation():
    _, wh = three_clusters()
    wh = np.concatenate([wh, [[1.0, 1.5]] * 50])
    _, info = A.compute_anchors(wh, n=3, generations=10)
    assert info["boxes"] == 950 and info["used"] == 900 and info["small"] == 50


def test_anchors_per_level_and_config_line():
    k = np.array([[150, 200], [20, 20], [60, 30], [10.4, 13.6], [400, 300], [33, 23]])
    per_level = A.anchors_per_level(k, 3)
    assert per_level == [[10, 14, 20, 20], [33, 23, 60, 30], [150, 200, 400, 300]]
    line = A.format_anchors(per_level)
    assert line == "[[10,14,20,20],[33,23,60,30],[150,200,400,300]]"
    cfg = load_config(opts=["MODEL.YOLOV7.ANCHORS", line])
    assert cfg.MODEL.YOLOV7.ANCHORS == per_level
    with pytest.raises(ValueError, match="evenly"):
        A.anchors_per_level(k, 4)


def test_compute_anchors_tool_on_deepforest(capsys):
    tool = load_script("tools/compute_anchors.py")
    assert tool.main(["--config-file", str(TREES), "--generations", "100"]) == 0
    out = capsys.readouterr().out
    assert ("855 boxes in 37 images of deepforest_trees_train, deepforest_trees_extra at image "
            "size 416") in out
    current = re.search(r"current anchors: best possible recall ([\d.]+)", out)
    new = re.search(r"new anchors: best possible recall ([\d.]+)", out)
    assert current and new and float(new.group(1)) >= 0.98
    line = re.search(r"^MODEL\.YOLOV7\.ANCHORS (\S+)$", out, re.M)
    assert line, out
    cfg = load_config(str(TREES), ["MODEL.YOLOV7.ANCHORS", line.group(1)])
    levels = cfg.MODEL.YOLOV7.ANCHORS
    assert [len(lvl) for lvl in levels] == [6, 6, 6]
    areas = [w * h for lvl in levels for w, h in zip(lvl[0::2], lvl[1::2])]
    assert areas == sorted(areas)


def test_anchor_check_at_training_start_warns_on_absurd_anchors(tmp_path):
    from yolov7_d2.data import register_deepforest
    from yolov7_d2.engine import YOLOv7Trainer

    register_deepforest()
    huge = "[[900,900,1000,1000,1100,1100],[1200,1200,1300,1300,1400,1400]," \
           "[1500,1500,1600,1600,1700,1700]]"
    cfg = load_config(str(TREES), [
        "MODEL.YOLOV7.WIDTH_MULTIPLE", "0.25", "INPUT.YOLOV7.IMAGE_SIZE", "160",
        "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0", "MODEL.YOLOV7.ANCHORS", huge,
        "MODEL.YOLOV7.AUTOANCHOR", "False", "OUTPUT_DIR", str(tmp_path)])
    trainer = YOLOv7Trainer(cfg)
    (hook,) = [h for h in trainer._hooks if isinstance(h, AnchorCheckHook)]
    handler = Records()
    logger = logging.getLogger("yolov7_d2.anchors")
    logger.addHandler(handler)
    try:
        hook.before_train()
    finally:
        logger.removeHandler(handler)
    assert hook.result["bpr"] == 0.0 and hook.result["boxes"] == 855
    (warning,) = [r.getMessage() for r in handler.records if r.levelno == logging.WARNING]
    assert "best possible recall 0.0000 < MODEL.YOLOV7.ANCHOR_CHECK_MIN_BPR 0.98" in warning
    assert "tools/compute_anchors.py --config-file" in warning
    assert hook.trainer.model.anchors.max() >= 900  # warn only: the anchors stay

    # The official tiny anchors fit the tiles at 416 px; and the check can be turned off.
    hook.trainer.model.anchors.copy_(
        hook.trainer.model.anchors.new_tensor([[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119],
                                               [116, 90, 156, 198, 373, 326]]).view(3, 3, 2))
    hook.image_size = 416
    hook.before_train()
    assert hook.result["bpr"] > 0.95
    cfg.defrost()
    cfg.MODEL.YOLOV7.ANCHOR_CHECK_MIN_BPR = 0.0
    assert not [h for h in YOLOv7Trainer(cfg)._hooks if isinstance(h, AnchorCheckHook)]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 vs the oracle's torch use
def test_metrics_match_the_official_check_anchors(capsys):
    """The official ``check_anchors`` (GPL, test-only oracle) prints BPR and anchors/target
    for a dataset and a Detect module; ours give the same numbers. Boxes are kept away from the
    threshold so that its random +-10% scale cannot flip any box."""
    autoanchor = pytest.importorskip("sas_yolov7.utils.autoanchor")
    from types import SimpleNamespace

    import torch

    anchors = np.array([[12, 16], [19, 36], [40, 28], [36, 75], [76, 55], [72, 146],
                        [142, 110], [192, 243], [459, 401]], dtype=np.float32)
    rng = np.random.default_rng(0)
    shapes = np.array([[1000, 500], [640, 640], [300, 600], [800, 200]], dtype=float)
    labels, dicts = [], []
    for w, h in shapes:
        scale = 640 / max(w, h)
        n = 0
        rows = []
        while n < 60:
            bw, bh = np.exp(rng.uniform(np.log(2), np.log(600), 2))
            bw, bh = min(bw, 640) / scale, min(bh, 640) / scale
            bw, bh = min(bw, w), min(bh, h)
            m = A.ratio_metric([[bw * scale, bh * scale]], anchors)
            if ((m > 0.22) & (m < 0.28)).any():
                continue  # too close to 1/anchor_t
            rows.append([0, 0.5, 0.5, bw / w, bh / h])
            n += 1
        labels.append(np.array(rows))
        dicts.append({"width": w, "height": h, "annotations": [
            {"bbox": [0, 0, r[3] * w, r[4] * h], "bbox_mode": BoxMode.XYXY_ABS} for r in rows]})
    wh = A.box_sizes(dicts, 640)
    bpr, aat = A.anchor_metrics(wh, anchors)
    assert 0.3 < bpr < 0.98  # some boxes fit no anchor

    grid = torch.tensor(anchors).view(3, 1, 3, 1, 1, 2)
    detect = SimpleNamespace(anchor_grid=grid.clone(), anchors=torch.tensor(anchors).view(3, 3, 2),
                             stride=torch.tensor([8.0, 16.0, 32.0]))
    dataset = SimpleNamespace(shapes=shapes, labels=labels)
    np.random.seed(0)
    autoanchor.check_anchors(dataset, SimpleNamespace(model=[detect]), thr=4.0, imgsz=640)
    printed = re.search(r"anchors/target = (\d+\.\d+), Best Possible Recall \(BPR\) = (\d+\.\d+)",
                        capsys.readouterr().out)
    assert float(printed.group(2)) == pytest.approx(bpr, abs=1e-4)
    assert float(printed.group(1)) == pytest.approx(aat, abs=5e-3)
    ours = A.box_sizes(dicts, 640, random_scale=True, seed=3)
    assert A.anchor_metrics(ours, anchors) == pytest.approx((bpr, aat))


def write_bars(root: Path) -> Path:
    """A YOLO data.yaml of 256x256 images with 10:1 horizontal bars 60 to 105 px long, 16
    sizes over 4 training images (4 bars each) and one validation image. At image size 128
    (30-52 x 3-5 px) the yolov7-tiny anchors fit hardly any (best possible recall 0 to 0.25
    with the check's random scale)."""
    import cv2

    rng = np.random.default_rng(0)
    lengths = np.arange(60, 108, 3).reshape(4, 4)
    for split, rows in (("train", lengths), ("val", lengths[:1, ::2])):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i, row in enumerate(rows):
            image = rng.integers(100, 160, (256, 256, 3), dtype=np.uint8)
            lines = []
            for j, length in enumerate(row):
                x0, y0, h = 20 + 30 * (j % 2), 30 + 55 * j, length / 10
                cv2.rectangle(image, (x0, y0), (int(x0 + length), int(y0 + h)), (20, 20, 20), -1)
                lines.append(f"0 {(x0 + length / 2) / 256} {(y0 + h / 2) / 256} {length / 256} "
                             f"{h / 256}")
            cv2.imwrite(str(root / "images" / split / f"{i}.png"), image)
            (root / "labels" / split / f"{i}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [bar]\n")
    return root / "data.yaml"


def bars_trainer(tmp_path, *opts):
    """A yolov7-tiny trainer on the bars at 128 px, through train_net.py --yolo-data."""
    from yolov7_d2.engine import YOLOv7Trainer

    train_net = load_script("train_net.py")
    args = train_net.parse_args([
        "--config-file", str(ROOT / "configs" / "coco" / "yolov7-tiny.yaml"),
        "--yolo-data", str(write_bars(tmp_path / "bars")), "MODEL.DEVICE", "cpu",
        "MODEL.YOLOV7.WIDTH_MULTIPLE", "0.25", "INPUT.YOLOV7.IMAGE_SIZE", "128",
        "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "128", "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.YOLOV7.NOMINAL_BATCH_SIZE",
        "2", "DATALOADER.NUM_WORKERS", "0", "TEST.YOLOV7.ARTIFACTS", "False", "SEED", "0",
        "OUTPUT_DIR", str(tmp_path / "out"), *opts])
    trainer = YOLOv7Trainer(train_net.setup(args))
    (hook,) = [h for h in trainer._hooks if isinstance(h, AnchorCheckHook)]
    return trainer, hook


@pytest.fixture
def anchor_logs():
    handler = Records()
    logger = logging.getLogger("yolov7_d2.anchors")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def test_autoanchor_replaces_anchors_that_miss_the_boxes(tmp_path, anchor_logs):
    import torch

    trainer, hook = bars_trainer(tmp_path)
    before = trainer.model.anchors.clone()
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert hook.result["bpr"] < 0.3 and hook.result["new_bpr"] == 1.0
    new = torch.as_tensor(hook.result["new_anchors"])
    assert new.shape == before.shape and new[..., 0].ge(5 * new[..., 1]).all()  # long and thin
    assert torch.equal(trainer.model.anchors, new)
    assert torch.allclose(trainer.ema.ema.anchors, new)
    saved = torch.load(tmp_path / "out" / "model_final.pth", map_location="cpu",
                       weights_only=False)
    assert torch.equal(saved["model"]["anchors"], new)
    assert torch.allclose(saved["ema"]["model"]["anchors"], new)
    (message,) = [m for m in anchor_logs.messages(logging.WARNING) if "autoanchor" in m]
    assert f"best possible recall {hook.result['bpr']:.4f} -> 1.0000" in message
    assert "MODEL.YOLOV7.ANCHORS [[" in message


def test_autoanchor_off_only_warns(tmp_path, anchor_logs):
    trainer, hook = bars_trainer(tmp_path, "MODEL.YOLOV7.AUTOANCHOR", "False")
    before = trainer.model.anchors.clone()
    hook.before_train()
    assert hook.result["bpr"] < 0.3 and "new_anchors" not in hook.result
    assert trainer.model.anchors.equal(before) and trainer.ema.ema.anchors.equal(before)
    (warning,) = anchor_logs.messages(logging.WARNING)
    assert "tools/compute_anchors.py" in warning
