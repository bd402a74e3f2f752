"""YOLOv7 label assignment: hand-made cases with known positives, candidate cells against the
official find_3_positive / find_5_positive (sas-yolov7, a test oracle only), chunking, zero GT
and the CUDA-OOM fallback."""
import math
from types import SimpleNamespace

import pytest
import torch

from yolov7_d2.modeling import assigner as assigner_module
from yolov7_d2.modeling.assigner import YOLOv7Assigner, candidate_cells
from yolov7_d2.modeling.loss import pad_ground_truth

STRIDE = 8


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def one_level_maps(n=1, grid=8, anchors=1, classes=2):
    """Raw maps predicting tiny far-away boxes (IoU 0 with anything) with equal scores."""
    raw = torch.zeros(n, anchors, grid, grid, 5 + classes)
    raw[..., 0:2] = -8.0  # centre at the cell's top-left corner minus half a cell
    raw[..., 2:4] = -8.0  # (2 sigmoid)^2 ~ 1e-6 of the anchor: no overlap
    return raw


def predict_box(raw, a, gj, gi, box, anchor, image=0):
    """Set the logits of cell (a, gj, gi) so that it decodes to ``box`` (cx, cy, w, h) px."""
    cx, cy, w, h = box
    raw[image, a, gj, gi, 0] = logit((cx / STRIDE - gi + 0.5) / 2)
    raw[image, a, gj, gi, 1] = logit((cy / STRIDE - gj + 0.5) / 2)
    raw[image, a, gj, gi, 2] = logit(math.sqrt(w / anchor[0]) / 2)
    raw[image, a, gj, gi, 3] = logit(math.sqrt(h / anchor[1]) / 2)


def gt(*boxes, classes=None):
    """One image's GT: xyxy boxes from (cx, cy, w, h)."""
    b = torch.tensor([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2] for cx, cy, w, h in boxes])
    c = torch.tensor(classes or [0] * len(boxes))
    return b, c


def positives(assignment, level=0, image=0):
    """{(anchor, gj, gi): [gt indices]} of one image and level (with duplicates)."""
    slots = assignment.levels[level]
    found = {}
    p = slots.positive[image]
    for a, j, i, g in zip(slots.anchor[p].tolist(), slots.gj[image, p].tolist(),
                          slots.gi[image, p].tolist(), slots.gt_index[image, p].tolist()):
        found.setdefault((a, j, i), []).append(g)
    return found


def cells(valid, gj, gi, image=0, anchor=0, gt_row=0):
    v = valid[image, :, anchor, gt_row]
    rows, cols = gj[image, :, anchor, gt_row][v], gi[image, :, anchor, gt_row][v]
    return sorted(zip(rows.tolist(), cols.tolist()))


def test_candidate_cells_fine_and_coarse_and_anchor_filter():
    # Centre (21, 43) px = grid (2.625, 5.375): cell (row 5, col 2); nearer neighbours are the
    # right one (x frac > 0.5) and the one above (y frac < 0.5).
    boxes, _ = gt((21.0, 43.0, 16.0, 16.0))
    mask = torch.ones(1, 1, dtype=torch.bool)
    anchors = torch.tensor([[16.0, 16.0], [100.0, 100.0], [3.0, 3.0]])  # ratios 1, 6.25, 5.3
    valid, gj, gi = candidate_cells(boxes[None], mask, anchors, STRIDE, (8, 8), 4.0, 0.5)
    assert valid.shape == (1, 5, 3, 1)
    assert cells(valid, gj, gi) == [(4, 2), (5, 2), (5, 3)]
    assert not valid[0, :, 1:].any()  # the mismatched anchors are dropped
    valid, gj, gi = candidate_cells(boxes[None], mask, anchors, STRIDE, (8, 8), 4.0, 1.0)
    assert cells(valid, gj, gi) == [(4, 2), (5, 1), (5, 2), (5, 3), (6, 2)]
    # At the grid border (centre in cell (0, 7)): no neighbour beyond it, indices in the grid.
    boxes, _ = gt((62.0, 3.0, 16.0, 16.0))
    valid, gj, gi = candidate_cells(boxes[None], mask, anchors, STRIDE, (8, 8), 4.0, 1.0)
    assert cells(valid, gj, gi) == [(0, 6), (0, 7), (1, 7)]
    # Padding rows never give candidates.
    assert not candidate_cells(boxes[None], ~mask, anchors, STRIDE, (8, 8), 4.0, 1.0)[0].any()


official_loss = pytest.importorskip("sas_yolov7.utils.loss")


@pytest.mark.parametrize("offset, finder", [(0.5, "find_3_positive"), (1.0, "find_5_positive")])
def test_candidate_cells_equal_official_in_order(offset, finder):
    size, strides = 256, [8, 16, 32]
    anchors = torch.tensor([[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119],
                            [116, 90, 156, 198, 373, 326]], dtype=torch.float32).view(3, 3, 2)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(40, 2, generator=g) * size
    wh = torch.rand(40, 2, generator=g) * 120 + 4
    border = torch.tensor([[48, 48, 80, 80], [0, 0, 16, 16], [200, 180, 256, 256],
                           [10, 10, 30, 30], [0, 0, 256, 256]], dtype=torch.float32)
    boxes = [torch.cat([torch.cat([xy - wh / 2, xy + wh / 2], 1).clamp(0, size)[:30], border]),
             torch.cat([xy - wh / 2, xy + wh / 2], 1).clamp(0, size)[30:]]
    stride_t = torch.tensor(strides, dtype=torch.float32)
    det = SimpleNamespace(na=3, nl=3, anchors=anchors / stride_t[:, None, None], stride=stride_t)
    loss = official_loss.ComputeLossAuxOTA.__new__(official_loss.ComputeLossAuxOTA)
    loss.na, loss.nl, loss.anchors, loss.hyp = 3, 3, det.anchors, {"anchor_t": 4.0}
    targets = torch.cat([  # official rows: image, class, cx, cy, w, h normalised
        torch.cat([torch.full((len(b), 1), float(i)), torch.zeros(len(b), 1),
                   (b[:, :2] + b[:, 2:]) / 2 / size, (b[:, 2:] - b[:, :2]) / size], 1)
        for i, b in enumerate(boxes)])
    p = [torch.zeros(2, 3, size // s, size // s, 6) for s in strides]
    indices, _ = getattr(loss, finder)(p, targets)

    padded, _, mask = pad_ground_truth(boxes, [torch.zeros(len(b)) for b in boxes], "cpu")
    for level, (b, a, gj, gi) in enumerate(indices):
        valid, rows, cols = candidate_cells(padded, mask, anchors[level], strides[level],
                                            p[level].shape[2:4], 4.0, offset)
        anchor_ids = torch.arange(3).view(1, 3, 1).expand_as(valid[0])
        for image in range(2):
            v = valid[image]
            ours = torch.stack([anchor_ids[v], rows[image][v], cols[image][v]], 1)
            theirs = torch.stack([a[b == image], gj[b == image], gi[b == image]], 1)
            assert torch.equal(ours, theirs)  # same cells in the same order (for SimOTA ties)


def test_simota_dynamic_k_and_cheapest_candidates():
    anchor = (16.0, 16.0)
    raw = one_level_maps()
    boxes, classes = gt((21.0, 43.0, 16.0, 16.0))  # candidates (5, 2), (5, 3), (4, 2)
    # Same centre and height, narrower: IoU = width ratio = 0.9, 0.8, 0.7 -> k = int(2.4) = 2.
    for (gj, gi), iou in zip([(5, 2), (5, 3), (4, 2)], [0.7, 0.9, 0.8]):
        predict_box(raw, 0, gj, gi, (21.0, 43.0, 16.0 * iou, 16.0), anchor)
    b, c, m = pad_ground_truth([boxes], [classes], "cpu")
    result = YOLOv7Assigner(topk=10)([raw], b, c, m, torch.tensor([[anchor]]), [STRIDE])
    assert result.dynamic_k.tolist() == [[2]]
    assert positives(result) == {(0, 5, 3): [0], (0, 4, 2): [0]}


def test_simota_single_good_candidate_and_conflict_goes_to_cheapest_gt():
    anchor = (16.0, 16.0)
    raw = one_level_maps(classes=2)
    # Two GTs of different classes sharing the candidate cell (5, 2); only it overlaps them.
    boxes, classes = gt((21.0, 43.0, 16.0, 16.0), (19.0, 42.0, 14.0, 14.0), classes=[0, 1])
    # IoU 0.9 with GT 0. Cell (5, 2) is a candidate twice (found once per GT), so each GT's
    # top IoUs sum to < 2 -> dynamic k 1.
    predict_box(raw, 0, 5, 2, (21.0, 43.0, 0.9 * 16.0, 16.0), anchor)
    raw[0, 0, 5, 2, 5:] = torch.tensor([4.0, -4.0])  # confident in class 0: cheaper for GT 0
    b, c, m = pad_ground_truth([boxes], [classes], "cpu")
    result = YOLOv7Assigner(topk=10)([raw], b, c, m, torch.tensor([[anchor]]), [STRIDE])
    assert result.dynamic_k.tolist() == [[1, 1]]
    # Both GTs claim the first copy (equal costs: the earlier slot wins); claimed twice, it
    # goes to the GT of lowest cost.
    assert positives(result) == {(0, 5, 2): [0]}
    raw[0, 0, 5, 2, 5:] = torch.tensor([-4.0, 4.0])
    result = YOLOv7Assigner(topk=10)([raw], b, c, m, torch.tensor([[anchor]]), [STRIDE])
    assert positives(result) == {(0, 5, 2): [1]}


def _dense_case(n=2, m=60, seed=0, classes=4):
    g = torch.Generator().manual_seed(seed)
    strides, size = [8, 16, 32], 128
    maps = [torch.randn(n, 3, size // s, size // s, 5 + classes, generator=g) for s in strides]
    boxes, labels = [], []
    for count in [m, m // 3][:n]:
        xy = torch.rand(count, 2, generator=g) * size
        wh = torch.rand(count, 2, generator=g) * 60 + 4
        boxes.append(torch.cat([xy - wh / 2, xy + wh / 2], 1))
        labels.append(torch.randint(0, classes, (count,), generator=g))
    anchors = torch.tensor([[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119],
                            [116, 90, 156, 198, 373, 326]], dtype=torch.float32).view(3, 3, 2)
    b, c, mask = pad_ground_truth(boxes, labels, "cpu")
    return maps, b, c, mask, anchors, strides


@pytest.mark.parametrize("offset, topk", [(0.5, 10), (1.0, 20)])
def test_chunked_assignment_equals_unchunked(offset, topk):
    maps, b, c, mask, anchors, strides = _dense_case()
    results = [YOLOv7Assigner(offset=offset, topk=topk, gt_chunk=chunk)(
        maps, b, c, mask, anchors, strides) for chunk in (1000, 7, 1)]
    reference = results[0]
    assert reference.dynamic_k[mask].min() >= 1 and not reference.dynamic_k[~mask].any()
    assert sum(int(s.positive.sum()) for s in reference.levels) > 60
    for other in results[1:]:
        assert torch.equal(other.dynamic_k, reference.dynamic_k)
        for x, y in zip(other.levels, reference.levels):
            assert torch.equal(x.positive, y.positive) and torch.equal(x.gt_index, y.gt_index)
    # The second image has fewer GTs: no positive is matched to one of its padding rows.
    for slots in reference.levels:
        assert (slots.gt_index[1][slots.positive[1]] < mask[1].sum()).all()


@pytest.mark.parametrize("offset, topk", [(0.5, 10), (1.0, 20)])
def test_matching_over_the_candidates_equals_matching_over_all_slots(offset, topk,
                                                                     monkeypatch):
    """SimOTA sees only the slots that hold a candidate; with every slot (empty ones
    included, as before the compaction) the assignment is the same, ties included: the
    dense case repeats GT boxes, so many cells are candidates of several GTs at equal cost."""
    maps, b, c, mask, anchors, strides = _dense_case()
    b[:, 1::3], c[:, 1::3] = b[:, ::3][:, :b[:, 1::3].shape[1]], c[:, ::3][:, :c[:, 1::3].shape[1]]
    compacted = YOLOv7Assigner(offset=offset, topk=topk)(maps, b, c, mask, anchors, strides)
    monkeypatch.setattr(assigner_module, "_candidate_order",
                        lambda valid: torch.arange(valid.shape[1]).expand(valid.shape[0], -1))
    every_slot = YOLOv7Assigner(offset=offset, topk=topk)(maps, b, c, mask, anchors, strides)
    assert torch.equal(compacted.dynamic_k, every_slot.dynamic_k)
    assert sum(int(s.positive.sum()) for s in every_slot.levels) > 60
    for x, y in zip(compacted.levels, every_slot.levels):
        assert torch.equal(x.positive, y.positive) and torch.equal(x.gt_index, y.gt_index)


def test_zero_ground_truth_image_and_batch():
    maps, b, c, mask, anchors, strides = _dense_case()
    mask[1] = False  # the second image without GT
    result = YOLOv7Assigner()(maps, b, c, mask, anchors, strides)
    assert not any(s.positive[1].any() for s in result.levels)
    assert any(s.positive[0].any() for s in result.levels)
    empty = YOLOv7Assigner()(maps, b[:, :0], c[:, :0], mask[:, :0], anchors, strides)
    assert empty.dynamic_k.shape == (2, 0)
    for slots in empty.levels:
        assert slots.positive.shape == (2, 0) and slots.positive.device == maps[0].device


def test_cuda_oom_in_matching_retries_then_falls_back(monkeypatch):
    maps, b, c, mask, anchors, strides = _dense_case(m=10)
    expected = YOLOv7Assigner()(maps, b, c, mask, anchors, strides)
    real, calls = assigner_module._simota, []

    def flaky(*args):
        calls.append(1)
        if len(calls) < 3:  # detectron2 retries once as is, then with the inputs on the CPU
            raise RuntimeError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return real(*args)

    monkeypatch.setattr(assigner_module, "_simota", flaky)
    result = YOLOv7Assigner()(maps, b, c, mask, anchors, strides)
    assert len(calls) == 3
    for x, y in zip(result.levels, expected.levels):
        assert torch.equal(x.positive, y.positive) and torch.equal(x.gt_index, y.gt_index)


def test_assigner_needs_no_gradients():
    maps, b, c, mask, anchors, strides = _dense_case(m=5)
    maps = [m.requires_grad_() for m in maps]
    result = YOLOv7Assigner()(maps, b, c, mask, anchors, strides)
    assert not any(t.requires_grad for s in result.levels for t in s)
