"""Distributed data parallel training on the CPU: two processes joined by a gloo process group
stand in for ``train_net.py --num-gpus 2`` (detectron2's launch needs CUDA and NCCL). Checks
that a step sums the gradient over all processes' images, as official train.py does, and that
the trainer keeps the replicas identical, checkpoints once and evaluates."""
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from detectron2.utils import comm
from detectron2.utils.events import EventStorage
from yolov7_d2.config import load_config
from yolov7_d2.engine import YOLOv7Trainer, YOLOv7TrainLoop, setup_yolov7_run
from test_train import CONFIG, small_run_opts

WORLD_SIZE = 2


class _WeightedSum(torch.nn.Module):
    """Loss = weight * sum of the batch's values: its gradient is the sum of the values."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))

    def forward(self, batch):
        return {"loss": self.weight * sum(sample["value"] for sample in batch)}


def _step_sums_gradients_over_processes(rank: int) -> float:
    model = DistributedDataParallel(_WeightedSum())
    batch = [{"value": float(rank + 1)}]  # process 0 sees 1.0, process 1 sees 2.0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loop = YOLOv7TrainLoop(model, iter(lambda: batch, None), optimizer,
                           accumulation=lambda it: 1, ema=None)
    with EventStorage():
        loop.iter = 0
        loop.run_step()
    return model.module.weight.item()


def _worker(rank: int, init_file: str, out_dir: str):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD_SIZE)
    comm._LOCAL_PROCESS_GROUP = dist.new_group(list(range(WORLD_SIZE)))
    try:
        toy_weight = _step_sums_gradients_over_processes(rank)
        opts = small_run_opts(out_dir, 3) + ["SOLVER.IMS_PER_BATCH", "4",
                                              "SOLVER.YOLOV7.NOMINAL_BATCH_SIZE", "4"]
        cfg = load_config(str(CONFIG), opts)
        setup_yolov7_run(cfg.OUTPUT_DIR)  # registers the tree tiles in this process
        trainer = YOLOv7Trainer(cfg)
        trainer.resume_or_load(resume=False)
        results = trainer.train()
        # Parameters only: BatchNorm running statistics are per process (broadcast_buffers off).
        weights = {k: v.detach().clone() for k, v in trainer.model.module.named_parameters()}
        torch.save({"toy_weight": toy_weight, "weights": weights, "results": results,
                    "ema_updates": trainer.ema.updates},
                   f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_training_on_cpu_processes(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD_SIZE,
             join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]

    # Gradient 1 + 2 = 3 (the whole batch), not DDP's average 1.5: 1 - 0.1 * 3.
    assert all(abs(r["toy_weight"] - 0.7) < 1e-6 for r in ranks), [r["toy_weight"] for r in ranks]

    # The replicas stay identical after optimizer steps on different images.
    for key, value in ranks[0]["weights"].items():
        torch.testing.assert_close(ranks[1]["weights"][key], value, msg=key)
    assert ranks[0]["ema_updates"] == ranks[1]["ema_updates"] >= 1
    # Only the main process evaluates and writes checkpoints.
    assert "bbox" in ranks[0]["results"]
    assert (tmp_path / "model_final.pth").is_file()
