"""Distributed data parallel training on the CPU: processes joined by a gloo process group
stand in for ``train_net.py --num-gpus N`` (detectron2's launch needs CUDA and NCCL).

Checks that an optimizer step sums the gradient over all processes' images and over the
accumulated batches, as official train.py does (for 1, 2 and 4 processes); that a yolov7-tiny
step on 2 processes is the single-process step on the same images; that the BatchNorm
statistics of all processes are averaged before evaluation; and that the trainer keeps the
replicas identical, accumulates to the nominal batch, checkpoints once and evaluates.

The processes are forked (they inherit the imported modules instead of importing torch and
detectron2 again, seconds each on a 2-core machine); a run that hangs is killed after
``TIMEOUT_S``.
"""
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_engine import tiny_model
from test_train import CONFIG, small_run_opts

from yolov7_d2.config import load_config
from yolov7_d2.engine import (
    ModelEMA,
    YOLOv7Trainer,
    YOLOv7TrainLoop,
    accumulation_steps,
    build_yolov7_optimizer,
    setup_yolov7_run,
)
from yolov7_d2.engine.distributed import average_batchnorm_buffers, batchnorm_buffers

from detectron2.engine.defaults import create_ddp_model
from detectron2.structures import Boxes, Instances
from detectron2.utils import comm
from detectron2.utils.events import EventStorage

# Trains or loads the bundled tree tiles.
pytestmark = pytest.mark.usefixtures("deepforest_prepared")

WORLD_SIZE = 2
TIMEOUT_S = 600


def run_processes(fn, world_size: int, tmp_path, *args):
    """``fn(rank, *args)`` in ``world_size`` forked processes, each in a gloo process group
    (detectron2's ``comm`` set up as ``launch`` does); fails the test if one fails or the run
    outlasts ``TIMEOUT_S``."""
    context = mp.start_processes(_in_process_group, args=(fn, world_size, str(tmp_path), args),
                                 nprocs=world_size, join=False, start_method="fork")
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"{world_size} gloo processes still running after {TIMEOUT_S} s")


def _in_process_group(rank: int, fn, world_size: int, tmp_dir: str, args):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp_dir}/init{world_size}",
                            rank=rank, world_size=world_size)
    comm._LOCAL_PROCESS_GROUP = dist.new_group(list(range(world_size)))
    try:
        fn(rank, *args)
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- toy model
class _WeightedSum(torch.nn.Module):
    """Loss = weight * sum of the batch's values: its gradient is the sum of the values."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))

    def forward(self, batch):
        return {"loss": self.weight * sum(sample["value"] for sample in batch)}


TOY_TOTAL_BATCH, TOY_NOMINAL, TOY_LR = 4, 8, 1e-3


def _toy_value(iteration: int, index: int) -> float:
    """The value of the ``index``-th image (over all processes) of ``iteration``."""
    return float(1 + index + 10 * iteration)


def _toy_weights(rank: int, world_size: int):
    """Weight after each of 2 iterations when this process takes its share (TOY_TOTAL_BATCH /
    world_size images) of each iteration's batch, with the trainer's accumulation for
    SOLVER.IMS_PER_BATCH = TOY_TOTAL_BATCH (the total) and a nominal batch TOY_NOMINAL."""
    model = create_ddp_model(_WeightedSum(), broadcast_buffers=False, device_ids=None)
    per_process = TOY_TOTAL_BATCH // world_size
    batches = iter([{"value": _toy_value(it, rank * per_process + i)}
                    for i in range(per_process)] for it in range(2))
    loop = YOLOv7TrainLoop(
        model, batches, torch.optim.SGD(model.parameters(), lr=TOY_LR),
        accumulation=lambda it: accumulation_steps(it, 0, TOY_TOTAL_BATCH, TOY_NOMINAL), ema=None)
    weights = []
    with EventStorage():
        for it in range(2):
            loop.iter = it
            loop.run_step()
            weights.append(next(model.parameters()).item())
    return weights


def _toy_worker(rank: int, world_size: int, out_dir: str):
    torch.save(_toy_weights(rank, world_size), f"{out_dir}/toy{world_size}_rank{rank}.pt")


# ----------------------------------------------------------------------------- yolov7-tiny
DETECTOR_SIZE, DETECTOR_PER_PROCESS, DETECTOR_ITERS = 64, 2, 2


def _detector_samples():
    """DETECTOR_ITERS x WORLD_SIZE x DETECTOR_PER_PROCESS training samples: 64-px random
    images with 1 to 3 random boxes (8 to 40 px) of random classes, the same in every
    process (seeded)."""
    gen = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(DETECTOR_ITERS * WORLD_SIZE * DETECTOR_PER_PROCESS):
        n = int(torch.randint(1, 4, (), generator=gen))
        xy = torch.rand(n, 2, generator=gen) * (DETECTOR_SIZE - 40)
        wh = 8 + torch.rand(n, 2, generator=gen) * 32
        instances = Instances((DETECTOR_SIZE, DETECTOR_SIZE),
                              gt_boxes=Boxes(torch.cat([xy, xy + wh], 1)),
                              gt_classes=torch.randint(0, 80, (n,), generator=gen))
        image = torch.randint(0, 256, (3, DETECTOR_SIZE, DETECTOR_SIZE), generator=gen,
                              dtype=torch.uint8)
        samples.append({"image": image, "instances": instances})
    return samples


def _detector_steps(model, batches, accumulation: int, ema=None):
    """The trainer's step on each of ``batches`` (lists of samples), optimizer as the
    trainer's (three groups, Nesterov SGD)."""
    optimizer = build_yolov7_optimizer(model, base_lr=0.01, momentum=0.937, weight_decay=5e-4)
    loop = YOLOv7TrainLoop(model, iter(batches), optimizer, accumulation=lambda it: accumulation,
                           ema=ema)
    with EventStorage():
        for it in range(len(batches)):
            loop.iter = it
            loop.run_step()


def _parameters(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _detector_worker(rank: int, out_dir: str):
    """DETECTOR_ITERS steps of yolov7-tiny under DDP, each process on its
    DETECTOR_PER_PROCESS images of each iteration; then the BatchNorm statistics averaged."""
    model = tiny_model()
    model.load_state_dict(torch.load(f"{out_dir}/init.pth"))
    ema = ModelEMA(model)
    ddp = create_ddp_model(model, broadcast_buffers=False, device_ids=None)
    samples, n = _detector_samples(), DETECTOR_PER_PROCESS
    batches = [samples[(it * WORLD_SIZE + rank) * n:(it * WORLD_SIZE + rank + 1) * n]
               for it in range(DETECTOR_ITERS)]
    _detector_steps(ddp, batches, accumulation=1, ema=ema)
    bn_before = [b.clone() for b in batchnorm_buffers(model) + batchnorm_buffers(ema.ema)]
    average_batchnorm_buffers(ddp, ema.ema)
    bn_after = [b.clone() for b in batchnorm_buffers(model) + batchnorm_buffers(ema.ema)]
    torch.save({"weights": _parameters(model), "bn_before": bn_before, "bn_after": bn_after},
               f"{out_dir}/detector_rank{rank}.pt")


def _syncbn_worker(rank: int, out_dir: str):
    """One DDP step of yolov7-tiny with MODEL.YOLOV7.NORM naiveSyncBN, each process on its
    DETECTOR_PER_PROCESS images of the first iteration: the BatchNorm statistics after it."""
    model = tiny_model("MODEL.YOLOV7.NORM", "naiveSyncBN")
    model.load_state_dict(torch.load(f"{out_dir}/init.pth"))
    ddp = create_ddp_model(model, broadcast_buffers=False, device_ids=None)
    n = DETECTOR_PER_PROCESS
    _detector_steps(ddp, [_detector_samples()[rank * n:(rank + 1) * n]], accumulation=1)
    torch.save({"bn": [b.clone() for b in batchnorm_buffers(model)],
                "weights": _parameters(model)}, f"{out_dir}/syncbn_rank{rank}.pt")


# ----------------------------------------------------------------------------- the trainer
TRAINER_OPTS = ["SOLVER.IMS_PER_BATCH", "4", "SOLVER.YOLOV7.NOMINAL_BATCH_SIZE", "8"]


def _trainer_worker(rank: int, out_dir: str):
    """train_net's trainer for 3 iterations (warm-up 2), 2 images per process."""
    cfg = load_config(str(CONFIG), small_run_opts(out_dir, 3) + TRAINER_OPTS)
    setup_yolov7_run(cfg.OUTPUT_DIR)  # registers the tree tiles
    trainer = YOLOv7Trainer(cfg)
    trainer.resume_or_load(resume=False)
    results = trainer.train()
    model = trainer.model.module
    torch.save({"weights": _parameters(model), "results": results,
                "ema_updates": trainer.ema.updates,
                "accumulation": [trainer._trainer.accumulation(it) for it in range(4)],
                "bn": batchnorm_buffers(model) + batchnorm_buffers(trainer.ema.ema)},
               f"{out_dir}/trainer_rank{rank}.pt")


def _two_process_worker(rank: int, out_dir: str):
    _toy_worker(rank, WORLD_SIZE, out_dir)
    _detector_worker(rank, out_dir)
    _syncbn_worker(rank, out_dir)
    _trainer_worker(rank, out_dir)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """One 2-process run for the tests below; returns its output directory."""
    out = tmp_path_factory.mktemp("ddp")
    torch.manual_seed(0)
    torch.save(tiny_model().state_dict(), out / "init.pth")
    run_processes(_two_process_worker, WORLD_SIZE, out, str(out))
    return out


def _load_ranks(out, name, world_size=WORLD_SIZE):
    return [torch.load(out / f"{name}_rank{r}.pt", weights_only=False) for r in range(world_size)]


# ----------------------------------------------------------------------------- tests
def test_step_sums_gradients_over_processes_and_accumulated_batches(tmp_path, two_processes):
    """A total batch of 4 images split over 1, 2 or 4 processes, accumulated to a nominal 8:
    no step after the first iteration, then one step whose gradient is the sum of the values
    of all 8 images (DDP averages over processes; the loop scales the loss by the world
    size, as official train.py). DDP's average alone would give 1/world_size of it."""
    run_processes(_toy_worker, 4, tmp_path, 4, str(tmp_path))
    total = sum(_toy_value(it, i) for it in range(2) for i in range(TOY_TOTAL_BATCH))
    expected = [1.0, 1.0 - TOY_LR * total]
    runs = {1: [_toy_weights(0, 1)], 2: _load_ranks(two_processes, "toy2"),
            4: _load_ranks(tmp_path, "toy4", 4)}
    for world_size, ranks in runs.items():
        for weights in ranks:
            assert weights == pytest.approx(expected, rel=1e-6), (world_size, weights)


def test_two_process_step_equals_single_process_accumulation(two_processes):
    """What is compared, and why: each process's BatchNorm normalises over its own images and
    the loss is normalised by the positives of its own batch (official ComputeLossOTA x batch
    size), so a DDP step on 2 x B images is not a step on the concatenated 2B-image batch;
    it is the gradient of loss(images of process 0) + loss(images of process 1). That is
    exactly what one process computes with gradient accumulation over the same two B-image
    batches, one optimizer step per two batches. So 2 DDP steps (2 processes x 2 images,
    accumulation 1) must give the parameters of 4 single-process steps (2 images,
    accumulation 2) on the same images, BatchNorm in training mode. Without the loss scaling
    by the world size the DDP update would be half as large."""
    model = tiny_model()
    model.load_state_dict(torch.load(two_processes / "init.pth"))
    start = _parameters(model)
    samples, n = _detector_samples(), DETECTOR_PER_PROCESS
    _detector_steps(model, [samples[i:i + n] for i in range(0, len(samples), n)],
                    accumulation=WORLD_SIZE)
    reference = _parameters(model)
    ranks = _load_ranks(two_processes, "detector")
    moved = max((reference[k] - start[k]).abs().max().item() for k in start)
    assert moved > 1e-3  # the updates are far above the tolerance below
    for key, value in reference.items():
        for rank in ranks:
            torch.testing.assert_close(rank["weights"][key], value, rtol=1e-4, atol=1e-6,
                                       msg=key)


def test_batchnorm_statistics_averaged_over_processes(two_processes):
    """After steps on different images the processes' BatchNorm statistics (model and EMA)
    differ; average_batchnorm_buffers makes them the same on all, their mean."""
    ranks = _load_ranks(two_processes, "detector")
    before = [r["bn_before"] for r in ranks]
    after = [r["bn_after"] for r in ranks]
    differences = [(a - b).abs().max().item() for a, b in zip(*before)]
    assert max(differences) > 1e-3
    for i, (b0, b1) in enumerate(zip(*before)):
        assert torch.equal(after[0][i], after[1][i]), i
        torch.testing.assert_close(after[0][i], (b0 + b1) / 2, msg=str(i))


class _LossPerHalf(torch.nn.Module):
    """One process standing in for 2 with synchronized BatchNorm: the training forward runs on
    all images at once (BatchNorm over all of them) and the loss on each half, as each process
    normalises its loss by its own images; the halves' losses are summed, as DDP's step (the
    loss times the world size, gradients averaged) sums the processes' losses."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batched_inputs):
        m, half = self.model, len(batched_inputs) // 2
        features = m.backbone(m.preprocess_image(batched_inputs).tensor)
        maps = m.head([features[f] for f in m.head_in_features])
        gts = [x["instances"] for x in batched_inputs]
        total = {}
        for part in (slice(0, half), slice(half, None)):
            losses = m.loss([p[part] for p in maps], None, [g.gt_boxes.tensor for g in gts[part]],
                            [g.gt_classes for g in gts[part]], m.anchors, m.strides)
            total = {k: total.get(k, 0) + v for k, v in losses.items()}
        return total


def test_synchronized_batchnorm_normalises_over_all_processes(two_processes):
    """MODEL.YOLOV7.NORM naiveSyncBN: after one step on 2 processes x 2 images, both hold the
    same BatchNorm statistics (no averaging needed), those of one process's training forward
    on the 4 images together: running means equal; running variances within the unbiased /
    biased estimator factor n / (n - 1) (plain BatchNorm keeps the unbiased one; n is as low
    as 16 values per channel at stride 32 here). The parameters follow one process's step with
    BatchNorm over the 4 images; the loss stays each process's own (official ComputeLossOTA
    normalises by the process's batch), so it is summed over the halves, not taken over 4."""
    ranks = _load_ranks(two_processes, "syncbn")
    for i, (a, b) in enumerate(zip(ranks[0]["bn"], ranks[1]["bn"])):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=str(i))
    model = tiny_model()
    model.load_state_dict(torch.load(two_processes / "init.pth"))
    model.train()
    with EventStorage():
        model(_detector_samples()[:WORLD_SIZE * DETECTOR_PER_PROCESS])
    reference = batchnorm_buffers(model)
    assert len(reference) == len(ranks[0]["bn"])
    for i, (synced, single) in enumerate(zip(ranks[0]["bn"], reference)):
        if i % 2 == 0:  # running_mean
            torch.testing.assert_close(synced, single, rtol=1e-4, atol=1e-5, msg=str(i))
        else:  # running_var
            torch.testing.assert_close(synced, single, rtol=3e-3, atol=1e-5, msg=str(i))
    # the parameters after the step: those of one process with BatchNorm over the 4 images
    # and each process's loss on its own 2 (_LossPerHalf)
    model = tiny_model()
    model.load_state_dict(torch.load(two_processes / "init.pth"))
    start = _parameters(model)
    _detector_steps(_LossPerHalf(model), [_detector_samples()[:WORLD_SIZE * DETECTOR_PER_PROCESS]],
                    accumulation=1)
    reference = _parameters(model)
    assert max((reference[k] - start[k]).abs().max().item() for k in start) > 1e-3
    # Compared as updates, per tensor: NaiveSyncBatchNorm's variance E[x^2] - E[x]^2 rounds
    # otherwise than torch's, and the top-k assignment can follow such small differences, so
    # the updates agree to a cosine above 0.99 and norms within 5% (per-process BatchNorm:
    # cosines down to -0.5 on this step).
    for key, value in reference.items():
        expected = (value - start[key]).flatten()
        if expected.norm() == 0:
            continue
        for rank in ranks:
            update = (rank["weights"][key] - start[key]).flatten()
            cosine = torch.nn.functional.cosine_similarity(update, expected, dim=0)
            assert cosine > 0.99, (key, float(cosine))
            assert 0.95 < float(update.norm() / expected.norm()) < 1.05, key
    # per-process BatchNorm (the detector run above) leaves the processes apart
    plain = _load_ranks(two_processes, "detector")
    assert max((a - b).abs().max().item()
               for a, b in zip(plain[0]["bn_before"], plain[1]["bn_before"])) > 1e-3


def test_trainer_on_two_processes(two_processes):
    """The whole trainer: replicas identical after steps on different images; accumulation
    from the total batch (4 images, nominal 8: 2 batches per step after the warm-up of 2
    iterations, so 2 optimizer steps in 3 iterations; per-process batches would give 1);
    BatchNorm statistics of model and EMA identical after the final evaluation; only the main
    process evaluates and writes checkpoints."""
    ranks = _load_ranks(two_processes, "trainer")
    for key, value in ranks[0]["weights"].items():
        torch.testing.assert_close(ranks[1]["weights"][key], value, msg=key)
    expected = [accumulation_steps(it, 2, batch_size=4, nominal=8) for it in range(4)]
    assert expected == [1, 2, 2, 2]
    assert ranks[0]["accumulation"] == ranks[1]["accumulation"] == expected
    assert ranks[0]["ema_updates"] == ranks[1]["ema_updates"] == 2
    for i, (b0, b1) in enumerate(zip(ranks[0]["bn"], ranks[1]["bn"])):
        assert torch.equal(b0, b1), i
    assert "bbox" in ranks[0]["results"]
    assert (two_processes / "model_final.pth").is_file()
