"""Official checkpoint conversion: exact output parity with the official model code.

The oracle is PyPI ``sas-yolov7`` (the official YOLOv7 model code, GPL-3.0), installed for the
tests only. Its models get random weights and random BatchNorm statistics, are pickled the
way the official train.py saves them, converted, and must give the same raw head outputs.
"""
import os
from pathlib import Path

import pytest
import torch

from yolov7_d2.checkpoint import CheckpointError, YOLOv7Checkpointer
from yolov7_d2.config import load_config
from yolov7_d2.convert import ConversionError, official_to_yolov7, read_official_checkpoint

from detectron2.modeling import build_model

from scripts import load_script

official_yolo = pytest.importorskip("sas_yolov7.models.yolo")
ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_CFG = Path(official_yolo.__file__).resolve().parents[1] / "cfg" / "training"


def _official_model(name: str, nc: int = 80):
    model = official_yolo.Model(str(OFFICIAL_CFG / f"{name}.yaml"), ch=3, nc=nc)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # non-trivial statistics catch mis-mapping
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


def _our_model(name: str, *opts):
    cfg = load_config(str(ROOT / "configs" / "coco" / f"{name}.yaml"),
                      ["MODEL.DEVICE", "cpu", *opts])
    return build_model(cfg)


def _save_official(model, path):
    # As official train.py: the whole (half-precision) model object is pickled.
    torch.save({"epoch": -1, "model": model.half(), "optimizer": None}, path)
    model.float()


@pytest.mark.parametrize("name, size", [("yolov7-tiny", 160), ("yolov7", 128), ("yolov7-w6", 128)])
def test_converted_weights_match_official_outputs(name, size, tmp_path):
    official = _official_model(name)
    path = tmp_path / "official.pt"
    _save_official(official, path)
    # The official layout (NCHW): training-mode BatchNorm in NHWC rounds otherwise (about
    # 1e-3 here); tests/test_model.py compares the two layouts.
    ours = _our_model(name, "MODEL.YOLOV7.CHANNELS_LAST", "False")
    ours.load_state_dict(official_to_yolov7(read_official_checkpoint(str(path)), ours))
    # The official checkpoint is fp16: compare against the same rounded weights.
    official.half().float()
    x = torch.rand(2, 3, size, size)
    official.eval(), ours.eval()
    with torch.no_grad():
        reference = official(x)[1]
        mine = ours.forward_raw(x)["lead"]
    assert len(reference) == len(mine)
    for a, b in zip(reference, mine):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() < 1e-4
    if name == "yolov7-w6":  # auxiliary head: training-mode forward returns lead + aux maps
        official.train(), ours.train()
        with torch.no_grad():
            reference = official(x)
            raw = ours.forward_raw(x)
        mine = raw["lead"] + raw["aux"]
        assert len(reference) == len(mine) == 8
        assert max((a - b).abs().max().item() for a, b in zip(reference, mine)) < 1e-4


def test_plain_state_dict_and_anchors_come_from_checkpoint(tmp_path):
    official = _official_model("yolov7-tiny")
    official.model[-1].anchor_grid.mul_(1.5)  # custom (autoanchor-like) anchors
    path = tmp_path / "state_dict.pt"
    torch.save(official.state_dict(), path)
    ours = _our_model("yolov7-tiny")
    converted = official_to_yolov7(read_official_checkpoint(str(path)), ours)
    expected = torch.tensor([[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119],
                             [116, 90, 156, 198, 373, 326]], dtype=torch.float32) * 1.5
    assert torch.allclose(converted["anchors"], expected.view(3, 3, 2))


def test_conversion_tool_writes_loadable_checkpoint(tmp_path):
    tool = load_script("tools/convert_official_weights.py")
    source, output = tmp_path / "official.pt", tmp_path / "converted.pth"
    _save_official(_official_model("yolov7-tiny"), source)
    assert tool.main(["--config-file", str(ROOT / "configs/coco/yolov7-tiny.yaml"),
                      str(source), str(output)]) == 0
    model = _our_model("yolov7-tiny")
    YOLOv7Checkpointer(model).load(str(output))
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))
    # A wrong class count fails at conversion, naming the key to fix.
    assert tool.main(["--config-file", str(ROOT / "configs/coco/yolov7-tiny.yaml"), str(source),
                      str(tmp_path / "bad.pth"), "--opts", "MODEL.YOLOV7.NUM_CLASSES", "3"]) == 1
    assert not (tmp_path / "bad.pth").exists()


def test_wrong_num_classes_is_named(tmp_path):
    path = tmp_path / "official.pt"
    _save_official(_official_model("yolov7-tiny", nc=20), path)
    with pytest.raises(ConversionError, match="NUM_CLASSES"):
        official_to_yolov7(read_official_checkpoint(str(path)), _our_model("yolov7-tiny"))


def test_wrong_scale_and_missing_aux_head_fail_loudly(tmp_path):
    path = tmp_path / "official.pt"
    _save_official(_official_model("yolov7-tiny"), path)
    with pytest.raises(ConversionError, match="does not fit"):
        official_to_yolov7(read_official_checkpoint(str(path)), _our_model("yolov7"))


def test_checkpointer_names_the_scale_of_an_official_checkpoint(tmp_path):
    """An official .pt of another scale as MODEL.WEIGHTS: both scales named, not a tensor
    listing; the model's own scale still loads."""
    path = tmp_path / "official.pt"
    _save_official(_official_model("yolov7-tiny"), path)
    with pytest.raises(CheckpointError, match=r"is a yolov7-tiny checkpoint, the config builds "
                                              r"yolov7 \(MODEL.YOLOV7.ARCH\)"):
        YOLOv7Checkpointer(_our_model("yolov7")).load(str(path))
    YOLOv7Checkpointer(_our_model("yolov7-tiny")).load(str(path))


def test_not_a_yolov7_checkpoint(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"model": torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3)).state_dict()}, path)
    with pytest.raises(ConversionError, match="not a YOLOv7 checkpoint"):
        official_to_yolov7(read_official_checkpoint(str(path)), _our_model("yolov7-tiny"))


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "official.pt"
    _save_official(_official_model("yolov7-tiny"), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match="truncated"):
        read_official_checkpoint(str(path))


def test_checkpointer_names_num_classes_mismatch_and_foreign_files(tmp_path):
    small = _our_model("yolov7-tiny", "MODEL.YOLOV7.NUM_CLASSES", "3")
    path = tmp_path / "three_classes.pth"
    torch.save({"model": small.state_dict()}, path)
    with pytest.raises(CheckpointError,
                       match="predicts 3 classes but MODEL.YOLOV7.NUM_CLASSES is 80"):
        YOLOv7Checkpointer(_our_model("yolov7-tiny")).load(str(path))
    # An official file is converted on the fly; its class count must match unless fine-tuning.
    official = tmp_path / "official.pt"
    _save_official(_official_model("yolov7-tiny"), official)
    model = _our_model("yolov7-tiny")
    YOLOv7Checkpointer(model).load(str(official))
    expected = official_to_yolov7(read_official_checkpoint(str(official)), model)
    assert all(torch.equal(value, expected[key]) for key, value in model.state_dict().items())
    with pytest.raises(CheckpointError, match="NUM_CLASSES"):
        YOLOv7Checkpointer(_our_model("yolov7-tiny", "MODEL.YOLOV7.NUM_CLASSES", "3")).load(
            str(official))
    with pytest.raises(CheckpointError, match="does not exist"):
        YOLOv7Checkpointer(_our_model("yolov7-tiny")).load(str(tmp_path / "nope.pth"))
