"""Test-time flips (TEST.YOLOV7.FLIPS): the views of the dihedral group and the mapping of
their boxes back to the image, checked on a marked pixel; the model merges every view."""
from pathlib import Path

import pytest
import torch

from yolov7_d2.config import load_config
from yolov7_d2.modeling.test_time_flips import flip_images, flip_views, unflip_boxes

from detectron2.modeling import build_model

ROOT = Path(__file__).resolve().parents[1]


def test_views_are_the_combinations_of_the_named_flips():
    assert flip_views(()) == ((False, False, False),)
    assert flip_views(("lr",)) == ((False, False, False), (True, False, False))
    views = flip_views(("lr", "ud", "transpose"))
    assert len(set(views)) == 8 and views[0] == (False, False, False)
    with pytest.raises(ValueError, match="unknown test-time flips.*'rot'"):
        flip_views(("lr", "rot"))


@pytest.mark.parametrize("view", flip_views(("lr", "ud", "transpose")))
def test_a_box_on_a_flipped_view_maps_back_to_the_marked_pixel(view):
    """A 1-px box around the one marked pixel of each view comes back to the pixel of the
    original (non-square) image, with its width and height back in place."""
    height, width, (y, x) = 6, 10, (1, 7)
    image = torch.zeros(1, 1, height, width)
    image[0, 0, y, x] = 1.0
    flipped = flip_images(image, view)
    assert flipped.shape[-2:] == ((width, height) if view[2] else (height, width))
    fy, fx = divmod(int(flipped.flatten().argmax()), flipped.shape[-1])
    # a box 1 px wide, 3 px high, centred on the marked pixel of the view
    box = torch.tensor([[fx + 0.5, fy + 0.5, 1.0, 3.0]])
    back = unflip_boxes(box, view, (height, width))
    expected_wh = [3.0, 1.0] if view[2] else [1.0, 3.0]
    assert back.tolist() == [[x + 0.5, y + 0.5, *expected_wh]]


def test_model_merges_every_view_before_nms(monkeypatch):
    """With all three flips, inference runs the 7 flipped views besides the plain one and
    hands 8 times the rows to NMS; the detections stay inside the (non-square) image."""
    cfg = load_config(str(ROOT / "configs/coco/yolov7-tiny.yaml"),
                      ["MODEL.DEVICE", "cpu", "MODEL.YOLOV7.WIDTH_MULTIPLE", "0.25",
                       "MODEL.YOLOV7.CONF_THRESH_TEST", "1e-7",
                       "TEST.YOLOV7.FLIPS", "('lr', 'ud', 'transpose')"])
    model = build_model(cfg).eval()
    rows = []
    single = model._inference_single_image
    monkeypatch.setattr(model, "_inference_single_image",
                        lambda decoded, size: rows.append(len(decoded)) or single(decoded, size))
    image = torch.rand(3, 64, 96) * 255
    with torch.no_grad():
        (out,) = model([{"image": image, "height": 64, "width": 96}])
        plain = sum(a.numel() // 2 * (64 // s) * (96 // s)
                    for a, s in zip(model.anchors, model.strides))
    assert rows == [8 * plain]
    boxes = out["instances"].pred_boxes.tensor
    assert len(boxes) > 0
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 96).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= 64).all()
