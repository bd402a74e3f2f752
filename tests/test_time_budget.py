"""SOLVER.YOLOV7.TIME_BUDGET_MINUTES: the iterations that fit a wall-time budget, measured at
start on a throwaway trainer, and the config's schedule stretched to them (periods and close
mosaic scaled, warm-up kept); the run repeatable from the keys it logs and saves."""
import logging
import time

import pytest
import torch
from test_train import CONFIG, small_run_opts

from yolov7_d2.config import load_config
from yolov7_d2.config_checks import ConfigError
from yolov7_d2.engine import time_budget
from yolov7_d2.engine.time_budget import (
    BudgetPlan,
    evaluations_in,
    plan_budget,
    stretch_schedule,
    time_training_iterations,
)

from log_records import records_of
from scripts import load_script

# Trains on the bundled tree tiles.
pytestmark = pytest.mark.usefixtures("deepforest_prepared")

TREES = str(CONFIG)


@pytest.fixture
def logs():
    with records_of("yolov7_d2.engine.time_budget") as handler:
        yield handler


def test_plan_spends_the_budget_on_evaluations_then_iterations():
    # 10 min; 60 s gone; 2 evaluations of 5 s + 10 images x 0.1 s; 5% held back:
    # (600 - 60 - 12) x 0.95 = 501.6 s of 0.5-s iterations = 1003 -> rounded down to 1000.
    cfg = load_config(TREES, ["SOLVER.YOLOV7.TIME_BUDGET_MINUTES", "10.0",
                              "TEST.EVAL_PERIOD", "310", "INPUT.YOLOV7.MOSAIC_CROP_SIZE", "0"])
    plan = plan_budget(cfg, elapsed_s=60.0, iteration_s=0.5, inference_per_image_s=0.1,
                       num_test_images=10)
    assert (plan.evaluations, plan.eval_s) == (2, 6.0)
    assert plan.training_s == pytest.approx(501.6) and plan.max_iter == 1000
    # Below ROUND_TO iterations nothing is rounded away; a spent budget leaves none.
    assert BudgetPlan(60.0, 0.0, 10.0, 0.0, 0).max_iter == 5
    assert BudgetPlan(60.0, 61.0, 1.0, 0.0, 0).max_iter == 0
    # No test set: no evaluation to pay for.
    assert plan_budget(cfg, 60.0, 0.5, 0.1, num_test_images=0).evaluations == 0


def test_plan_charges_full_size_close_mosaic_iterations_and_tests_of_a_cropped_run():
    # Mosaic windows of 208 px from 416 px tiles: the close-mosaic iterations (80 of 620,
    # plain 416 px samples) have 4x the pixels, so the mean iteration costs
    # 1 + 80 / 620 x 3 of the measured (mosaic) one; likewise each test image.
    cfg = load_config(TREES, ["SOLVER.YOLOV7.TIME_BUDGET_MINUTES", "10.0",
                              "INPUT.YOLOV7.MOSAIC_CROP_SIZE", "208"])
    assert time_budget.mean_step_cost(cfg) == pytest.approx(1 + 80 / 620 * 3)
    plan = plan_budget(cfg, elapsed_s=0.0, iteration_s=0.5, inference_per_image_s=0.1,
                       num_test_images=10)
    assert plan.iteration_s == pytest.approx(0.5 * (1 + 80 / 620 * 3))
    # The inference measured on a 208 px sample: a 416 px test image costs 4x.
    assert plan.eval_s == pytest.approx(5.0 + 10 * 0.1 * 4)
    for no_crop in ("0", "416", "640"):
        uncropped = load_config(TREES, ["INPUT.YOLOV7.MOSAIC_CROP_SIZE", no_crop])
        assert time_budget.mean_step_cost(uncropped) == 1.0


def test_evaluations_are_every_period_and_at_the_end():
    assert [evaluations_in(620, p) for p in (0, 620, 310, 300, 1000)] == [1, 1, 2, 3, 1]


def test_stretched_schedule_scales_periods_and_close_mosaic_and_keeps_the_warmup():
    cfg = load_config(TREES)  # 620 iterations: close mosaic 80, checkpoint 310, eval 620
    cfg.freeze()
    long = stretch_schedule(cfg, 2300)
    assert long.is_frozen() and long.SOLVER.YOLOV7.TIME_BUDGET_MINUTES == 0.0
    assert (long.SOLVER.MAX_ITER, long.SOLVER.WARMUP_ITERS, long.SOLVER.CHECKPOINT_PERIOD,
            long.TEST.EVAL_PERIOD, long.INPUT.YOLOV7.CLOSE_MOSAIC_ITERS) == (
        2300, 100, 1150, 2300, 297)  # the long recipe (close mosaic 300), as measured
    short = stretch_schedule(cfg, 10)
    assert (short.SOLVER.CHECKPOINT_PERIOD, short.TEST.EVAL_PERIOD,
            short.INPUT.YOLOV7.CLOSE_MOSAIC_ITERS) == (5, 10, 1)
    assert cfg.SOLVER.MAX_ITER == 620  # the original is left as it was


def test_measured_iterations_on_a_throwaway_trainer():
    cfg = load_config(str(CONFIG), small_run_opts("unused", 4))
    cfg.freeze()
    times, data_times, inference = time_training_iterations(cfg, warmup=1, iters=2)
    assert len(times) == len(data_times) == 2
    assert all(t > d >= 0 for t, d in zip(times, data_times)) and inference > 0


def test_train_net_stretches_the_run_to_the_budget_and_saves_it(monkeypatch, tmp_path, logs):
    train_net = load_script("train_net.py")
    opts = small_run_opts(tmp_path, 620)  # periods 2 and 620, close mosaic 1, warm-up 2
    train_net.setup(train_net.parse_args(["--config-file", str(CONFIG), *opts]))
    unbudgeted_draw = torch.rand(3)  # the random state a run starts with (SEED 0)
    at = opts.index("SOLVER.MAX_ITER")
    del opts[at:at + 2]  # the length from the budget, not the command line

    # The measurement is the machine's; a fixed one makes the plan exact: 1 s per iteration,
    # 0.01 s per image for the 10 val tiles, 60 s (and the set-up's few) spent before the plan.
    measured = []

    def fixed_measurement(cfg, warmup, iters):
        torch.rand(100)  # as building a model does: the run's random state must not move
        measured.append(cfg.SOLVER.YOLOV7.TIME_BUDGET_MINUTES)
        return [1.0] * iters, [0.001] * iters, 0.01

    monkeypatch.setattr(time_budget, "time_training_iterations", fixed_measurement)
    opts += ["SOLVER.YOLOV7.TIME_BUDGET_MINUTES", "20.0"]
    args = train_net.parse_args(["--config-file", str(CONFIG), *opts])
    cfg = train_net.setup(args, started=time.monotonic() - 60.0)
    assert torch.equal(torch.rand(3), unbudgeted_draw)
    # (1200 - 60 - (5 + 0.1)) x 0.95 / 1.0 = 1078 -> 1070 iterations: x1.73 the config's 620,
    # the warm-up kept.
    assert measured == [20.0]
    schedule = (cfg.SOLVER.MAX_ITER, cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.CHECKPOINT_PERIOD,
                cfg.TEST.EVAL_PERIOD, cfg.INPUT.YOLOV7.CLOSE_MOSAIC_ITERS)
    assert schedule == (1070, 2, 3, 1070, 2)
    assert "SOLVER.MAX_ITER 1070 (config: 620)" in logs.messages(logging.INFO)[-1]
    saved = load_config(str(tmp_path / "config.yaml"))  # what repeats the run
    assert (saved.SOLVER.MAX_ITER, saved.SOLVER.YOLOV7.TIME_BUDGET_MINUTES) == (1070, 0.0)

    # --resume goes on with the length of the first start, measuring nothing.
    args = train_net.parse_args(["--config-file", str(CONFIG), "--resume", *opts])
    resumed = train_net.setup(args, started=time.monotonic() - 600.0)
    assert measured == [20.0] and resumed.SOLVER.MAX_ITER == 1070
    assert "resuming with the 1070 iterations" in logs.messages(logging.INFO)[-1]
    # A length on the command line turns the budget off.
    args = train_net.parse_args(["--config-file", str(CONFIG), *opts, "SOLVER.MAX_ITER", "7"])
    explicit = train_net.setup(args)
    assert measured == [20.0] and explicit.SOLVER.MAX_ITER == 7
    assert explicit.SOLVER.YOLOV7.TIME_BUDGET_MINUTES == 0.0
    # A budget already spent leaves no iteration: an error, not a run of 0 iterations.
    args = train_net.parse_args(["--config-file", str(CONFIG), *opts])
    with pytest.raises(ConfigError, match="leaves no training iteration"):
        train_net.setup(args, started=time.monotonic() - 1200.0)
