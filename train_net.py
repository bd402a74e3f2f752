#!/usr/bin/env python
"""Train and evaluate YOLOv7 with detectron2.

Examples:
    python train_net.py --config-file configs/coco/yolov7.yaml --num-gpus 8
    python train_net.py --config-file configs/coco/yolov7.yaml --resume
    python train_net.py --config-file configs/coco/yolov7.yaml --eval-only MODEL.WEIGHTS out/model_final.pth

    python train_net.py --config-file configs/coco/yolov7-tiny.yaml --yolo-data my/data.yaml
    python train_net.py --config-file configs/coco/yolov7-tiny.yaml --voc-root VOCdevkit/VOC2007

Trailing KEY VALUE pairs override config keys (see yolov7_d2/config.py for the YOLOv7 ones).
Evaluation uses the EMA weights when the checkpoint has them (the official final model).
"""
import logging

import yolov7_d2  # noqa: F401  (detectron2 compat shims, registrations)
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from yolov7_d2.checkpoint import YOLOv7Checkpointer
from yolov7_d2.config import load_config
from yolov7_d2.data.datasets.yolo_format import add_dataset_arguments, apply_dataset_arguments
from yolov7_d2.engine import YOLOv7Trainer, setup_yolov7_run

logger = logging.getLogger("yolov7_d2")


def setup(args):
    """Config from --config-file and trailing options, frozen, with detectron2's setup."""
    cfg = load_config(args.config_file, args.opts)
    # --yolo-data / --voc-root: register the dataset, point DATASETS.* / NUM_CLASSES at it.
    apply_dataset_arguments(cfg, args)
    cfg.freeze()
    default_setup(cfg, args)
    setup_yolov7_run(cfg.OUTPUT_DIR)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = YOLOv7Trainer.build_model(cfg)
        YOLOv7Checkpointer(model, save_dir=cfg.OUTPUT_DIR, prefer_ema=True).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return YOLOv7Trainer.test(cfg, model)
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
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
