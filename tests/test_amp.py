"""SOLVER.AMP.ENABLED (training) and TEST.YOLOV7.AMP (inference) pick bfloat16 on the CPU only
where the CPU computes it natively."""
import logging
import os
import platform
import subprocess
import sys

import pytest
import torch

from yolov7_d2.config import load_config
from yolov7_d2.engine import YOLOv7TrainLoop
from yolov7_d2.modeling import meta_arch
from yolov7_d2.utils import amp
from yolov7_d2.utils.amp import autocast_dtype, cpu_has_native_bf16, inference_autocast_dtype

from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from photos import photo
from scripts import ROOT


def test_autocast_dtype_per_device(caplog):
    assert autocast_dtype(False, "cpu", native_bf16=lambda: True) is None
    assert autocast_dtype(True, "cuda", native_bf16=lambda: False) is torch.float16
    assert autocast_dtype(True, "cpu", native_bf16=lambda: True) is torch.bfloat16
    with caplog.at_level(logging.INFO, logger="yolov7_d2.utils.amp"):
        assert autocast_dtype(True, "cpu", native_bf16=lambda: False) is None
    (record,) = [r for r in caplog.records if r.name == "yolov7_d2.utils.amp"]
    assert "float32" in record.getMessage() and "AVX512-BF16" in record.getMessage()


def test_native_bf16_is_what_onednn_reports():
    assert cpu_has_native_bf16() == torch.ops.mkldnn._is_mkldnn_bf16_supported()


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86 ISA caps")
def test_onednn_capped_at_avx2_trains_in_float32():
    # How docs/tree_recipes.md runs an AVX2-only CPU's code paths on a newer x86 CPU: with
    # oneDNN and ATen capped at AVX2, oneDNN reports no native bfloat16, so AMP is float32.
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    code = ("import torch; from yolov7_d2.utils.amp import autocast_dtype, "
            "inference_autocast_dtype as infer; print(torch.backends.cpu.get_cpu_capability(), "
            "autocast_dtype(True, 'cpu'), infer('cpu'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.split()[-3:] == ["AVX2", "None", "None"]


class _DtypeProbe(torch.nn.Module):
    """A linear layer whose forward records the dtype autocast gives its output."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)
        self.seen = []

    def forward(self, batch):
        out = self.linear(torch.ones(2, 4))
        self.seen.append(out.dtype)
        return {"loss": out.float().sum()}


def test_train_loop_runs_in_the_chosen_dtype(monkeypatch):
    from yolov7_d2.utils import amp

    for native, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(amp, "cpu_has_native_bf16", lambda native=native: native)
        model = _DtypeProbe()
        loop = YOLOv7TrainLoop(model, iter(lambda: [{}], None),
                               torch.optim.SGD(model.parameters(), lr=0.1),
                               accumulation=lambda it: 1, ema=None, amp=True)
        with EventStorage():
            loop.iter = 0
            loop.run_step()
        assert model.seen == [expected] and loop.amp == (native is True)


def test_inference_dtype_is_decided_and_logged_once(monkeypatch, caplog):
    inference_autocast_dtype.cache_clear()
    monkeypatch.setattr(amp, "cpu_has_native_bf16", lambda: False)
    try:
        with caplog.at_level(logging.INFO, logger="yolov7_d2.utils.amp"):
            assert inference_autocast_dtype("cpu") is None
            assert inference_autocast_dtype("cpu") is None
        (record,) = [r for r in caplog.records if r.name == "yolov7_d2.utils.amp"]
        assert record.getMessage().startswith("TEST.YOLOV7.AMP: inference in float32")
        assert inference_autocast_dtype("cuda") is torch.float16
    finally:
        inference_autocast_dtype.cache_clear()  # the next caller asks this CPU again


def _decoded_rows(monkeypatch, model, image):
    """The head's output dtype and the decoded rows of one inference of ``model``."""
    seen, decode = {}, meta_arch.decode_predictions

    def recording_decode(maps, *args):
        seen["maps"] = maps[0].dtype
        seen["rows"] = decode(maps, *args)
        return seen["rows"]

    monkeypatch.setattr(meta_arch, "decode_predictions", recording_decode)
    with torch.inference_mode():
        model([{"image": image, "height": 128, "width": 128}])
    return seen["maps"], seen["rows"]


def _narrow_tiny():
    cfg = load_config(str(ROOT / "configs" / "coco" / "yolov7-tiny.yaml"), [
        "MODEL.DEVICE", "cpu", "MODEL.YOLOV7.WIDTH_MULTIPLE", "0.25"])
    return build_model(cfg)


def _photo_tensor():
    return torch.as_tensor(photo("coffee")[:128, :128].transpose(2, 0, 1).astype("float32"))


def test_training_keeps_the_train_loops_autocast():
    """TEST.YOLOV7.AMP acts on inference only: in training the head runs in the dtype of the
    train loop's autocast (SOLVER.AMP.ENABLED), not float32."""
    model = _narrow_tiny().train()
    seen = []
    model.head.register_forward_hook(lambda module, inputs, maps: seen.append(maps[0].dtype))
    instances = Instances((128, 128), gt_boxes=Boxes(torch.tensor([[10.0, 20.0, 60.0, 90.0]])),
                          gt_classes=torch.tensor([0]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model([{"image": _photo_tensor(), "instances": instances}])
    assert seen == [torch.bfloat16] and all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("native", [True, False])
def test_inference_autocast_where_native(monkeypatch, native):
    """TEST.YOLOV7.AMP: the convolutions of inference run in bfloat16 where the CPU has it
    natively and the rows decode in float32, close to a float32 inference; elsewhere inference
    is float32, bit for bit. (yolov7-tiny at width 0.25, random weights, a 128-px photo.)"""
    model = _narrow_tiny().eval()
    assert model.inference_amp  # the default
    image = _photo_tensor()
    model.inference_amp = False
    maps32, rows32 = _decoded_rows(monkeypatch, model, image)
    model.inference_amp = True
    monkeypatch.setattr(meta_arch, "inference_autocast_dtype",
                        lambda device: torch.bfloat16 if native else None)
    maps, rows = _decoded_rows(monkeypatch, model, image)
    assert maps32 == torch.float32 and rows32.dtype == rows.dtype == torch.float32
    if native:
        assert maps == torch.bfloat16
        # bfloat16 keeps 8 significant bits: boxes within a pixel, probabilities within 0.01.
        torch.testing.assert_close(rows[..., :4], rows32[..., :4], atol=1.0, rtol=0.0)
        torch.testing.assert_close(rows[..., 4:], rows32[..., 4:], atol=0.01, rtol=0.0)
        assert not torch.equal(rows, rows32)
    else:
        assert maps == torch.float32 and torch.equal(rows, rows32)
