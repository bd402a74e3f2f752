"""COCO evaluation backends: faster-coco-eval reproduces pycocotools' numbers."""
import contextlib
import copy
import io

import numpy as np
import pytest
import torch

from yolov7_d2.config import load_config
from yolov7_d2.evaluation import EVAL_BACKENDS, YOLOv7COCOEvaluator, evaluate_with_faster_coco_eval

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances

from synthetic import synthetic_detection_set, to_coco_json

pytest.importorskip("faster_coco_eval")

NUM_CLASSES = 4


@pytest.fixture(scope="module")
def synthetic():
    # 300 images, ~2200 ground-truth boxes (some crowd), 100 detections per image, 4 classes
    return synthetic_detection_set(num_images=300, num_classes=NUM_CLASSES, seed=7)


def register(name, dicts):
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: copy.deepcopy(dicts))
    MetadataCatalog.get(name).set(thing_classes=[f"class_{i}" for i in range(NUM_CLASSES)])


def run_evaluator(name, dicts, detections, backend, output_dir):
    evaluator = YOLOv7COCOEvaluator(name, output_dir=str(output_dir), backend=backend)
    evaluator.reset()
    for d in dicts:
        det = detections[d["image_id"]]
        inst = Instances((d["height"], d["width"]))
        inst.pred_boxes = Boxes(torch.from_numpy(det["boxes"]))
        inst.scores = torch.from_numpy(det["scores"])
        inst.pred_classes = torch.from_numpy(det["classes"])
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its summary
        return evaluator.evaluate()


def test_faster_coco_eval_equals_pycocotools_through_evaluator(synthetic, tmp_path):
    dicts, detections = synthetic
    name = "_test_evaluation_synthetic"
    register(name, dicts)
    slow = run_evaluator(name, dicts, detections, "pycocotools", tmp_path / "slow")
    fast = run_evaluator(name, dicts, detections, "faster_coco_eval", tmp_path / "fast")
    assert set(slow["bbox"]) == set(fast["bbox"])
    assert len(slow["bbox"]) == 6 + NUM_CLASSES  # AP, AP50, AP75, APs, APm, APl, AP-<class>
    for key, value in slow["bbox"].items():
        assert fast["bbox"][key] == pytest.approx(value, abs=1e-10), key
    assert 10 < slow["bbox"]["AP50"] < 90  # a non-trivial case
    # the results json is written as by detectron2
    assert (tmp_path / "fast" / "coco_instances_results.json").stat().st_size > 0


def test_twelve_stats_match_bit_for_bit(synthetic):
    import faster_coco_eval
    from pycocotools.coco import COCO

    from detectron2.evaluation.coco_evaluation import _evaluate_predictions_on_coco

    gt, results = to_coco_json(*synthetic, NUM_CLASSES)
    assert any(a["iscrowd"] for a in gt["annotations"])
    coco_gt = COCO()
    coco_gt.dataset = copy.deepcopy(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
        reference = _evaluate_predictions_on_coco(coco_gt, copy.deepcopy(results), "bbox",
                                                  use_fast_impl=False)
    fast = evaluate_with_faster_coco_eval(faster_coco_eval.COCO(copy.deepcopy(gt)),
                                          copy.deepcopy(results), "bbox")
    assert len(fast.stats) == 12
    np.testing.assert_array_equal(np.asarray(reference.stats), fast.stats)  # bit for bit
    assert fast.eval["precision"].shape == reference.eval["precision"].shape
    np.testing.assert_allclose(fast.eval["precision"], reference.eval["precision"],
                               rtol=0, atol=1e-12)
    # a custom maxDets (detectron2's COCOevalMaxDets path) agrees too
    with contextlib.redirect_stdout(io.StringIO()):
        reference = _evaluate_predictions_on_coco(coco_gt, copy.deepcopy(results), "bbox",
                                                  use_fast_impl=False,
                                                  max_dets_per_image=[1, 10, 50])
    fast = evaluate_with_faster_coco_eval(faster_coco_eval.COCO(copy.deepcopy(gt)),
                                          copy.deepcopy(results), "bbox",
                                          max_dets_per_image=[1, 10, 50])
    np.testing.assert_array_equal(np.asarray(reference.stats), fast.stats)


def test_backend_choice_and_errors(tmp_path):
    assert load_config().TEST.YOLOV7.EVAL_BACKEND in EVAL_BACKENDS
    dicts, _ = synthetic_detection_set(num_images=3, num_classes=NUM_CLASSES, seed=1)
    name = "_test_evaluation_tiny"
    register(name, dicts)
    with pytest.raises(ValueError, match="EVAL_BACKEND"):
        YOLOv7COCOEvaluator(name, output_dir=str(tmp_path), backend="nope")
    evaluator = YOLOv7COCOEvaluator(name, output_dir=str(tmp_path), backend="faster_coco_eval")
    evaluator.reset()
    assert evaluator.evaluate() == {}  # no predictions: warned, as detectron2


def test_trainer_builds_the_configured_evaluators(tmp_path):
    from yolov7_d2.engine import YOLOv7Trainer
    from yolov7_d2.evaluation.artifacts import YOLOv7ArtifactsEvaluator, YOLOv7Evaluators

    dicts, _ = synthetic_detection_set(num_images=3, num_classes=NUM_CLASSES, seed=1)
    name = "_test_evaluation_trainer"
    register(name, dicts)
    cfg = load_config(opts=["OUTPUT_DIR", str(tmp_path), "TEST.YOLOV7.EVAL_BACKEND",
                            "faster_coco_eval", "TEST.YOLOV7.ARTIFACTS", "False"])
    evaluator = YOLOv7Trainer.build_evaluator(cfg, name)
    assert isinstance(evaluator, YOLOv7COCOEvaluator) and evaluator.backend == "faster_coco_eval"
    cfg.TEST.YOLOV7.ARTIFACTS = True
    evaluator = YOLOv7Trainer.build_evaluator(cfg, name)
    assert isinstance(evaluator, YOLOv7Evaluators)
    kinds = [type(e) for e in evaluator._evaluators]
    assert kinds == [YOLOv7COCOEvaluator, YOLOv7ArtifactsEvaluator]
