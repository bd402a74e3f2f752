"""Test-time views (TEST.YOLOV7.FLIPS, SCALES): the views of the dihedral group, the scaled
views, the mapping of their boxes back to the image (checked on a marked pixel and against the
official augmented inference); the model merges every view."""
from pathlib import Path

import pytest
import torch

from yolov7_d2.config import load_config
from yolov7_d2.modeling.test_time_views import (
    check_scales,
    flip_images,
    flip_views,
    scale_images,
    unflip_boxes,
    view_predictions,
)

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


def test_scales_must_be_positive_and_not_one():
    assert check_scales([0.83, 0.67]) == (0.83, 0.67)
    for bad in (0.0, -0.5, 1.0):
        with pytest.raises(ValueError, match=f"test-time scale {bad} must be positive and not 1"):
            check_scales((0.83, bad))


@pytest.mark.parametrize("scale", [0.83, 0.67, 0.5, 1.25])
def test_scaled_view_equals_official_scale_img(scale):
    """The resize and the grey padding to the stride are official ``scale_img``'s."""
    official = pytest.importorskip("sas_yolov7.utils.torch_utils")
    images = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    ours = scale_images(images, scale, 32, 0.447)
    assert torch.equal(ours, official.scale_img(images, scale, gs=32))


def test_a_box_on_a_scaled_view_maps_back_by_the_scale():
    """A marked pixel of a 64 x 96 image lands at about scale x its place on the 0.5 view,
    which is 32 x 48 padded with grey to 32 x 64; that place divided by the scale is the pixel."""
    image = torch.zeros(1, 1, 64, 96)
    image[0, 0, 20:24, 60:64] = 1.0  # a 4 x 4 square: the bilinear 0.5 view keeps 2 x 2 of it
    scaled = scale_images(image, 0.5, 32, pad_value=-1.0)
    assert scaled.shape[-2:] == (32, 64)
    assert (scaled[..., :, 48:] == -1.0).all() and (scaled[..., :, :48] >= 0).all()
    ys, xs = torch.nonzero(scaled[0, 0] > 0.5, as_tuple=True)
    centre = torch.tensor([[xs.float().mean() + 0.5, ys.float().mean() + 0.5, 2.0, 2.0]])
    assert (centre / 0.5).tolist() == [[62.0, 22.0, 4.0, 4.0]]


def test_model_runs_every_flip_view_at_every_scale(monkeypatch):
    """FLIPS ("lr",) and SCALES (0.5,): the flipped view at scale 1, both views at 0.5 (a
    32 x 64 canvas for the 64 x 96 image) join the plain forward's rows before NMS."""
    cfg = load_config(str(ROOT / "configs/coco/yolov7-tiny.yaml"),
                      ["MODEL.DEVICE", "cpu", "MODEL.YOLOV7.WIDTH_MULTIPLE", "0.25",
                       "MODEL.YOLOV7.CONF_THRESH_TEST", "1e-7",
                       "TEST.YOLOV7.FLIPS", "('lr',)", "TEST.YOLOV7.SCALES", "(0.5,)"])
    model = build_model(cfg).eval()
    rows = []
    single = model._inference_single_image
    monkeypatch.setattr(model, "_inference_single_image",
                        lambda decoded, size: rows.append(len(decoded)) or single(decoded, size))
    with torch.no_grad():
        (out,) = model([{"image": torch.rand(3, 64, 96) * 255, "height": 64, "width": 96}])

    def rows_at(height, width):
        return sum(a.numel() // 2 * (height // s) * (width // s)
                   for a, s in zip(model.anchors, model.strides))

    assert rows == [2 * rows_at(64, 96) + 2 * rows_at(32, 64)]
    boxes = out["instances"].pred_boxes.tensor
    assert len(boxes) > 0 and (boxes[:, 2] <= 96).all() and (boxes[:, 3] <= 64).all()


def cell_detector(images):
    """A stand-in for the model that reads its input: per 8 x 8 cell of (N, C, H, W) images, a
    cxcywh box on the cell and the cell's mean of each channel as objectness and class scores
    -> (N, H / 8 * W / 8, 4 + C)."""
    n, c, height, width = images.shape
    ys, xs = torch.meshgrid(torch.arange(height // 8), torch.arange(width // 8), indexing="ij")
    boxes = torch.stack([xs * 8 + 4, ys * 8 + 4, xs * 0 + 8, ys * 0 + 8], -1).float()
    means = torch.nn.functional.avg_pool2d(images, 8).flatten(2).transpose(1, 2)
    return torch.cat([boxes.view(1, -1, 4).expand(n, -1, -1), means], dim=2)


def test_views_equal_official_augmented_inference():
    """Official ``Model.forward(augment=True)`` runs the image at scale 1, left-right flipped
    at 0.83 and as it is at 0.67, then de-scales and de-flips the rows; ours (FLIPS ("lr",),
    SCALES (0.83, 0.67)) runs those views among others and gives the same rows for them.
    Both run :func:`cell_detector`, whose rows follow the image's content."""
    official_yolo = pytest.importorskip("sas_yolov7.models.yolo")
    cfg = Path(official_yolo.__file__).resolve().parents[1] / "cfg/training/yolov7-tiny.yaml"
    official = official_yolo.Model(str(cfg), ch=3, nc=2).eval()
    official.forward_once = lambda x, profile=False: (cell_detector(x), None)
    images = torch.rand(2, 3, 160, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = official(images, augment=True)[0]
        ours = view_predictions(cell_detector, images, flip_views(("lr",)), (0.83, 0.67),
                                stride=32, pad_value=0.447)
    # ours: lr at 1; identity, lr at 0.83 (a 160 x 192 canvas); identity, lr at 0.67 (128 x 160)
    r1, r83, r67 = (h // 8 * w // 8 for h, w in ((160, 224), (160, 192), (128, 160)))
    assert ours.shape[1] == r1 + 2 * r83 + 2 * r67
    expected = torch.cat([cell_detector(images), ours[:, r1 + r83:r1 + 2 * r83],
                          ours[:, r1 + 2 * r83:r1 + 2 * r83 + r67]], dim=1)
    assert torch.allclose(reference, expected, atol=1e-5)
