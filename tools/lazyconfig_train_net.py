#!/usr/bin/env python
"""Train and evaluate YOLOv7 from a LazyConfig (configs/coco/*.py, configs/research/*.py).

Examples:
    python tools/lazyconfig_train_net.py --config-file configs/coco/yolov7.py --num-gpus 8
    python tools/lazyconfig_train_net.py --config-file configs/coco/yolov7_tiny.py --resume
    python tools/lazyconfig_train_net.py --config-file configs/coco/yolov7.py --eval-only \\
        train.init_checkpoint=output/model_final.pth

Trailing ``a.b=c`` arguments override config values (e.g. ``model.num_classes=1
dataloader.train.total_batch_size=16``). The recipe is train_net.py's, from the same
``yolov7_d2.engine`` pieces: gradient accumulation to ``train.nominal_batch_size`` (ramped up
during the warm-up), the warm-up + one-cycle schedule (``lr_multiplier``), model EMA
(checkpointed and evaluated), close mosaic, optional AMP and multi-scale, ``model_best.pth`` by
``train.best_metric`` and early stopping (``train.early_stop_patience``). Evaluation uses the
EMA weights, from a training checkpoint too (--eval-only). The schedule is in epochs
(``train.epochs``...): ``train.max_iter``, ``train.warmup_iters``, ``train.eval_period`` and
``train.checkpointer.period`` left None are derived from the number of training images.
"""
import logging
import os
import weakref

import yolov7_d2  # noqa: F401  (detectron2 compat shims, registrations)
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import default_argument_parser, default_setup, default_writers, hooks, launch
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from yolov7_d2.checkpoint import YOLOv7Checkpointer
from yolov7_d2.engine import (
    EarlyStop,
    ModelEMA,
    MultiScale,
    YOLOv7TrainLoop,
    accumulation_steps,
    best_model_hooks,
    resolve_lazy_epoch_schedule,
    setup_yolov7_run,
    unwrap_model,
)

logger = logging.getLogger("yolov7_d2")


def do_test(cfg, model):
    """COCO evaluation of ``model`` on ``dataloader.test`` (nothing without an evaluator)."""
    if "evaluator" not in cfg.dataloader:
        return {}
    results = inference_on_dataset(model, instantiate(cfg.dataloader.test),
                                   instantiate(cfg.dataloader.evaluator))
    if comm.is_main_process():
        print_csv_format(results)
    return results


def build_training(cfg):
    """The train loop of ``cfg`` with its hooks, and its checkpointer (model, EMA, optimizer,
    scheduler and iteration), before any checkpoint is loaded."""
    model = instantiate(cfg.model)
    logger.info("Model:\n%s", model)
    model.to(cfg.train.device)
    ema_cfg = cfg.train.ema
    ema = ModelEMA(model, ema_cfg.decay, ema_cfg.tau) if ema_cfg.enabled else None

    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)
    model = create_ddp_model(model, **cfg.train.ddp)

    batch, nominal = cfg.dataloader.train.total_batch_size, cfg.train.nominal_batch_size
    warmup = cfg.train.warmup_iters
    multi_scale = None
    if cfg.train.multi_scale:
        stride = unwrap_model(model).backbone.size_divisibility
        multi_scale = MultiScale(cfg.dataloader.train.mapper.image_size, stride,
                                 seed=max(cfg.train.seed, 0))
    trainer = YOLOv7TrainLoop(
        model, train_loader, optimizer, ema=ema, amp=cfg.train.amp.enabled,
        accumulation=lambda it: accumulation_steps(it, warmup, batch, nominal),
        multi_scale=multi_scale,
    )
    cfg.lr_multiplier.optimizer = optimizer
    scheduler = instantiate(cfg.lr_multiplier)
    extra = {"ema": ema} if ema is not None else {}
    # init_checkpoint of another class count (official COCO weights) is fine-tuned.
    checkpointer = YOLOv7Checkpointer(model, cfg.train.output_dir, trainer=weakref.proxy(trainer),
                                      finetune=True, **extra)

    def evaluate():
        # Official: the EMA weights are the model that is evaluated (and deployed).
        evaluated = ema.ema if ema is not None else unwrap_model(model)
        trainer.last_eval_results = do_test(cfg, evaluated)
        return trainer.last_eval_results

    trainer.register_hooks([
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=scheduler),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
        if comm.is_main_process() else None,
        hooks.EvalHook(cfg.train.eval_period, evaluate),
        # model_best.pth and early stopping, from the results of the EvalHook just before.
        *best_model_hooks(cfg.train.eval_period, checkpointer,
                          cfg.train.best_metric if "evaluator" in cfg.dataloader else "",
                          patience=cfg.train.early_stop_patience),
        hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter),
                             period=cfg.train.log_period)
        if comm.is_main_process() else None,
    ])
    trainer.last_eval_results = {}
    return trainer, checkpointer


def do_train(args, cfg):
    """Train (resuming from the last checkpoint of train.output_dir with --resume); returns
    the last evaluation results of the EMA model."""
    if "test" in cfg.dataloader:
        # Loads (validates, caches) the evaluation images now, not at the first evaluation.
        instantiate(cfg.dataloader.test.dataset)
    trainer, checkpointer = build_training(cfg)
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    # The checkpoint holds the iteration that just finished.
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    try:
        trainer.train(start_iter, cfg.train.max_iter)
    except EarlyStop:
        pass  # a clean end: the hook logged why and saved model_final
    return trainer.last_eval_results


def setup(args):
    """The LazyConfig of --config-file with the overrides, with detectron2's setup; to train,
    the iterations left None derived from the epochs."""
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, args.opts)
    default_setup(cfg, args)
    setup_yolov7_run(cfg.train.output_dir)  # registers the built-in datasets: counted below
    if not args.eval_only and cfg.train.get("epochs"):
        num_images = len(instantiate(cfg.dataloader.train.mapper.dataset_dicts))
        cfg = resolve_lazy_epoch_schedule(cfg, num_images)
        if comm.is_main_process():
            # default_setup saved it before the epochs were turned into iterations.
            LazyConfig.save(cfg, os.path.join(cfg.train.output_dir, "config.yaml"))
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        model = create_ddp_model(model)
        YOLOv7Checkpointer(model, cfg.train.output_dir, prefer_ema=True).resume_or_load(
            cfg.train.init_checkpoint, resume=args.resume
        )
        return do_test(cfg, model)
    results = do_train(args, cfg)
    if comm.is_main_process() and results:
        logger.info("Final evaluation (EMA weights): %s", dict(results))
    return results


def parse_args(argv=None):
    return default_argument_parser(epilog=__doc__).parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
