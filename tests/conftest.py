"""Shared pytest setup: one CPU thread, detectron2 compat applied first, seeding fixtures.

With 2 cores, a torch job on 2 threads next to any other process runs over 10x slower than
on 1, so every test runs single-threaded.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import random  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

# detectron2 0.6 decorates a few functions with @torch.jit.script at import time.
_JIT_WARNING = "`torch.jit.script` is deprecated"
warnings.filterwarnings("ignore", message=_JIT_WARNING, category=FutureWarning)

# Before anything imports detectron2's submodules (Pillow 10+, numpy 2, no detectron2._C).
from yolov7_d2 import compat  # noqa: E402

compat.apply()


def pytest_configure(config):
    config.addinivalue_line("filterwarnings", f"ignore:{_JIT_WARNING}:FutureWarning")


def seed_everything(seed: int = 0) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same RNG state (python, numpy, torch)."""
    seed_everything(0)
    yield


@pytest.fixture
def seed():
    """Call ``seed(n)`` to re-seed python, numpy and torch inside a test."""
    return seed_everything


@pytest.fixture(scope="session")
def deepforest_prepared():
    """The bundled DeepForest tree tiles registered and prepared (downloaded and tiled on
    the first run, about 3 s; checked against their manifest afterwards), as train_net.py
    prepares them. Modules that train on them use it with
    ``pytestmark = pytest.mark.usefixtures("deepforest_prepared")``."""
    from yolov7_d2.data import register_deepforest
    from yolov7_d2.engine import prepare_bundled_datasets

    names = register_deepforest()
    prepare_bundled_datasets(names)
    return names
