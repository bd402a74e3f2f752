"""The official evaluation geometry (TEST.YOLOV7.LETTERBOX): on real photos of five aspect
ratios, the letterboxed images equal, pixel for pixel, those of the official
``LoadImagesAndLabels(rect=True, pad=0.5)`` (PyPI sas-yolov7, a test oracle), batch shapes
included; predictions on the canvas come back at the original size."""
import cv2
import numpy as np
import pytest
import torch

from yolov7_d2.data import YOLOv7LetterboxTestMapper
from yolov7_d2.data.eval_letterbox import rect_batch_shapes
from yolov7_d2.modeling.meta_arch import _on_resized_image

from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances

from photos import photo
from scripts import load_script

official_datasets = pytest.importorskip("sas_yolov7.utils.datasets")


@pytest.fixture
def photo_files(tmp_path):
    """Five real photos, h/w 0.665 to 2 (one square), as PNG, with empty label files."""
    images = {"astronaut": photo("astronaut"), "coffee": photo("coffee"),
              "chelsea": photo("chelsea"), "coffee_portrait": photo("coffee").transpose(1, 0, 2),
              "chelsea_tall": np.ascontiguousarray(photo("chelsea")[:, :150])}
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    paths = {}
    for name, bgr in images.items():
        paths[name] = str(tmp_path / "images" / f"{name}.png")
        cv2.imwrite(paths[name], np.ascontiguousarray(bgr))
        (tmp_path / "labels" / f"{name}.txt").write_text("")
    return tmp_path, paths


@pytest.mark.parametrize("image_size", [640, 320])
def test_letterboxed_images_equal_the_official_ones(photo_files, monkeypatch, image_size):
    root, paths = photo_files
    # sas-yolov7's cache_labels sets a progress text on the zip it iterates (tqdm removed)
    zip_with_text = load_script("tools/benchmark.py").ZipWithProgressText
    monkeypatch.setattr(official_datasets, "zip", zip_with_text, raising=False)
    official = official_datasets.LoadImagesAndLabels(
        str(root / "images"), image_size, batch_size=2, augment=False, rect=True, stride=32,
        pad=0.5)
    mapper = YOLOv7LetterboxTestMapper(image_size=image_size, stride=32, image_format="RGB",
                                       batch_size=2)
    dicts = []
    for i, path in enumerate(paths.values()):
        h, w = cv2.imread(path).shape[:2]
        dicts.append({"file_name": path, "image_id": i, "height": h, "width": w})
    ours = {d["file_name"]: d for d in mapper.with_shapes(dicts)}
    shapes = set()
    for index, path in enumerate(official.img_files):
        expected_shape = tuple(int(v) for v in official.batch_shapes[official.batch[index]])
        assert ours[path]["letterbox_shape"] == expected_shape, path
        shapes.add(expected_shape)
        image, _, _, _ = official[index]  # (3, H, W) RGB uint8 tensor
        mapped = mapper(ours[path])
        assert mapped["image"].shape == image.shape, path
        assert torch.equal(mapped["image"], image), path
    assert len(shapes) == 3  # the three batches: wide, square to portrait, tall
    if image_size == 640:  # the example: a 4:3 photo at 640 -> 672 wide, 512 high
        assert rect_batch_shapes([(480, 640)], 640, 32) == [(512, 672)]


def test_predictions_come_back_at_the_original_size(photo_files):
    """A box on the canvas (the official mapping of an original box: times the resize ratio,
    plus the offset) comes back to the original box."""
    _, paths = photo_files
    mapper = YOLOv7LetterboxTestMapper(image_size=640, stride=32, image_format="RGB")
    for path in paths.values():
        h0, w0 = cv2.imread(path).shape[:2]
        mapped = mapper({"file_name": path, "image_id": 0, "height": h0, "width": w0})
        left, top, h, w = mapped["letterbox"]
        original = torch.tensor([[0.1 * w0, 0.2 * h0, 0.7 * w0, 0.9 * h0]])
        ratio = torch.tensor([w / w0, h / h0, w / w0, h / h0])
        canvas = Instances(tuple(mapped["image"].shape[1:]))
        canvas.pred_boxes = Boxes(original * ratio + torch.tensor([left, top, left, top]))
        canvas.scores, canvas.pred_classes = torch.ones(1), torch.zeros(1, dtype=torch.long)
        back = detector_postprocess(_on_resized_image(canvas, mapped["letterbox"]), h0, w0)
        assert back.image_size == (h0, w0)
        torch.testing.assert_close(back.pred_boxes.tensor, original, atol=1e-3, rtol=0)
