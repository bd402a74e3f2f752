#!/usr/bin/env python
"""YOLOv7 on a GPU: the paper's speed figures and this project's GPU paths, as tables.

Three parts (``--parts``), each a markdown table, under a header naming the GPU, torch, CUDA
and the date:

* fps: frames per second of the forward (backbone, head and box decoding, as the official
  model's; no NMS) at 640 x 640, float16, batch 1 and 32, for yolov7-tiny, yolov7 and
  yolov7x, next to the paper's V100 figures at batch 1 (Table 1: tiny-SiLU 286, yolov7 161,
  yolov7x 114; fp16, no NMS; our yolov7-tiny is the official LeakyReLU one). Ours runs the
  deploy form (re-parameterized, NHWC) as the predictor does (float16 autocast,
  ``TEST.YOLOV7.AMP``) and with float16 weights (``model.half()``, as the official
  test.py); the official fused model (``.half()``) runs beside it where the official code
  is importable (``--official``, as tools/benchmark.py). cuDNN autotuning is on for both.
* loss: one assignment + loss + backward of yolov7's lead head at batch 32 with 30 boxes per
  image (random maps on the GPU): the host-device synchronisations it makes, counted with
  ``torch.cuda.set_sync_debug_mode``, and its time; ours against the official
  ``ComputeLossOTA``.
* train: a short AMP training run of ``--train-config`` (default: the main job's, yolov7-tiny
  on the tree tiles) with train_net.py on the GPU, ``--train-minutes`` long: iterations,
  seconds per iteration, the last total loss, peak GPU memory and the evaluation's AP.

Example (on a machine with a CUDA GPU, about 5 minutes):
    python tools/benchmark_gpu.py
    python tools/benchmark_gpu.py --parts fps --models yolov7-tiny --batches 1

``--device cpu`` runs the same code on the CPU (float32 there, no synchronisation count): a
check of the tool, with no meaning for speed.
"""
import argparse
import copy
import datetime
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/benchmark.py

import benchmark as cpu_bench  # noqa: E402  (puts the checkout on sys.path too)

from yolov7_d2.modeling.reparam import inference_form  # noqa: E402

from detectron2.utils.events import EventStorage  # noqa: E402

ROOT = cpu_bench.ROOT
PARTS = ("fps", "loss", "train")
#: Frames per second at batch 1 on a V100 in float16 (paper, Table 1; "yolov7-tiny" is the
#: paper's tiny-SiLU).
PAPER_V100_FPS = {"yolov7-tiny": 286, "yolov7": 161, "yolov7x": 114}
TRAIN_CONFIG = ROOT / "configs" / "deepforest" / "yolov7-tiny-trees.yaml"


def header(device: torch.device) -> str:
    import detectron2

    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        where = (f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA "
                 f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    else:
        where = f"{device.type} (a check of the tool: no meaning for speed)"
    return (f"{datetime.date.today()}, {where}; torch {torch.__version__}, "
            f"detectron2 {detectron2.__version__}")


def seconds_per_call(fn, device: torch.device, calls: int, rounds: int = 5) -> float:
    """Median over ``rounds`` of the mean seconds of ``calls`` calls of ``fn``, after two
    untimed calls; the GPU is synchronised around each round, not inside it."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(rounds):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        synchronize(device)
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_syncs(fn, device: torch.device):
    """Host-device synchronisations that ``fn()`` makes (None off CUDA): torch warns at each
    one in sync debug mode "warn"."""
    if device.type != "cuda":
        fn()
        return None
    synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def fps_rows(off, device, names, batches, size, calls):
    """(label, official FPS or None, our autocast FPS, our .half() FPS, paper FPS or None)."""
    rows = []
    for name in names:
        rows += model_fps_rows(off, device, name, batches, size, calls)
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the last model's memory, before the next one's
    return rows


def model_fps_rows(off, device, name, batches, size, calls):
    half = torch.float16 if device.type == "cuda" else torch.float32
    pair = cpu_bench.Pair(off, name)
    ours = inference_form(pair.ours).to(device)
    ours_half = copy.deepcopy(ours).to(device, half)
    official = None
    if pair.official is not None:
        with torch.no_grad():
            official = cpu_bench.official_fused(pair.official).to(device, half)
    rows = []
    for batch in batches:
        x = torch.rand(batch, 3, size, size, device=device)
        x_nhwc = x.contiguous(memory_format=torch.channels_last)
        x_half = x_nhwc.to(half)
        with torch.inference_mode():
            with torch.autocast(device.type, dtype=half, enabled=device.type == "cuda"):
                t_auto = seconds_per_call(lambda: ours._decoded_forward(x_nhwc), device,
                                          calls)
            t_half = seconds_per_call(lambda: ours_half._decoded_forward(x_half), device,
                                      calls)
            t_off = None
            if official is not None:
                x_off = x.to(half)
                t_off = seconds_per_call(lambda: official(x_off), device, calls)
        fps = [None if t is None else batch / t for t in (t_off, t_auto, t_half)]
        paper = PAPER_V100_FPS.get(name) if batch == 1 else None
        rows.append((f"{name} b{batch} {size}", *fps, paper))
    return rows


def loss_rows(off, device, batch, boxes_per_image, size):
    """[(side, synchronisations, seconds)] of one assignment + loss + backward."""
    pair = cpu_bench.Pair(off, "yolov7")
    model = pair.ours.to(device)
    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(batch, 3, size // s, size // s, 85, generator=g).to(device)
            for s in model.strides]
    scale = size / 640
    boxes = [(cpu_bench.random_boxes(boxes_per_image, g) * scale).to(device)
             for _ in range(batch)]
    classes = [torch.randint(80, (boxes_per_image,), generator=g).to(device)
               for _ in range(batch)]

    def ours():
        p = [m.clone().requires_grad_() for m in maps]
        with EventStorage():
            losses = model.loss(p, None, boxes, classes, model.anchors, model.strides)
            sum(losses.values()).backward()

    sides = [("ours (YOLOv7Loss)", ours)]
    if pair.official is not None:
        official_loss = cpu_bench.official_compute_loss(off, pair.official.to(device),
                                                        "hyp.scratch.p5.yaml")
        targets = cpu_bench.official_targets([b.cpu() / scale for b in boxes],
                                             [c.cpu() for c in classes]).to(device)
        images = torch.zeros(batch, 3, size, size, device=device)

        def official():
            p = [m.clone().requires_grad_() for m in maps]
            official_loss(p, targets, images)[0].backward()

        sides.insert(0, ("official (ComputeLossOTA)", official))
    rows = []
    for label, fn in sides:
        fn()  # warm-up: kernels loaded, memory pools filled
        syncs = count_syncs(fn, device)
        rows.append((label, syncs, seconds_per_call(fn, device, calls=1, rounds=3)))
    return rows


def train_run(device, config: Path, minutes: float, opts, output_dir: Path) -> dict:
    """Run train_net.py on ``config`` with AMP for ``minutes`` (0: the config's MAX_ITER) and
    return what its metrics.json says."""
    command = [sys.executable, str(ROOT / "train_net.py"), "--config-file", str(config),
               "MODEL.DEVICE", device.type, "SOLVER.AMP.ENABLED", "True",
               "SOLVER.YOLOV7.TIME_BUDGET_MINUTES", str(minutes),
               "OUTPUT_DIR", str(output_dir), *opts]
    log = output_dir / "benchmark_gpu_train.log"
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        done = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log.read_text().splitlines()[-20:]
        raise RuntimeError(f"train_net.py failed (exit {done.returncode}); the end of {log}:\n"
                           + "\n".join(tail))
    return summarize_run(output_dir / "metrics.json", log.read_text())


def summarize_run(metrics: Path, log_text: str) -> dict:
    """Iterations, median seconds per iteration, the last total loss and the last
    evaluation's bbox AP / AP50 from detectron2's metrics.json, and the peak GPU memory (MB)
    from the log's ``max_mem`` (CUDA runs only log it)."""
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    train = [r for r in records if "total_loss" in r]
    evals = [r for r in records if "bbox/AP" in r]
    if not train:
        raise RuntimeError(f"{metrics} holds no training iterations")
    times = [r["time"] for r in train if "time" in r]
    memory = [int(m) for m in re.findall(r"max_mem: (\d+)M", log_text)]
    return {"iterations": train[-1]["iteration"] + 1,
            "seconds_per_iteration": statistics.median(times) if times else None,
            "total_loss": train[-1]["total_loss"],
            "peak_memory_mb": max(memory) if memory else None,
            "AP": evals[-1]["bbox/AP"] if evals else None,
            "AP50": evals[-1]["bbox/AP50"] if evals else None}


def number(value, fmt: str = "{:,.1f}") -> str:
    return "" if value is None else fmt.format(value)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda",
                        help="torch device (default: cuda; cpu checks the tool)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                        help="which tables to print (default: all)")
    parser.add_argument("--official", default="auto", metavar="DIR",
                        help="official yolov7 checkout; 'auto' (default): the installed "
                             "sas-yolov7; 'none': ours only")
    parser.add_argument("--models", nargs="+", default=list(PAPER_V100_FPS),
                        help="configs/coco names for the fps table (default: yolov7-tiny yolov7 "
                             "yolov7x)")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32],
                        help="batch sizes of the fps table (default: 1 32)")
    parser.add_argument("--size", type=int, default=640,
                        help="square input side of the fps and loss tables (default: 640)")
    parser.add_argument("--calls", type=int, default=20,
                        help="forwards per timed round in the fps table: 5 rounds, medians "
                             "(default: %(default)s)")
    parser.add_argument("--loss-batch", type=int, default=32,
                        help="batch of the loss table (default: %(default)s)")
    parser.add_argument("--loss-boxes", type=int, default=30,
                        help="boxes per image of the loss table (default: %(default)s)")
    parser.add_argument("--train-config", type=Path, default=TRAIN_CONFIG,
                        help="config of the AMP training run (default: the main job's)")
    parser.add_argument("--train-minutes", type=float, default=2.0,
                        help="its time budget; 0: the config's SOLVER.MAX_ITER (default: 2)")
    parser.add_argument("--train-opts", nargs=argparse.REMAINDER, default=[],
                        help="config KEY VALUE pairs for the training run (last argument)")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="where the training run writes (default: a temporary directory)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here: run on a machine with a GPU, or --device cpu to "
                     "check the tool")
    torch.backends.cudnn.benchmark = True
    print(header(device))
    try:
        off = cpu_bench.official_modules(args.official)
    except ImportError as e:  # installed, but a module it needs is missing
        off = None
        print(f"official: {e}; ours only")
    else:
        print("official: " + ("not found (ours only)" if off is None
                              else str(off.cfg.parents[1])))
    if "fps" in args.parts:
        print("\n| model, batch, input | official fused .half() | ours, autocast float16 "
              "(predictor) | ours, .half() | paper, V100 |\n|---|---|---|---|---|")
        for label, *fps in fps_rows(off, device, args.models, args.batches, args.size,
                                    args.calls):
            print(f"| {label} | " + " | ".join(number(v, "{:,.0f} FPS") for v in fps) + " |",
                  flush=True)
    if "loss" in args.parts:
        print(f"\n| assignment + loss + backward, yolov7, b{args.loss_batch}, "
              f"{args.loss_boxes} GT per image, {args.size} | host-device syncs | time |"
              "\n|---|---|---|")
        for label, syncs, seconds in loss_rows(off, device, args.loss_batch, args.loss_boxes,
                                               args.size):
            print(f"| {label} | {number(syncs, '{:,}')} | {seconds * 1000:,.1f} ms |",
                  flush=True)
    if "train" in args.parts:
        with tempfile.TemporaryDirectory() as tmp:
            out = args.output_dir or Path(tmp)
            summary = train_run(device, args.train_config, args.train_minutes,
                                args.train_opts, out)
        print(f"\nAMP training run: {args.train_config.name} {' '.join(args.train_opts)}\n\n"
              "| iterations | s / iteration | last total loss | peak memory | val AP | AP50 |"
              "\n|---|---|---|---|---|---|\n"
              f"| {summary['iterations']} | {number(summary['seconds_per_iteration'], '{:.3f}')}"
              f" | {summary['total_loss']:.3f} | {number(summary['peak_memory_mb'], '{:,.0f} MB')}"
              f" | {number(summary['AP'])} | {number(summary['AP50'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
