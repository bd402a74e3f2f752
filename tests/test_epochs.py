"""Epoch-based schedules: epochs, warm-up and periods turned into iterations from the size of
the training set (official: warm-up max(3 epochs, 1000 iterations)); iteration keys the user
set win, in yaml configs (named in a config file or option) and LazyConfigs (not None)."""
import logging
from pathlib import Path

import pytest

from yolov7_d2.config import keys_set_by, load_config
from yolov7_d2.engine import EpochSchedule, resolve_epoch_schedule, resolve_lazy_epoch_schedule

from detectron2.config import LazyConfig

from log_records import records_of

# Trains or loads the bundled tree tiles.
pytestmark = pytest.mark.usefixtures("deepforest_prepared")

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "coco" / "yolov7-tiny.yaml")
TREES = str(ROOT / "configs" / "deepforest" / "yolov7-tiny-trees.yaml")


@pytest.fixture
def logs():
    with records_of("yolov7_d2.engine.epochs") as handler:
        yield handler


def resolved(config_file, opts, num_images):
    cfg = load_config(config_file, opts)
    return resolve_epoch_schedule(cfg, num_images, keys_set_by(config_file, opts))


def schedule_of(cfg):
    return (cfg.SOLVER.MAX_ITER, cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.CHECKPOINT_PERIOD,
            cfg.TEST.EVAL_PERIOD)


def test_official_numbers_on_coco():
    schedule = EpochSchedule(118287, 64, 300, checkpoint_period_epochs=10, eval_period_epochs=10)
    assert schedule.iterations_per_epoch == 1849  # the last batch of an epoch is partial
    assert schedule.iterations() == {"max_iter": 554700, "warmup_iters": 5547,
                                     "checkpoint_period": 18490, "eval_period": 18490}
    # A small set: the warm-up floor of 1000 iterations; periods of 0 epochs are not derived.
    assert EpochSchedule(21, 8, 300).iterations() == {"max_iter": 900, "warmup_iters": 1000}


def test_yaml_epochs_become_iterations(logs):
    cfg = resolved(TINY, ["SOLVER.IMS_PER_BATCH", "8"], 21)
    assert cfg.is_frozen() and schedule_of(cfg) == (900, 1000, 30, 30)
    assert logs.messages(logging.INFO)[0] == (
        "Schedule: 21 images, batch 8 -> 3 iterations/epoch; 300 epochs = 900 iterations; "
        "warm-up 1000 iterations (max(3 epochs, 1000)); eval every 30 iterations (10 epochs), "
        "checkpoint every 30 iterations (10 epochs)")


def test_explicit_iteration_keys_win(logs):
    opts = ["SOLVER.IMS_PER_BATCH", "8", "SOLVER.MAX_ITER", "500", "TEST.EVAL_PERIOD", "40000"]
    cfg = resolved(TINY, opts, 21)
    # 40000 is detectron2's default value, given on purpose: still kept.
    assert schedule_of(cfg) == (500, 1000, 30, 40000)
    line = logs.messages(logging.INFO)[0]
    assert ("21 images, batch 8 -> 3 iterations/epoch; 500 iterations (SOLVER.MAX_ITER set; "
            "300 epochs would be 900); warm-up 1000 iterations (max(3 epochs, 1000)); eval "
            "every 40000 iterations (TEST.EVAL_PERIOD set), checkpoint every 30 iterations "
            "(10 epochs)") in line
    (warning,) = logs.messages(logging.WARNING)
    assert "warm-up (1000 iterations) lasts the whole run (500)" in warning

    # Keys set by a config file (here the tree recipe) are kept as well.
    trees = resolved(TREES, [], 21)
    assert schedule_of(trees) == schedule_of(load_config(TREES))
    assert {"SOLVER.MAX_ITER", "SOLVER.IMS_PER_BATCH", "MODEL.YOLOV7.ARCH"} <= keys_set_by(TREES)
    assert "SOLVER.MAX_ITER" not in keys_set_by(TINY, ["SOLVER.WARMUP_ITERS", "5"])


def test_epoch_keys_off_and_warmup_epochs():
    cfg = load_config(TINY, ["SOLVER.YOLOV7.EPOCHS", "0"])
    assert resolve_epoch_schedule(cfg, 21) is cfg
    opts = ["SOLVER.IMS_PER_BATCH", "2", "SOLVER.YOLOV7.EPOCHS", "100",
            "SOLVER.YOLOV7.WARMUP_EPOCHS", "4.5", "SOLVER.YOLOV7.MIN_WARMUP_ITERS", "10",
            "SOLVER.YOLOV7.CHECKPOINT_PERIOD_EPOCHS", "0", "TEST.YOLOV7.EVAL_PERIOD_EPOCHS", "5"]
    cfg = resolved(TINY, opts, 21)  # 11 iterations an epoch
    # No checkpoint epochs: detectron2's SOLVER.CHECKPOINT_PERIOD default stays.
    assert schedule_of(cfg) == (1100, 50, 5000, 55)


def test_lazyconfig_none_means_from_the_epochs(logs):
    cfg = LazyConfig.load(str(ROOT / "configs" / "coco" / "yolov7_tiny.py"))
    cfg = LazyConfig.apply_overrides(cfg, ["dataloader.train.total_batch_size=8",
                                           "train.max_iter=500"])
    out = resolve_lazy_epoch_schedule(cfg, 21)
    assert (out.train.max_iter, out.train.warmup_iters, out.train.checkpointer.period,
            out.train.eval_period) == (500, 1000, 30, 30)
    assert cfg.train.warmup_iters is None  # a copy was resolved
    assert "500 iterations (train.max_iter set; 300 epochs would be 900)" in logs.messages()[0]

    cfg.train.epochs = 0
    with pytest.raises(ValueError, match="train.warmup_iters"):
        resolve_lazy_epoch_schedule(cfg, 21)


@pytest.mark.parametrize("name", ["yolov7", "yolov7-w6"])
def test_multi_gpu_configs_carry_the_official_multi_gpu_recipe(name):
    """configs/coco/multi-gpu/: 128 images per step, no accumulation, weight decay 1e-3 after
    the nominal-batch scaling, SyncBN, and on COCO train2017 925 iterations an epoch with a
    warm-up of max(3 epochs, 1000) = 2775 iterations (official train.py, --batch-size 128)."""
    from yolov7_d2.engine import nominal_accumulation, nominal_weight_decay

    path = ROOT / "configs" / "coco" / "multi-gpu" / f"{name}.yaml"
    cfg = load_config(str(path))
    solver = cfg.SOLVER
    assert cfg.MODEL.YOLOV7.NORM == "SyncBN" and solver.IMS_PER_BATCH == 128
    assert nominal_accumulation(128, solver.YOLOV7.NOMINAL_BATCH_SIZE) == 1
    assert nominal_weight_decay(solver.WEIGHT_DECAY, 128,
                                solver.YOLOV7.NOMINAL_BATCH_SIZE) == pytest.approx(1e-3)
    resolved_cfg = resolve_epoch_schedule(cfg, 118287, keys_set_by(str(path)))
    assert resolved_cfg.SOLVER.WARMUP_ITERS == 2775
    assert resolved_cfg.SOLVER.MAX_ITER == 925 * 300
    # the single-GPU config of the same scale: 64 per step, BN, warm-up 5547
    single = load_config(str(path.parents[1] / f"{name}.yaml"))
    assert single.MODEL.YOLOV7.NORM == "BN" and single.SOLVER.IMS_PER_BATCH == 64
