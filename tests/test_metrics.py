"""Detection metrics of the run artefacts (yolov7_d2.evaluation.metrics) on hand-made cases
with known answers, and their AP50 against pycocotools' COCOeval."""
import contextlib
import copy
import io

import numpy as np
import pytest

from yolov7_d2.evaluation.metrics import (
    best_f1_summary,
    confusion_matrix,
    detection_metrics,
    ground_truth_of,
    match_boxes,
    precision_recall_curves,
)

from detectron2.structures import BoxMode

from synthetic import synthetic_detection_set, to_coco_json

BOX = [0.0, 0.0, 10.0, 10.0]
ELSEWHERE = [50.0, 50.0, 60.0, 60.0]  # overlaps nothing


def image(gt_boxes, gt_classes, det_boxes, det_scores, det_classes):
    """One entry of detection_metrics' ``images``."""
    return (np.asarray(gt_boxes, float).reshape(-1, 4), np.asarray(gt_classes, np.int64),
            np.asarray(det_boxes, float).reshape(-1, 4), np.asarray(det_scores, float),
            np.asarray(det_classes, np.int64))


def test_confusion_matrix_hand_made_case():
    # class 0 / 1; GT: a (0), b (0), c (1); detections: on a as 0 (correct), on b as 1
    # (misclassified), nothing on c (missed), one class-0 box on empty ground (false positive),
    # and one low-score box on c (below the 0.25 confidence: ignored).
    gt = np.array([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 70]], float)
    gt_cls = np.array([0, 0, 1])
    det = np.array([[0, 0, 10, 11], [21, 20, 40, 40], [80, 80, 95, 95], [50, 50, 60, 70]], float)
    det_cls = np.array([0, 1, 0, 1])
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    m = confusion_matrix(gt, gt_cls, det, det_cls, scores, num_classes=2)
    expected = np.array([[1, 0, 1],   # predicted 0: true 0, -, background (false positive)
                         [1, 0, 0],   # predicted 1: true 0 (misclassified)
                         [0, 1, 0]])  # background: true 1 missed
    np.testing.assert_array_equal(m, expected)
    # accumulation over images
    confusion_matrix(gt, gt_cls, det, det_cls, scores, num_classes=2, matrix=m)
    np.testing.assert_array_equal(m, 2 * expected)


def test_matching_is_one_to_one():
    gt = np.array([[0, 0, 10, 10], [0, 0, 10, 12]], float)
    det = np.array([[0, 0, 10, 12], [0, 0, 10, 10.5]], float)
    gi, di = match_boxes(gt, [0, 0], det, [0, 0], 0.5)
    assert sorted(zip(gi.tolist(), di.tolist())) == [(0, 1), (1, 0)]
    gi, _ = match_boxes(gt, [0, 0], det, [1, 1], 0.5)  # class mismatch
    assert len(gi) == 0
    # one ground truth, a high-score detection with IoU 0.6 and a low-score one with IoU 0.9:
    # by score (COCOeval, the curves) the first wins, by IoU (confusion matrix) the second
    gt = np.array([[0, 0, 10, 10]], float)
    det = np.array([[0, 0, 10, 6], [0, 0, 10, 9]], float)
    assert match_boxes(gt, [0], det, [0, 0], 0.5, scores=[0.9, 0.2])[1].tolist() == [0]
    assert match_boxes(gt, [0], det, [0, 0], 0.5)[1].tolist() == [1]
    assert match_boxes(np.zeros((0, 4)), [], det, [0, 0], 0.5, scores=[0.9, 0.2])[1].size == 0


def test_pr_curves_perfect_and_imperfect():
    # perfect: every detection a true positive, all ground truth found
    c = precision_recall_curves(tp=[1, 1, 1, 1], conf=[0.9, 0.8, 0.7, 0.6],
                                pred_classes=[0, 0, 1, 1], num_gt=[2, 2, 0])
    x = c["x"]
    high, low = np.searchsorted(x, 0.95), np.searchsorted(x, 0.5)
    assert np.all(c["precision"][:2] == 1.0)  # at every threshold
    assert np.all(c["recall"][:2, high] == 0) and np.all(c["recall"][:2, low] == 1)
    np.testing.assert_allclose(c["ap"][:2], 1.0)
    assert np.isnan(c["ap"][2]) and not c["valid"][2]  # a class without ground truth
    np.testing.assert_allclose(c["pr"][:2, :-1], 1.0)
    # imperfect: TP 0.9, FP 0.8, TP 0.7 out of 3 GT: precision 1, 1/2, 2/3; recall 1/3, 1/3, 2/3
    c = precision_recall_curves(tp=[1, 0, 1], conf=[0.9, 0.8, 0.7], pred_classes=[0, 0, 0],
                                num_gt=[3])
    assert c["precision"][0, np.searchsorted(x, 0.95)] == 1.0
    assert c["recall"][0, np.searchsorted(x, 0.5)] == pytest.approx(2 / 3)
    assert c["precision"][0, np.searchsorted(x, 0.5)] == pytest.approx(2 / 3)
    # 101-point AP: recall 0..1/3 -> 1 (34 points), 1/3..2/3 -> 2/3 (33 points), rest 0
    assert c["ap"][0] == pytest.approx((34 * 1 + 33 * 2 / 3) / 101)
    assert c["f1"].max() == pytest.approx(2 / 3)


def test_one_perfect_prediction():
    curves, matrix = detection_metrics([image([BOX], [0], [BOX], [0.9], [0])], num_classes=1)
    assert curves["ap"].tolist() == [1.0]
    assert best_f1_summary(curves) == {"P": 1.0, "R": 1.0, "F1": 1.0, "conf_F1": 0.0,
                                       "mAP50": 1.0}
    np.testing.assert_array_equal(matrix, [[1, 0], [0, 0]])


def test_false_positive_ranked_first():
    # FP (0.9) then TP (0.6), one ground truth: precision 0, 1/2; recall 0, 1. The monotone
    # envelope is 1/2 at every recall, so AP = 1/2.
    curves, matrix = detection_metrics(
        [image([BOX], [0], [ELSEWHERE, BOX], [0.9, 0.6], [0, 0])], num_classes=1)
    assert curves["ap"][0] == pytest.approx(0.5, abs=1e-12)
    x = curves["x"]
    assert curves["precision"][0, np.searchsorted(x, 0.7)] == 0.0  # only the FP kept
    assert curves["recall"][0, np.searchsorted(x, 0.7)] == 0.0
    np.testing.assert_allclose(curves["pr"][0, :-1], 0.5)
    # best mean F1: both kept (P 1/2, R 1, F1 2/3) from threshold 0 up to 0.6
    summary = best_f1_summary(curves)
    assert summary["P"] == pytest.approx(0.5) and summary["R"] == pytest.approx(1.0)
    assert summary["F1"] == pytest.approx(2 / 3) and summary["conf_F1"] == 0.0
    np.testing.assert_array_equal(matrix, [[1, 1], [0, 0]])  # 1 right, 1 false positive


def test_best_f1_summary_cuts_low_scores():
    # class 0: TP 0.9, FP 0.3; class 1: TP 0.8. The mean F1 is best (1) from the first
    # threshold above 0.3 on the grid x = k / 999, k = 300, up to 0.8.
    curves = precision_recall_curves(tp=[1, 0, 1], conf=[0.9, 0.3, 0.8],
                                     pred_classes=[0, 0, 1], num_gt=[1, 1])
    assert curves["x"][299] < 0.3 < curves["x"][300]
    assert curves["f1"][0, 299] == pytest.approx(2 / 3)
    assert best_f1_summary(curves) == {"P": 1.0, "R": 1.0, "F1": 1.0,
                                       "conf_F1": curves["x"][300], "mAP50": 1.0}


def test_ap_uses_the_precision_envelope():
    # TP, FP, TP, TP out of 3 ground truth: precision 1, 1/2, 2/3, 3/4; recall 1/3, 1/3, 2/3,
    # 1. Envelope (best precision at this recall or more): 1, 3/4, 3/4, 3/4. Of the 101 recall
    # points 0, 0.01, .., 1: 34 up to 1/3 at 1, the other 67 at 3/4 (without the envelope,
    # those up to 2/3 would take 2/3).
    c = precision_recall_curves(tp=[1, 0, 1, 1], conf=[0.9, 0.8, 0.7, 0.6],
                                pred_classes=[0, 0, 0, 0], num_gt=[3])
    assert c["ap"][0] == pytest.approx((34 * 1 + 67 * 0.75) / 101, abs=1e-12)
    # the input order does not matter: sorted by score
    shuffled = precision_recall_curves(tp=[1, 1, 0, 1], conf=[0.7, 0.6, 0.8, 0.9],
                                       pred_classes=[0, 0, 0, 0], num_gt=[3])
    assert shuffled["ap"][0] == c["ap"][0]


def test_two_class_confusion_matrix_swapped_classes_and_duplicate():
    # GT a (class 0), b (class 1); detections: a called 1, b called 0, and a second,
    # slightly smaller box on a called 1. One-to-one: the duplicate is a false positive.
    a, b = [0, 0, 10, 10], [20, 20, 30, 30]
    entry = image([a, b], [0, 1], [a, b, [0, 0, 10, 9]], [0.9, 0.8, 0.7], [1, 0, 1])
    curves, matrix = detection_metrics([entry], num_classes=2)
    expected = [[0, 1, 0],   # predicted 0: true 1 (b)
                [1, 0, 1],   # predicted 1: true 0 (a), background (duplicate)
                [0, 0, 0]]   # nothing missed
    np.testing.assert_array_equal(matrix, expected)
    np.testing.assert_array_equal(confusion_matrix(*entry[:2], entry[2], entry[4], entry[3],
                                                   num_classes=2), expected)
    assert curves["ap"].tolist() == [0.0, 0.0]  # on the curves classes must agree


def test_images_without_detections_count():
    # two images with one ground truth each; only the first has its (right) detection
    curves, matrix = detection_metrics(
        [image([BOX], [0], [BOX], [0.9], [0]), image([BOX], [0], [], [], [])], num_classes=1)
    assert curves["ap"][0] == pytest.approx(51 / 101, abs=1e-12)  # recall points 0 .. 0.5
    summary = best_f1_summary(curves)
    assert summary["P"] == 1.0 and summary["R"] == 0.5
    np.testing.assert_array_equal(matrix, [[1, 0], [1, 0]])  # one missed
    # no detections at all: AP 0, and no image at all: no ground truth, NaN
    curves, _ = detection_metrics([image([BOX], [0], [], [], [])], num_classes=1)
    assert curves["ap"].tolist() == [0.0]
    curves, matrix = detection_metrics([], num_classes=2)
    assert np.isnan(curves["ap"]).all() and matrix.sum() == 0
    assert all(np.isnan(v) for v in best_f1_summary(curves).values())


def test_ground_truth_of_converts_and_skips_crowd():
    record = {"annotations": [
        {"bbox": [1, 2, 3, 4], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 2},
        {"bbox": [0, 0, 5, 5], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0, "iscrowd": 1},
        {"bbox": [5, 6, 7, 8], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 1, "iscrowd": 0},
    ]}
    boxes, classes = ground_truth_of(record)
    assert boxes.dtype == np.float64 and classes.dtype == np.int64
    np.testing.assert_array_equal(boxes, [[1, 2, 4, 6], [5, 6, 7, 8]])
    assert classes.tolist() == [2, 1]
    boxes, classes = ground_truth_of({})
    assert boxes.shape == (0, 4) and classes.shape == (0,)


def test_ap50_equals_cocoeval_without_crowd():
    """Matching by score and the 101-point AP are COCOeval's: per-class AP50 equal to
    pycocotools' on a set without crowd boxes and under 100 detections per image."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    num_classes = 3
    dicts, detections = synthetic_detection_set(num_images=12, num_classes=num_classes,
                                                dets_per_image=25, crowd_fraction=0.0, seed=3)
    curves, _ = detection_metrics(
        [(*ground_truth_of(d), detections[d["image_id"]]["boxes"].astype(np.float64),
          detections[d["image_id"]]["scores"].astype(np.float64),
          detections[d["image_id"]]["classes"]) for d in dicts], num_classes)

    gt, results = to_coco_json(dicts, detections, num_classes)
    coco_gt = COCO()
    coco_gt.dataset = copy.deepcopy(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
    # precision (T, R, K, A, M): IoU 0.5, all recall points, each class, area "all", 100 dets
    expected = ev.eval["precision"][0, :, :, 0, 2].mean(axis=0)
    assert 0.2 < expected.min() and expected.max() < 0.95  # a non-trivial case
    np.testing.assert_allclose(curves["ap"], expected, rtol=0, atol=1e-9)
