#!/usr/bin/env python
"""Time and peak memory of one training step on dense scenes: every image of the batch holds
N ground-truth boxes (default N = 10, 100, 300, 1000), yolov7-tiny, 640 px, batch 2.

Example:
    python tools/benchmark_dense_gt.py
    python tools/benchmark_dense_gt.py --gt 1000 --opts MODEL.YOLOV7.LOSS.GT_CHUNK 64

Each count runs in a fresh process, so that its peak resident memory (Linux ``VmHWM``) is its
own: "rss before" is after building the model and the batch, "peak" the high-water mark of
the whole process after one forward, backward and SGD step on the CPU. "step s" is wall
clock, "cpu s" the process's CPU time (the same on an idle machine with one thread; the one
to compare on a busy machine). The boxes are random, 8 to 48 px a side (a dense scene of
small objects, as trees in aerial tiles), of random classes; the model is seeded. Single
run; not a test (tests/test_dense_scenes.py runs one small count with a memory bound).
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

import yolov7_d2  # noqa: F401  (compat shims, registrations)
from yolov7_d2.config import load_config

from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "configs" / "coco" / "yolov7-tiny.yaml"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=str(TINY_CONFIG),
                        help="a yolov7_d2 yaml config (default: yolov7-tiny)")
    parser.add_argument("--gt", type=int, nargs="+", default=[10, 100, 300, 1000],
                        help="ground-truth boxes per image (default: %(default)s)")
    parser.add_argument("--size", type=int, default=640, help="square input side (default: 640)")
    parser.add_argument("--batch", type=int, default=2, help="images per step (default: 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--json", action="store_true",
                        help="measure one count in this process and print one JSON line")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides as KEY VALUE pairs")
    return parser.parse_args(argv)


def memory_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in KiB (VmRSS, VmHWM: peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def dense_batch(num_gt: int, size: int, batch: int, num_classes: int, seed: int = 0):
    """``batch`` training inputs (random-noise images) with ``num_gt`` random boxes each."""
    generator = torch.Generator().manual_seed(seed)
    inputs = []
    for _ in range(batch):
        wh = torch.rand(num_gt, 2, generator=generator) * 40 + 8
        xy = torch.rand(num_gt, 2, generator=generator) * (size - wh)
        instances = Instances((size, size))
        instances.gt_boxes = Boxes(torch.cat([xy, xy + wh], 1))
        instances.gt_classes = torch.randint(num_classes, (num_gt,), generator=generator)
        image = torch.randint(256, (3, size, size), generator=generator, dtype=torch.uint8)
        inputs.append({"image": image, "instances": instances})
    return inputs


def measure(config_file: str, num_gt: int, size: int, batch: int, opts=()) -> dict:
    """One training step of the config's model on a dense batch, in this process."""
    cfg = load_config(config_file, [*opts, "MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    inputs = dense_batch(num_gt, size, batch, cfg.MODEL.YOLOV7.NUM_CLASSES)
    rss_before = memory_kib("VmRSS")
    start, cpu_start = time.perf_counter(), time.process_time()
    with EventStorage():
        losses = model(inputs)
        total = sum(losses.values())
        total.backward()
        optimizer.step()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return {"gt": num_gt, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "rss_before_mib": rss_before / 1024,
            "peak_mib": memory_kib("VmHWM") / 1024, "loss": float(total.detach()),
            "finite": bool(torch.isfinite(total))}


def measure_in_subprocess(args, num_gt: int) -> dict:
    command = [sys.executable, __file__, "--json", "--config-file", args.config_file,
               "--gt", str(num_gt), "--size", str(args.size), "--batch", str(args.batch),
               "--threads", str(args.threads), "--opts", *args.opts]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.json:
        torch.set_num_threads(args.threads)
        print(json.dumps(measure(args.config_file, args.gt[0], args.size, args.batch, args.opts)))
        return 0
    print(f"{Path(args.config_file).name}, {args.size} px, batch {args.batch}, "
          f"{args.threads} thread(s), opts {args.opts}")
    print(f"{'GT/image':>9} {'step s':>8} {'cpu s':>8} {'rss before MiB':>15} {'peak MiB':>9} "
          f"{'loss':>9}")
    for num_gt in args.gt:
        row = measure_in_subprocess(args, num_gt)
        print(f"{row['gt']:>9} {row['seconds']:>8.2f} {row['cpu_seconds']:>8.2f} "
              f"{row['rss_before_mib']:>15.0f} {row['peak_mib']:>9.0f} {row['loss']:>9.3f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
