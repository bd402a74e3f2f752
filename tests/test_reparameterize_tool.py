"""tools/reparameterize.py: a training checkpoint of full-width yolov7-tiny (random weights,
randomized BatchNorm statistics and implicit knowledge) fused into the deploy checkpoint,
which loads with MODEL.YOLOV7.REPARAMETERIZED True and gives the same outputs."""
import os
import re

import numpy as np
import pytest
import torch

from yolov7_d2.checkpoint import YOLOv7Checkpointer
from yolov7_d2.config import load_config
from yolov7_d2.export.deploy import build_deploy_model, checkpoint_is_reparameterized

from detectron2.modeling import build_model

from photos import photo
from scripts import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "coco", "yolov7-tiny.yaml")
TRAIN_PARAMS, FUSED_PARAMS = 6228762, 6219709  # official yolov7-tiny, training / fused deploy


def _load_tool():
    return load_script("tools/reparameterize.py")


tool = _load_tool()


def trained_looking_model(cfg):
    """A model whose BatchNorm statistics / affine parameters and implicit vectors are far
    from their initial values, so that every fusion step matters."""
    model = build_model(cfg)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        for name, p in model.named_parameters():
            if "implicit" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def num_params(model):
    return sum(p.numel() for p in model.parameters())


def photo_batch(size=256):
    """The astronaut (512 x 512) resized to size x size, RGB 0..1, (1, 3, size, size)."""
    import cv2

    rgb = cv2.resize(photo("astronaut"), (size, size), interpolation=cv2.INTER_LINEAR)[:, :, ::-1]
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float()[None] / 255.0


@pytest.fixture(scope="module")
def training(tmp_path_factory):
    """(cfg, EMA model, raw model, checkpoint path): a training checkpoint whose EMA weights
    differ from its raw weights."""
    torch.manual_seed(0)
    cfg = load_config(CONFIG, ["MODEL.DEVICE", "cpu"])
    ema, raw = trained_looking_model(cfg), trained_looking_model(cfg)
    path = str(tmp_path_factory.mktemp("train") / "model_final.pth")
    torch.save({"model": raw.state_dict(), "ema": {"updates": 1234, "model": ema.state_dict()},
                "iteration": 1234, "scheduler": {"last_epoch": 1234}}, path)
    return cfg, ema, raw, path


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--config-file", "input", "output", "--no-ema", "--check-size", "--opts"):
        assert flag in out, flag
    for words in ("BatchNorm", "RepConv", "Implicit", "auxiliary", "EMA", "atomically",
                  "MODEL.YOLOV7.REPARAMETERIZED True"):
        assert words in out, words


def test_fused_checkpoint_reloads_with_same_outputs(training, tmp_path, capsys):
    cfg, ema, _, source = training
    output = str(tmp_path / "deploy" / "tiny-deploy.pth")
    assert tool.main(["--config-file", CONFIG, source, output]) == 0
    out = capsys.readouterr().out
    assert (f"parameters: {TRAIN_PARAMS:,d} (training form) -> {FUSED_PARAMS:,d} "
            "(deploy, fused)") in out
    check = re.search(r"max \|difference\| (\S+) ", out)
    assert check and float(check[1]) < 1e-4, out
    assert os.listdir(tmp_path / "deploy") == ["tiny-deploy.pth"]  # no temporary file left

    saved = torch.load(output, map_location="cpu", weights_only=True)
    assert saved["reparameterized"] is True and checkpoint_is_reparameterized(output)
    assert not any("running_mean" in k or "implicit" in k for k in saved["model"])

    fused_cfg = cfg.clone()
    fused_cfg.MODEL.YOLOV7.REPARAMETERIZED = True
    deploy = build_model(fused_cfg).eval()
    YOLOv7Checkpointer(deploy).load(output)
    assert num_params(deploy) == FUSED_PARAMS
    x = photo_batch()
    with torch.no_grad():
        expected = ema.forward_raw(x)["lead"]  # the EMA weights were fused
        got = deploy.forward_raw(x)["lead"]
    diff = max((a - b).abs().max().item() for a, b in zip(expected, got))
    with capsys.disabled():
        print(f"\n  reparameterized yolov7-tiny vs training model: max |diff| {diff:.2e}")
    assert diff < 1e-4
    # build_deploy_model recognizes the deploy checkpoint by itself
    again = build_deploy_model(cfg, output)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(again.forward_raw(x)["lead"], got))


def test_no_ema_fuses_the_raw_weights(training, tmp_path):
    _, _, raw, source = training
    output = str(tmp_path / "raw-deploy.pth")
    assert tool.main(["--config-file", CONFIG, source, output, "--no-ema",
                      "--check-size", "0"]) == 0
    deploy = build_deploy_model(load_config(CONFIG, ["MODEL.DEVICE", "cpu"]), output)
    x = photo_batch(128)
    with torch.no_grad():
        diff = max((a - b).abs().max().item() for a, b in
                   zip(raw.forward_raw(x)["lead"], deploy.forward_raw(x)["lead"]))
    assert diff < 1e-4


def test_predictor_runs_the_deploy_checkpoint(training, tmp_path):
    from yolov7_d2.predictor import YOLOv7Predictor

    cfg, ema, _, source = training
    output = str(tmp_path / "deploy.pth")
    assert tool.main(["--config-file", CONFIG, source, output, "--check-size", "0"]) == 0
    opts = ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "256", "INPUT.MAX_SIZE_TEST", "256",
            "MODEL.YOLOV7.CONF_THRESH_TEST", "1e-6"]
    fused = YOLOv7Predictor(load_config(CONFIG, opts + [
        "MODEL.WEIGHTS", output, "MODEL.YOLOV7.REPARAMETERIZED", "True"]))
    # the predictor re-parameterizes the plain EMA weights itself
    ema_file = str(tmp_path / "ema.pth")
    torch.save({"model": ema.state_dict()}, ema_file)
    plain = YOLOv7Predictor(load_config(CONFIG, opts + ["MODEL.WEIGHTS", ema_file]))
    image = photo("coffee")
    a, b = fused(image)["instances"], plain(image)["instances"]
    assert len(a) == len(b) > 0
    assert torch.allclose(a.scores, b.scores, atol=1e-5)


def test_errors_are_reported(training, tmp_path, caplog):
    _, _, _, source = training
    output = str(tmp_path / "deploy.pth")
    assert tool.main(["--config-file", CONFIG, source, output, "--check-size", "0"]) == 0
    assert tool.main(["--config-file", CONFIG, output, str(tmp_path / "twice.pth")]) == 1
    assert "already re-parameterized" in caplog.text
    assert tool.main(["--config-file", CONFIG, source, str(tmp_path / "x.pth"),
                      "--opts", "MODEL.YOLOV7.REPARAMETERIZED", "True"]) == 1
    assert "REPARAMETERIZED" in caplog.text
    missing = str(tmp_path / "missing.pth")
    assert tool.main(["--config-file", CONFIG, missing, str(tmp_path / "x.pth")]) == 1
    assert "does not exist" in caplog.text
    assert tool.main(["--config-file", CONFIG, source, str(tmp_path / "x.pth"),
                      "--opts", "MODEL.YOLOV7.NUM_CLASSES", "3"]) == 1
    assert "NUM_CLASSES" in caplog.text
    assert not (tmp_path / "x.pth").exists() and not (tmp_path / "twice.pth").exists()
