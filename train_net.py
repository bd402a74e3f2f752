#!/usr/bin/env python
"""Train and evaluate YOLOv7 with detectron2.

Examples:
    python train_net.py --config-file configs/coco/yolov7.yaml --num-gpus 8
    python train_net.py --config-file configs/coco/yolov7.yaml --resume
    python train_net.py --config-file configs/coco/yolov7.yaml --eval-only \\
        MODEL.WEIGHTS out/model_final.pth

    python train_net.py --config-file configs/coco/yolov7-tiny.yaml --yolo-data my/data.yaml
    python train_net.py --config-file configs/coco/yolov7-tiny.yaml --voc-root VOCdevkit/VOC2007
    python train_net.py --config-file configs/coco/yolov7-tiny.yaml \\
        --coco-json train.json images/ --coco-val-json val.json images/ SOLVER.YOLOV7.EPOCHS 100

Trailing KEY VALUE pairs override config keys (see yolov7_d2/config.py for the YOLOv7 ones).
The configs count in epochs (SOLVER.YOLOV7.EPOCHS 300, as official): the iterations follow from
the number of training images and SOLVER.IMS_PER_BATCH (the log line "Schedule: ..."), except
for SOLVER.MAX_ITER, SOLVER.WARMUP_ITERS, SOLVER.CHECKPOINT_PERIOD or TEST.EVAL_PERIOD given.
SOLVER.YOLOV7.TIME_BUDGET_MINUTES trains as long as fits that wall time on this machine (the log
line "Time budget ..." gives the iterations, and how to repeat the run; --resume keeps them);
SOLVER.MAX_ITER or SOLVER.YOLOV7.EPOCHS on the command line turns it off.
Evaluation uses the EMA weights when the checkpoint has them (the official final model);
--eval-only runs them in the deploy form (re-parameterized, NHWC), as the predictor does.
"""
import logging
import os
import sys
import time

import yolov7_d2  # noqa: F401  (detectron2 compat shims, registrations)
from yolov7_d2.checkpoint import CheckpointError, YOLOv7Checkpointer
from yolov7_d2.config import keys_set_by, load_config
from yolov7_d2.config_checks import ConfigError, check_config, check_schedule
from yolov7_d2.data.validate import DatasetConfigError
from yolov7_d2.engine import (
    YOLOv7Trainer,
    count_training_images,
    prepare_bundled_datasets,
    resolve_epoch_schedule,
    resolve_time_budget,
    setup_yolov7_run,
)
from yolov7_d2.engine.dataset_options import add_dataset_arguments, apply_dataset_arguments
from yolov7_d2.modeling.reparam import inference_form

from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

logger = logging.getLogger("yolov7_d2")


def setup(args, started=None):
    """Config from --config-file and trailing options, frozen, with detectron2's setup, checked
    (ConfigError / DatasetConfigError naming the key); to train, SOLVER.YOLOV7.EPOCHS and the
    other epoch keys turned into iterations, then SOLVER.YOLOV7.TIME_BUDGET_MINUTES (counted
    from ``started``, a ``time.monotonic()``; default: now)."""
    started = time.monotonic() if started is None else started
    cfg = load_config(args.config_file, args.opts)  # unknown keys, wrong types, missing files
    # --yolo-data / --voc-root / --coco-json: register the dataset, point DATASETS.* and
    # NUM_CLASSES at it.
    apply_dataset_arguments(cfg, args)
    cfg.freeze()
    default_setup(cfg, args)
    setup_yolov7_run(cfg.OUTPUT_DIR)  # registers the bundled datasets
    training = not args.eval_only
    # The bundled datasets the run uses (the main job's tree tiles), prepared on first use.
    prepare_bundled_datasets((cfg.DATASETS.TRAIN if training else ()) + cfg.DATASETS.TEST)
    # Values that cannot work (a zero batch size, an image size off the stride, unregistered
    # datasets, ...): one clear error now, not a ZeroDivisionError in the middle of training.
    check_config(cfg, training=training)
    written = cfg  # the config default_setup wrote to OUTPUT_DIR
    if training and cfg.SOLVER.YOLOV7.EPOCHS > 0:
        # Iteration keys the config files or options set are kept (yolov7_d2/engine/epochs.py).
        cfg = resolve_epoch_schedule(cfg, count_training_images(cfg),
                                     explicit=keys_set_by(args.config_file, args.opts))
    if training and cfg.SOLVER.YOLOV7.TIME_BUDGET_MINUTES > 0:
        given = set(args.opts[0::2]) & {"SOLVER.MAX_ITER", "SOLVER.YOLOV7.EPOCHS"}
        if given:  # a length on the command line is the user's choice over the config's budget
            logger.info("%s given: SOLVER.YOLOV7.TIME_BUDGET_MINUTES %g is off",
                        " and ".join(sorted(given)), cfg.SOLVER.YOLOV7.TIME_BUDGET_MINUTES)
            cfg = cfg.clone()
            cfg.defrost()
            cfg.SOLVER.YOLOV7.TIME_BUDGET_MINUTES = 0.0
            cfg.freeze()
        else:
            cfg = resolve_time_budget(cfg, started, resume=args.resume)
    if cfg is not written:
        save_config(cfg)
    if training:
        check_schedule(cfg)
    return cfg


def save_config(cfg):
    """OUTPUT_DIR/config.yaml again: default_setup wrote it before the epochs were turned into
    iterations (or the time budget into a length), and a run started from it must get the same
    schedule."""
    if comm.is_main_process() and cfg.OUTPUT_DIR:
        with PathManager.open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
            f.write(cfg.dump())


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = YOLOv7Trainer.build_model(cfg)
        YOLOv7Checkpointer(model, save_dir=cfg.OUTPUT_DIR, prefer_ema=True).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return YOLOv7Trainer.test(cfg, inference_form(model))
    trainer = YOLOv7Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    results = trainer.train()
    if comm.is_main_process() and results:
        logger.info("Final evaluation (EMA weights): %s", dict(results))
    return results


def parse_args(argv=None):
    parser = default_argument_parser(epilog=__doc__)
    add_dataset_arguments(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    try:
        launch(main, args.num_gpus, num_machines=args.num_machines,
               machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,))
    except (ConfigError, DatasetConfigError, CheckpointError) as e:
        # The message names the key, dataset or file and the fix; a traceback would bury it.
        sys.exit(f"train_net.py: error: {e}")
