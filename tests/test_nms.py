"""Thresholds, class-wise NMS and merge NMS of :func:`postprocess_single_image` against the
official ``non_max_suppression`` (the installed sas-yolov7) and hand-computed boxes."""
import inspect
import textwrap

import pytest
import torch

from yolov7_d2.modeling.meta_arch import merged_boxes, postprocess_single_image

official_general = pytest.importorskip("sas_yolov7.utils.general")


def official_nms(merge: bool):
    """The installed official ``non_max_suppression``; with ``merge``, its merge NMS switched
    on (a local constant there) and kept boxes without a redundant candidate kept, as ours."""
    source = textwrap.dedent(inspect.getsource(official_general.non_max_suppression))
    if merge:
        for old, new in (("merge = False", "merge = True"),
                         ("redundant = True", "redundant = False")):
            assert old in source, old
            source = source.replace(old, new)
    namespace = dict(vars(official_general))
    exec(source, namespace)
    return namespace["non_max_suppression"]


def crowded_predictions(n: int = 600, num_classes: int = 2, seed: int = 0) -> torch.Tensor:
    """(1, n, 5 + K) decoded rows (cx, cy, w, h in pixels, objectness, class probabilities) of
    boxes crowded into a 120 px square, so that many overlap."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(n, 2, generator=g) * 120
    sizes = 8 + torch.rand(n, 2, generator=g) * 30
    probs = torch.rand(n, 1 + num_classes, generator=g)
    return torch.cat([centres, sizes, probs], dim=1)[None]


@pytest.mark.parametrize("merge_iou", [0.0, 0.5])
def test_nms_and_merge_nms_equal_official(merge_iou):
    decoded = crowded_predictions()
    nms_iou = merge_iou or 0.45  # the official merge uses the NMS IoU
    want = official_nms(merge=merge_iou > 0)(decoded.clone(), conf_thres=0.001, iou_thres=nms_iou,
                                             multi_label=True)[0]
    got = postprocess_single_image(decoded[0], (160, 160), num_classes=2, conf_thresh=0.001,
                                   nms_thresh=nms_iou, merge_iou=merge_iou)
    assert len(got) == len(want) > 50
    torch.testing.assert_close(got.pred_boxes.tensor, want[:, :4], rtol=0, atol=1e-4)
    torch.testing.assert_close(got.scores, want[:, 4])
    assert torch.equal(got.pred_classes, want[:, 5].long())
    if merge_iou:  # the merge moved boxes: the test compares merged coordinates
        plain = postprocess_single_image(decoded[0], (160, 160), num_classes=2,
                                         conf_thresh=0.001, nms_thresh=nms_iou)
        assert (plain.pred_boxes.tensor - got.pred_boxes.tensor).abs().max() > 1.0


def test_merged_boxes_are_score_weighted_means_within_a_class():
    boxes = torch.tensor([[0.0, 0, 10, 10],     # kept, class 0
                          [1.0, 0, 11, 10],     # IoU 0.82 with it, class 0: merged
                          [0.0, 1, 10, 11],     # IoU 0.82, class 1: another class, not merged
                          [5.0, 0, 15, 10],     # IoU 0.33: below the threshold, not merged
                          [50.0, 50, 60, 60]])  # kept, alone
    scores = torch.tensor([0.9, 0.3, 0.8, 0.7, 0.5])
    classes = torch.tensor([0, 0, 1, 0, 0])
    merged = merged_boxes(torch.tensor([0, 4]), boxes, scores, classes, iou_thresh=0.6)
    expected = torch.tensor([[(0.9 * 0 + 0.3 * 1) / 1.2, 0, (0.9 * 10 + 0.3 * 11) / 1.2, 10],
                             [50.0, 50, 60, 60]])
    torch.testing.assert_close(merged, expected)
    # a threshold above every overlap leaves the kept boxes as they are
    torch.testing.assert_close(merged_boxes(torch.tensor([0, 4]), boxes, scores, classes, 0.9),
                               boxes[[0, 4]])
