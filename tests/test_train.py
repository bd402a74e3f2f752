"""train_net.py end to end on the real DeepForest tree tiles: train, checkpoint, evaluate,
resume, keep the best model and stop early; and the train loop's handling of non-finite
losses."""
import json
import logging
from pathlib import Path

import pytest
import torch

from yolov7_d2.engine import YOLOv7Trainer, YOLOv7TrainLoop

from log_records import Records
from scripts import load_script

# Trains or loads the bundled tree tiles.
pytestmark = pytest.mark.usefixtures("deepforest_prepared")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "deepforest" / "yolov7-tiny-trees.yaml"


def load_train_net():
    return load_script("train_net.py")


def small_run_opts(output_dir, max_iter):
    """A few iterations of a narrow model on 160-px versions of the real tiles."""
    return [
        "MODEL.YOLOV7.WIDTH_MULTIPLE", "0.25", "INPUT.YOLOV7.IMAGE_SIZE", "160",
        "INPUT.MIN_SIZE_TEST", "160", "INPUT.MAX_SIZE_TEST", "160",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", str(max_iter), "SOLVER.WARMUP_ITERS", "2",
        "SOLVER.YOLOV7.NOMINAL_BATCH_SIZE", "2",  # an optimizer (and EMA) step every iteration
        "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", str(max_iter),
        "DATALOADER.NUM_WORKERS", "0", "INPUT.YOLOV7.CLOSE_MOSAIC_ITERS", "1",
        "OUTPUT_DIR", str(output_dir),
    ]


@pytest.fixture(scope="module")
def train_net():
    return load_train_net()


def test_train_checkpoint_evaluate_and_resume(train_net, tmp_path):
    args = train_net.parse_args(["--config-file", str(CONFIG), *small_run_opts(tmp_path, 4)])
    results = train_net.main(args)
    assert "bbox" in results and 0.0 <= results["bbox"]["AP50"] <= 100.0
    assert (tmp_path / "model_final.pth").is_file() and (tmp_path / "model_0000001.pth").is_file()
    log = (tmp_path / "log.txt").read_text()
    assert "eta:" in log and "loss_box" in log
    assert list(tmp_path.glob("events.out.tfevents.*"))
    metrics = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    assert any("yolov7/num_pos_lead_p3" in m for m in metrics)
    saved = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)
    assert saved["iteration"] == 3 and saved["ema"]["updates"] >= 1

    # --resume continues from the saved iteration with the saved EMA state.
    args = train_net.parse_args(["--config-file", str(CONFIG), "--resume",
                                 *small_run_opts(tmp_path, 6)])
    trainer = YOLOv7Trainer(train_net.setup(args))
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 4
    assert trainer.scheduler.last_epoch == 4  # the LR schedule resumes too, not only the weights
    # ... and the optimizer: momentum buffers, and the next iteration's LR, not warm-up's first.
    assert [g["lr"] for g in trainer.optimizer.param_groups] == trainer.scheduler.get_last_lr()
    saved_optimizer = saved["trainer"]["_trainer"]["optimizer"]
    buffers = [s["momentum_buffer"] for s in trainer.optimizer.state_dict()["state"].values()]
    assert buffers and all(torch.equal(b, s["momentum_buffer"])
                           for b, s in zip(buffers, saved_optimizer["state"].values()))
    assert trainer.ema.updates == saved["ema"]["updates"]
    for key, value in saved["ema"]["model"].items():
        assert torch.equal(trainer.ema.ema.state_dict()[key], value), key
    trainer.train()
    resumed = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)
    assert resumed["iteration"] == 5 and resumed["ema"]["updates"] > saved["ema"]["updates"]

    # --eval-only evaluates the EMA weights of the checkpoint.
    args = train_net.parse_args(["--config-file", str(CONFIG), "--eval-only",
                                 *small_run_opts(tmp_path, 6), "MODEL.WEIGHTS",
                                 str(tmp_path / "model_final.pth")])
    assert "bbox" in train_net.main(args)


class _ScriptedLoss(torch.nn.Module):
    """Returns the scripted loss values in turn, as a model in training mode would."""

    def __init__(self, values):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.values = list(values)

    def forward(self, batch):
        return {"loss": self.weight * self.values.pop(0)}


def _loop(values):
    model = _ScriptedLoss(values)
    loader = iter(lambda: [{}], None)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loop = YOLOv7TrainLoop(model, loader, optimizer, accumulation=lambda it: 1, ema=None)
    return loop, model


def test_non_finite_loss_stops_training_naming_the_term_and_iteration():
    """No batch is skipped (detectron2's behaviour): the first non-finite loss raises, before
    its backward pass and step (tests/test_numerics.py: statistics, EMA, checkpoints)."""
    from detectron2.utils.events import EventStorage

    loop, model = _loop([1.0, float("nan")])
    with EventStorage():
        loop.iter = 0
        loop.run_step()
        loop.iter = 1
        with pytest.raises(FloatingPointError, match="Non-finite loss at iteration 1: loss = nan"):
            loop.run_step()
    assert model.weight.item() == pytest.approx(0.9) and model.weight.grad is None


def test_best_model_and_early_stopping_on_deepforest(train_net, tmp_path):
    """Evaluation every iteration: model_best.pth holds the iteration of the best bbox/AP, and
    training stops at the first evaluation that is not better (patience 1), model_final.pth
    written and the reason logged."""
    opts = [*small_run_opts(tmp_path, 8), "TEST.EVAL_PERIOD", "1",
            "TEST.YOLOV7.EARLY_STOP_PATIENCE", "1", "TEST.YOLOV7.ARTIFACTS", "False"]
    trainer = YOLOv7Trainer(train_net.setup(train_net.parse_args(["--config-file", str(CONFIG),
                                                                  *opts])))
    trainer.resume_or_load(resume=False)
    results = trainer.train()
    aps = [(it, ap) for ap, it in trainer.storage.history("bbox/AP").values()]
    stop = aps[-1][0]
    assert stop == trainer.iter < 7 and results["bbox"]["AP"] == aps[-1][1]
    # Patience 1: every evaluation but the last improved on all before it.
    values = [ap for _, ap in aps]
    assert all(values[i] > max(values[:i]) for i in range(1, len(values) - 1))
    assert values[-1] <= max(values[:-1])
    best_iter = aps[-2][0]
    best = torch.load(tmp_path / "model_best.pth", map_location="cpu", weights_only=False)
    final = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)
    assert best["iteration"] == best_iter and final["iteration"] == stop
    assert f"Early stopping at iteration {stop}: bbox/AP has not improved for 1 evaluations" \
        in (tmp_path / "log.txt").read_text()


def test_early_stop_after_patience_evaluations_without_improvement(tmp_path):
    """Scripted evaluation results through detectron2's train loop: model_best.pth is saved at
    the best AP, training ends after ``patience`` evaluations that are not better, every
    hook's after_train still runs, and model_final.pth is written at the stop."""
    from yolov7_d2.checkpoint import YOLOv7Checkpointer
    from yolov7_d2.engine import EarlyStop, best_model_hooks

    from detectron2.engine import HookBase, TrainerBase, hooks

    class Loop(TrainerBase):
        def run_step(self):
            pass

    class AfterTrain(HookBase):
        def after_train(self):
            ended.append(self.trainer.iter)

    aps, ended = iter([10.0, 30.0, 20.0, 30.0, 50.0]), []
    checkpointer = YOLOv7Checkpointer(torch.nn.Linear(1, 1), str(tmp_path))
    loop = Loop()
    loop.register_hooks([hooks.EvalHook(1, lambda: {"bbox": {"AP": next(aps)}}),
                         *best_model_hooks(1, checkpointer, "bbox/AP", patience=2), AfterTrain()])
    handler = Records()
    logger = logging.getLogger("yolov7_d2.engine.hooks")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with pytest.raises(EarlyStop):
            loop.train(0, 10)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    assert ended == [3]  # 30 at iteration 1, then 20 and 30 (not above 30): 2 evaluations
    saved = {name: torch.load(tmp_path / f"{name}.pth", map_location="cpu", weights_only=False)
             for name in ("model_best", "model_final")}
    assert saved["model_best"]["iteration"] == 1 and saved["model_final"]["iteration"] == 3
    assert checkpointer.get_checkpoint_file().endswith("model_final.pth")  # what --resume loads
    assert handler.messages() == [
        "Early stopping at iteration 3: bbox/AP has not improved for 2 evaluations (best "
        "30.0000 at iteration 1; TEST.YOLOV7.EARLY_STOP_PATIENCE 2)."]

    # --resume: the best value and the evaluations since come back with the trainer state, so
    # a worse evaluation neither overwrites model_best.pth nor restarts the patience count.
    state = loop.state_dict()
    assert state["hooks"] == {"_BestCheckpointer": {"best_metric": 30.0, "best_iter": 1},
                              "EarlyStopHook": {"best": 30.0, "best_iter": 1, "bad_evals": 2}}
    aps, ended = iter([25.0]), []
    resumed = Loop()
    resumed.register_hooks([hooks.EvalHook(1, lambda: {"bbox": {"AP": next(aps)}}),
                            *best_model_hooks(1, checkpointer, "bbox/AP", patience=3),
                            AfterTrain()])
    resumed.load_state_dict(state)
    with pytest.raises(EarlyStop):
        resumed.train(4, 10)
    assert ended == [4]  # a third evaluation without improvement
    best = torch.load(tmp_path / "model_best.pth", map_location="cpu", weights_only=False)
    assert best["iteration"] == 1
