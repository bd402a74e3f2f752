"""Interrupted training: train_net.py runs killed with SIGKILL mid-run or in the middle of
writing a checkpoint resume from their last complete checkpoint as if uninterrupted (same
losses, learning rates, weights, EMA and optimizer state), and leave no half-written or
temporary file behind. The runs are real subprocesses of this file (see :func:`drive`):
yolov7-tiny on 64-px DeepForest tiles, one data-loader worker, SEED 0.
"""
import argparse
import io
import json
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import yolov7_d2  # noqa: F401  (detectron2 compat shims first)
from yolov7_d2.checkpoint import YOLOv7Checkpointer
from yolov7_d2.data import YOLOv7MosaicMapper, YOLOv7TrainLoader
from yolov7_d2.engine import MultiScale, YOLOv7Trainer, YOLOv7TrainLoop

from detectron2.data.samplers import TrainingSampler
from detectron2.engine import HookBase

from photos import write_photos
from scripts import load_script

# Trains or loads the bundled tree tiles.
pytestmark = pytest.mark.usefixtures("deepforest_prepared")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "deepforest" / "yolov7-tiny-trees.yaml"


def run_opts(output_dir):
    """8 iterations of 2 images, checkpoints after iterations 4 and 7 (model_final); warm-up
    over 4 iterations, with gradients accumulated to 4 images from iteration 2 on (optimizer
    steps after iterations 0, 1, 3, 5, 7: the checkpoint of iteration 4 holds gradients
    of a step to come); the last 2 iterations without mosaic."""
    return [
        "--config-file", str(CONFIG),
        "MODEL.YOLOV7.WIDTH_MULTIPLE", "0.25", "INPUT.YOLOV7.IMAGE_SIZE", "64",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.YOLOV7.NOMINAL_BATCH_SIZE", "4",
        "SOLVER.MAX_ITER", "8", "SOLVER.WARMUP_ITERS", "4", "SOLVER.CHECKPOINT_PERIOD", "5",
        "INPUT.YOLOV7.CLOSE_MOSAIC_ITERS", "2", "SOLVER.AMP.ENABLED", "False",
        "DATALOADER.NUM_WORKERS", "1", "DATASETS.TEST", "()", "TEST.EVAL_PERIOD", "0",
        "TEST.YOLOV7.ARTIFACTS", "False", "MODEL.YOLOV7.ANCHOR_CHECK_MIN_BPR", "0.0",
        "SEED", "0", "OUTPUT_DIR", str(output_dir),
    ]


class _Recorder(HookBase):
    """Appends each iteration's total loss and learning rate to a JSON-lines file (flushed:
    it survives a SIGKILL); kills this process after iteration ``kill_after``."""

    def __init__(self, log, kill_after):
        self.log, self.kill_after = log, kill_after

    def after_step(self):
        storage = self.trainer.storage
        row = {"iter": self.trainer.iter, "loss": storage.history("total_loss").latest(),
               "lr": storage.history("lr").latest()}
        with open(self.log, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.trainer.iter == self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)


def die_while_writing(name):
    """Replace ``torch.save`` by one that writes half of the file whose name starts with
    ``name``, then kills this process (SIGKILL): the kill lands inside the checkpointer's own
    save, deterministically."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if not os.path.basename(str(f)).startswith(name):
            return real_save(obj, f, *args, **kwargs)
        data = io.BytesIO()
        real_save(obj, data, *args, **kwargs)
        with open(f, "wb") as out:
            out.write(data.getvalue()[: len(data.getvalue()) // 2])
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = save


def drive(argv):
    """train_net.py's main with a :class:`_Recorder` logging to ``--log``, optionally killed
    after iteration ``--kill-after`` or while writing the file ``--kill-saving``; the other
    arguments are train_net.py's."""
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("--log", required=True)
    parser.add_argument("--kill-after", type=int, default=-1)
    parser.add_argument("--kill-saving", default="")
    ours, train_args = parser.parse_known_args(argv)
    train_net = load_script("train_net.py")

    class RecordedTrainer(YOLOv7Trainer):
        def build_hooks(self):
            return super().build_hooks() + [_Recorder(ours.log, ours.kill_after)]

    train_net.YOLOv7Trainer = RecordedTrainer
    if ours.kill_saving:
        die_while_writing(ours.kill_saving)
    train_net.main(train_net.parse_args(train_args))


def run_killable(args, tmpdir):
    """:func:`drive` in a subprocess on one thread, with its own empty TMPDIR."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TMPDIR=str(tmpdir))
    return subprocess.run([sys.executable, __file__, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def rows(log):
    return [json.loads(line) for line in Path(log).read_text().splitlines()]


def last_checkpoint(output_dir):
    """The file ``last_checkpoint`` names, after checking that it loads completely."""
    name = (output_dir / "last_checkpoint").read_text()
    torch.load(output_dir / name, map_location="cpu", weights_only=False)
    return name


def max_abs_difference(a, b):
    """Largest absolute difference between two nests of tensors / numbers of the same shape."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        return max((max_abs_difference(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        return max((max_abs_difference(x, y) for x, y in zip(a, b)), default=0.0)
    if isinstance(a, torch.Tensor):
        return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
    if isinstance(a, (int, float)) and not isinstance(a, bool):
        return abs(a - b)
    assert a == b
    return 0.0


def test_killed_runs_resume_as_if_uninterrupted(tmp_path):
    reference = tmp_path / "reference"
    drive(["--log", str(tmp_path / "reference.jsonl"), *run_opts(reference)])
    expected = {r["iter"]: r for r in rows(tmp_path / "reference.jsonl")}
    assert sorted(expected) == list(range(8))

    out, tmpdir = tmp_path / "run", tmp_path / "tmp"
    tmpdir.mkdir()
    logs = [tmp_path / f"run{i}.jsonl" for i in range(3)]
    # 1. Killed after iteration 6: the checkpoint of iteration 4 is the last.
    run = run_killable(["--log", str(logs[0]), "--kill-after", "6", *run_opts(out)], tmpdir)
    assert run.returncode == -signal.SIGKILL, run.stderr[-3000:]
    assert last_checkpoint(out) == "model_0000004.pth"
    saved = torch.load(out / "model_0000004.pth", map_location="cpu", weights_only=False)
    assert saved["trainer"]["_trainer"]["accumulated_grads"]  # between two optimizer steps
    # 2. Resumed, killed while writing model_final.pth.
    run = run_killable(["--log", str(logs[1]), "--kill-saving", "model_final.pth", "--resume",
                        *run_opts(out)], tmpdir)
    assert run.returncode == -signal.SIGKILL, run.stderr[-3000:]
    [partial] = out.glob("model_final.pth.tmp-*")  # the kill landed inside the save
    with pytest.raises(Exception):
        torch.load(partial, map_location="cpu", weights_only=False)
    assert not (out / "model_final.pth").exists()
    assert last_checkpoint(out) == "model_0000004.pth"
    # 3. Resumed again, to the end.
    run = run_killable(["--log", str(logs[2]), "--resume", *run_opts(out)], tmpdir)
    assert run.returncode == 0, run.stderr[-3000:]
    assert last_checkpoint(out) == "model_final.pth"
    assert not list(out.glob("*.tmp-*")) and not list(tmpdir.iterdir())  # nothing left behind

    # Same losses and learning rates as the uninterrupted run, iteration by iteration.
    runs = [rows(log) for log in logs]
    # (Run 2 died saving after iteration 7, before the recorder's turn.)
    assert [[r["iter"] for r in run] for run in runs] == [list(range(7)), [5, 6], [5, 6, 7]]
    for row in sum(runs, []):
        assert row["loss"] == pytest.approx(expected[row["iter"]]["loss"], rel=1e-6, abs=1e-9)
        assert row["lr"] == pytest.approx(expected[row["iter"]]["lr"], rel=1e-9)
    # Same final weights, EMA, optimizer state (momentum buffers) and schedule.
    final, resumed = (torch.load(d / "model_final.pth", map_location="cpu", weights_only=False)
                      for d in (reference, out))
    assert resumed["ema"]["updates"] == final["ema"]["updates"] > 0
    trainer_state, reference_state = resumed["trainer"], final["trainer"]
    assert trainer_state["hooks"] == reference_state["hooks"]  # the LR scheduler
    assert trainer_state["_trainer"]["optimizer"]["state"]  # momentum buffers
    for key in ("model", "ema", "trainer"):
        assert max_abs_difference(resumed[key], final[key]) < 1e-6, key


def test_train_loop_state_round_trip():
    """What a resumed train loop gets back: the accumulation phase and gradients, the
    gradient scaler and the multi-scale random state, on top of the optimizer."""
    def loop():
        model = torch.nn.Linear(2, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        result = YOLOv7TrainLoop(model, [], optimizer, accumulation=lambda it: 2, ema=None,
                                 multi_scale=MultiScale(64, 32, seed=0))
        result.grad_scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
        return result

    saved = loop()
    saved.iter, saved._last_step = 5, 4
    saved.grad_scaler.scale(saved.model(torch.ones(1, 2)).sum()).backward()
    saved.optimizer.step()
    saved.multi_scale.rng.random()
    saved.grad_scaler.update(4.0)
    state = torch.load(io.BytesIO(_saved_bytes(saved.state_dict())), weights_only=True)
    resumed = loop()
    resumed.load_state_dict(state)
    assert resumed.iter == 5 and resumed._last_step == 4
    assert resumed.grad_scaler.get_scale() == 4.0
    assert resumed.multi_scale.rng.random() == saved.multi_scale.rng.random()
    for p, q in zip(resumed.model.parameters(), saved.model.parameters()):
        assert torch.equal(p.grad, q.grad)
        assert torch.equal(resumed.optimizer.state[p]["momentum_buffer"],
                           saved.optimizer.state[q]["momentum_buffer"])


def _saved_bytes(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_train_loader_batches_depend_on_the_iteration_and_seeds_only(tmp_path):
    """A loader given the seeds of another and started at iteration 3 yields the other's
    batches 3, 4, ..., with any number of workers; the mapper gets each batch's iteration
    (close mosaic) and each sample's slot."""
    dicts = [{"file_name": path, "image_id": i, "height": h, "width": w, "annotations": []}
             for i, (path, (h, w)) in enumerate(zip(
                 write_photos(tmp_path), [(512, 512), (400, 600), (300, 451)]))]

    def loader(seed, num_workers):
        mapper = YOLOv7MosaicMapper(dataset_dicts=dicts, image_size=64, close_mosaic_iters=2,
                                    max_iter=6, seed=seed, cache_images=True)
        return YOLOv7TrainLoader(mapper, batch_size=2, sampler=TrainingSampler(3, seed=seed),
                                 num_workers=num_workers)

    def batches(loader):
        stream = iter(loader)
        return [[(s["image_id"], s["image"]) for s in next(stream)]
                for _ in range(loader.start_iter, 6)]

    uninterrupted = loader(seed=0, num_workers=0)
    resumed = loader(seed=1, num_workers=2)
    resumed.load_state_dict(uninterrupted.state_dict())
    resumed.start_iter = 3
    expected, got = batches(uninterrupted), batches(resumed)
    assert len(expected[0]) == 2
    for a, b in zip(expected[3:], got):
        assert [i for i, _ in a] == [i for i, _ in b]
        assert all(torch.equal(x, y) for (_, x), (_, y) in zip(a, b))
    mapper = uninterrupted.mapper
    for slot, (index, image) in enumerate(got[1]):  # iteration 4: mosaic closed
        assert torch.equal(image, mapper(dicts[index], iteration=4, slot=slot)["image"])


def _save_then_die_rewriting(directory):
    checkpointer = YOLOv7Checkpointer(torch.nn.Linear(2, 1), str(directory))
    die_while_writing("model_final.pth")
    checkpointer.model.weight.data.fill_(1.0)
    checkpointer.save("model_final")


def test_a_kill_while_rewriting_the_named_checkpoint_keeps_the_old_one(tmp_path):
    """last_checkpoint names model_final.pth, which a run rewrites and is killed meanwhile
    (``--resume`` with a longer schedule): the complete old file is still there."""
    checkpointer = YOLOv7Checkpointer(torch.nn.Linear(2, 1), str(tmp_path))
    checkpointer.save("model_final")
    old = checkpointer.model.state_dict()
    child = multiprocessing.get_context("fork").Process(target=_save_then_die_rewriting,
                                                        args=(tmp_path,))
    child.start()
    child.join()
    assert child.exitcode == -signal.SIGKILL
    [partial] = tmp_path.glob("model_final.pth.tmp-*")
    assert last_checkpoint(tmp_path) == "model_final.pth"
    loaded = torch.load(tmp_path / "model_final.pth", weights_only=True)["model"]
    assert all(torch.equal(loaded[k], v) for k, v in old.items())
    checkpointer.save("model_0000009")  # the next save removes what the killed one left
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "last_checkpoint", "model_0000009.pth", "model_final.pth"]


if __name__ == "__main__":
    drive(sys.argv[1:])
