#!/usr/bin/env python
"""Seconds per training iteration of a config under variants of its speed settings: a table.

Each variant is a set of trailing config options applied on top of --config-file (plus the
torch thread count); each runs the real trainer (data loader, mapper, forward, loss,
backward, optimizer, EMA) for --warmup then --iters iterations and reports the median time
of one iteration and the mean data time (waiting for the loader). Variants run one after
the other in this process, so their ratios are comparable; absolute times depend on the CPU
(the table header prints its model and whether it computes bfloat16 natively).

Example (the tree recipes: precision, layout, input size, workers):
    python tools/benchmark_train_step.py --config-file configs/deepforest/yolov7-tiny-trees.yaml \\
        --variant "fp32" SOLVER.AMP.ENABLED False \\
        --variant "fp32 NCHW" SOLVER.AMP.ENABLED False MODEL.YOLOV7.CHANNELS_LAST False \\
        --variant "fp32 320" SOLVER.AMP.ENABLED False INPUT.YOLOV7.IMAGE_SIZE 320
"""
import argparse
import statistics
import tempfile

import torch

import yolov7_d2  # noqa: F401  (detectron2 compat shims, registrations)
from yolov7_d2.config import load_config
from yolov7_d2.engine import prepare_bundled_datasets, setup_yolov7_run
from yolov7_d2.engine.time_budget import time_training_iterations
from yolov7_d2.utils.amp import cpu_has_native_bf16
from yolov7_d2.utils.cpu import cpu_model_and_flags

from detectron2.utils.logger import setup_logger


def time_variant(config_file, opts, threads, warmup, iters):
    """(median s/iter, mean data s/iter) of ``iters`` training iterations after ``warmup``."""
    torch.set_num_threads(threads)
    cfg = load_config(config_file, opts)
    cfg.freeze()
    prepare_bundled_datasets(cfg.DATASETS.TRAIN)
    times, data_times, _ = time_training_iterations(cfg, warmup, iters)
    return statistics.median(times), statistics.mean(data_times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="yaml config of the training run")
    parser.add_argument("--variant", nargs="+", action="append", metavar=("NAME", "KEY VALUE"),
                        required=True,
                        help="a table row: its name, then config options (KEY VALUE pairs); "
                             "repeat for each row")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads (default: torch's choice, %(default)s here)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    parser.add_argument("--iters", type=int, default=10, help="timed iterations per variant")
    args = parser.parse_args(argv)
    setup_logger()
    with tempfile.TemporaryDirectory() as log_dir:
        setup_yolov7_run(log_dir)  # registers the built-in datasets
    rows = [(name, *time_variant(args.config_file, opts, args.threads, args.warmup, args.iters))
            for name, *opts in args.variant]
    print(f"\n{cpu_model_and_flags()[0]}, native bfloat16: {cpu_has_native_bf16()}, torch threads "
          f"{args.threads}, {args.iters} timed iterations after {args.warmup}\n")
    first = rows[0][1]
    print(f"| variant | s/iter | data s/iter | vs {rows[0][0]} |\n|---|---|---|---|")
    for name, seconds, data in rows:
        print(f"| {name} | {seconds:.2f} | {data:.3f} | {seconds / first:.2f}x |")


if __name__ == "__main__":
    main()
