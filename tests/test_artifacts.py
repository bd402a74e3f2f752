"""Run artefacts: results.csv, curves, confusion matrix, drawn images, training-start files,
tools/visualize_data.py. The metrics behind them: tests/test_metrics.py."""
import contextlib
import csv
import io
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yolov7_d2.config import load_config
from yolov7_d2.engine.hooks import TrainingArtifactsHook
from yolov7_d2.evaluation import YOLOv7COCOEvaluator
from yolov7_d2.evaluation.artifacts import (
    YOLOv7ArtifactsEvaluator,
    YOLOv7Evaluators,
    append_results_row,
)

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances
from detectron2.utils.events import EventStorage

from scripts import load_script

# Trains or loads the bundled tree tiles.
pytestmark = pytest.mark.usefixtures("deepforest_prepared")

ROOT = Path(__file__).resolve().parents[1]
TREES = str(ROOT / "configs/deepforest/yolov7-tiny-trees.yaml")


def assert_image(path, min_side=100):
    assert Path(path).is_file(), path
    image = cv2.imread(str(path))
    assert image is not None, path
    assert min(image.shape[:2]) >= min_side and image.std() > 1.0, path  # not blank


def test_append_results_row_extends_header(tmp_path):
    path = tmp_path / "results.csv"
    append_results_row(str(path), {"iteration": "1", "AP": "0.5"})
    append_results_row(str(path), {"iteration": "2", "AP": "0.6"})
    append_results_row(str(path), {"iteration": "3", "AP": "0.7", "loss": "1"})
    rows = list(csv.DictReader(path.open()))
    assert [r["iteration"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["loss"] == "" and rows[2]["loss"] == "1"


@pytest.fixture
def image_dataset(tmp_path):
    """Four real image files (textured noise), two classes, registered."""
    rng = np.random.default_rng(0)
    dicts = []
    for i in range(4):
        image = cv2.GaussianBlur(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), (7, 7), 0)
        file_name = str(tmp_path / f"img{i}.png")
        cv2.imwrite(file_name, image)
        anns = [{"bbox": [10 + 5 * i, 10, 50, 60], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0,
                 "iscrowd": 0},
                {"bbox": [70, 30, 140, 100], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 1,
                 "iscrowd": 0}]
        dicts.append({"file_name": file_name, "image_id": i, "height": 120, "width": 160,
                      "annotations": anns})
    name = "_test_artifacts_images"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["cat", "dog"])
    return name, dicts


def predictions(dicts, shift=0.0):
    """Right boxes (score 0.9) plus one low-score false positive per image."""
    for d in dicts:
        gt = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
              for a in d["annotations"]]
        boxes = torch.tensor(gt + [[100.0, 0.0, 150.0, 20.0]]) + shift
        inst = Instances((d["height"], d["width"]))
        inst.pred_boxes = Boxes(boxes)
        inst.scores = torch.tensor([0.9, 0.85, 0.3])
        inst.pred_classes = torch.tensor([0, 1, 0])
        yield {"image_id": d["image_id"], "file_name": d["file_name"]}, {"instances": inst}


def test_artifacts_evaluator_writes_csv_and_pngs(tmp_path, image_dataset):
    name, dicts = image_dataset
    out = tmp_path / "run"
    coco = YOLOv7COCOEvaluator(name, output_dir=str(out / "inference"), backend="faster_coco_eval")
    artifacts = YOLOv7ArtifactsEvaluator(name, str(out), num_vis_images=2, max_iter=100)
    evaluators = YOLOv7Evaluators([coco, artifacts])
    with EventStorage(start_iter=0) as storage:
        # the EvalHook's periodic evaluation runs after step 49 (50 done); the final one in
        # after_train, where detectron2 has set the storage's iter to max_iter (100 done)
        for iteration in (49, 100):
            storage.iter = iteration
            storage.put_scalar("loss_box", 0.5 + iteration / 1000)
            storage.put_scalar("lr", 0.01)
            evaluators.reset()
            for inp, outp in predictions(dicts):
                evaluators.process([inp], [outp])
            with contextlib.redirect_stdout(io.StringIO()):
                results = evaluators.evaluate()
    assert results["bbox"]["AP"] == pytest.approx(100.0)

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["iteration"] for r in rows] == ["50", "100"]
    for column in ("dataset", "AP", "AP50", "AP75", "APs", "APm", "APl", "P", "R", "F1",
                   "mAP50", "AP50-cat", "AP50-dog", "loss_box", "lr"):
        assert column in rows[0], column
    assert float(rows[1]["AP"]) == pytest.approx(100.0) and rows[1]["dataset"] == name
    assert float(rows[1]["mAP50"]) == pytest.approx(1.0)
    assert float(rows[1]["loss_box"]) == pytest.approx((0.549 + 0.6) / 2)  # median of window
    # at the best-F1 confidence the low-score false positives are cut: P = R = 1
    assert float(rows[1]["P"]) == pytest.approx(1.0) and float(rows[1]["R"]) == pytest.approx(1.0)

    folder = out / "artifacts" / name / "iter_0000100"
    assert artifacts.last_dir == str(folder)
    for png in ("PR_curve.png", "F1_curve.png", "P_curve.png", "R_curve.png",
                "confusion_matrix.png"):
        assert_image(folder / png, min_side=300)
    for k in range(2):
        assert_image(folder / f"val_{k}.jpg")
    assert not (folder / "val_2.jpg").exists()
    # confusion counts: all 8 GT right; the 4 low-score boxes (0.3 >= 0.25) are false positives
    matrix = artifacts.last_summary["confusion_matrix"]
    np.testing.assert_array_equal(matrix, [[4, 0, 4], [0, 4, 0], [0, 0, 0]])
    lines = (folder / "confusion_matrix.csv").read_text().splitlines()
    assert lines[0] == "predicted \\ true,cat,dog,background" and lines[1] == "cat,4,0,4"


def test_artifacts_outside_training_go_to_eval_folder(tmp_path, image_dataset):
    name, dicts = image_dataset
    artifacts = YOLOv7ArtifactsEvaluator(name, str(tmp_path), num_vis_images=0)
    evaluators = YOLOv7Evaluators([artifacts])
    evaluators.reset()
    for inp, outp in predictions(dicts[:2], shift=3.0):  # two images without predictions
        evaluators.process([inp], [outp])
    assert evaluators.evaluate() == {}
    assert artifacts.last_dir == str(tmp_path / "artifacts" / name / "eval")
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(rows) == 1 and rows[0]["iteration"] == "" and rows[0]["AP"] == ""
    # the images without predictions still count: recall at most 1/2
    assert float(rows[0]["R"]) <= 0.5


@pytest.fixture(scope="module")
def trees_cfg(tmp_path_factory):
    from yolov7_d2.data import register_deepforest

    register_deepforest()
    out = tmp_path_factory.mktemp("trees")
    return load_config(TREES, ["OUTPUT_DIR", str(out), "DATALOADER.NUM_WORKERS", "0",
                               "TEST.YOLOV7.NUM_VIS_IMAGES", "4", "MODEL.YOLOV7.WIDTH_MULTIPLE",
                               "0.25", "MODEL.YOLOV7.ANCHOR_CHECK_MIN_BPR", "0.0"])


def test_training_start_hook_on_deepforest(trees_cfg):
    from yolov7_d2.engine import YOLOv7Trainer

    trainer = YOLOv7Trainer(trees_cfg)
    hooks = [h for h in trainer._hooks if isinstance(h, TrainingArtifactsHook)]
    assert len(hooks) == 1
    mapper = trainer.mapper
    calls = mapper._calls
    hooks[0].before_train()
    assert mapper._calls == calls  # the training data stream is untouched
    folder = Path(trees_cfg.OUTPUT_DIR) / "artifacts" / "train"
    assert_image(folder / "labels.png", min_side=500)
    batch = cv2.imread(str(folder / "train_batch.jpg"))
    side = trees_cfg.INPUT.YOLOV7.MOSAIC_CROP_SIZE  # the main job's mosaic samples
    assert side == 320 and batch.shape[0] >= 2 * side and batch.shape[1] >= 2 * side  # 2 x 2


def test_visualize_data_tool_writes_n_images(tmp_path):
    tool = load_script("tools/visualize_data.py")
    out = tmp_path / "vis"
    assert tool.main(["--config-file", TREES, "--num", "3", "--output", str(out)]) == 0
    files = sorted(out.glob("*.jpg"))
    assert len(files) == 3 and files[0].name.startswith("000_")
    for f in files:
        assert_image(f, min_side=320)  # the main job's mosaic samples (MOSAIC_CROP_SIZE)
