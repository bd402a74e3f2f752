"""SOLVER.AMP.ENABLED picks bfloat16 on the CPU only where the CPU computes it natively."""
import logging
import os
import platform
import subprocess
import sys

import pytest
import torch

from yolov7_d2.engine import YOLOv7TrainLoop
from yolov7_d2.engine.amp import autocast_dtype, cpu_has_native_bf16

from detectron2.utils.events import EventStorage


def test_autocast_dtype_per_device(caplog):
    assert autocast_dtype(False, "cpu", native_bf16=lambda: True) is None
    assert autocast_dtype(True, "cuda", native_bf16=lambda: False) is torch.float16
    assert autocast_dtype(True, "cpu", native_bf16=lambda: True) is torch.bfloat16
    with caplog.at_level(logging.INFO, logger="yolov7_d2.engine.amp"):
        assert autocast_dtype(True, "cpu", native_bf16=lambda: False) is None
    (record,) = [r for r in caplog.records if r.name == "yolov7_d2.engine.amp"]
    assert "float32" in record.getMessage() and "AVX512-BF16" in record.getMessage()


def test_native_bf16_is_what_onednn_reports():
    assert cpu_has_native_bf16() == torch.ops.mkldnn._is_mkldnn_bf16_supported()


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86 ISA caps")
def test_onednn_capped_at_avx2_trains_in_float32():
    # How docs/tree_recipes.md runs an AVX2-only CPU's code paths on a newer x86 CPU: with
    # oneDNN and ATen capped at AVX2, oneDNN reports no native bfloat16, so AMP is float32.
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    code = ("import torch; from yolov7_d2.engine.amp import autocast_dtype; "
            "print(torch.backends.cpu.get_cpu_capability(), autocast_dtype(True, 'cpu'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.split()[-2:] == ["AVX2", "None"]


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
    from yolov7_d2.engine import amp

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
