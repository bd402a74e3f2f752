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

from omegaconf import OmegaConf

import yolov7_d2  # noqa: F401  (detectron2 compat shims, registrations)
from yolov7_d2.checkpoint import YOLOv7Checkpointer
from yolov7_d2.engine import (
    AnchorCheckHook,
    EarlyStop,
    ModelEMA,
    TrainingArtifactsHook,
    prepare_bundled_datasets,
    resolve_lazy_epoch_schedule,
    setup_yolov7_run,
    yolov7_train_loop,
    yolov7_training_hooks,
)
from yolov7_d2.modeling.reparam import inference_form

from detectron2.config import LazyConfig, instantiate
from detectron2.data import MetadataCatalog
from detectron2.engine import default_argument_parser, default_setup, default_writers, launch
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm

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
    """The train loop of ``cfg`` with its hooks (those of train_net.py: engine/hooks.py), and
    its checkpointer (model, EMA, optimizer, scheduler and iteration), before any checkpoint
    is loaded."""
    model = instantiate(cfg.model)
    logger.info("Model:\n%s", model)
    model.to(cfg.train.device)
    ema_cfg = cfg.train.ema
    ema = ModelEMA(model, ema_cfg.decay, ema_cfg.tau) if ema_cfg.enabled else None

    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    # The training mapper, owned here: the loader samples its dataset, the hooks read it.
    mapper = instantiate(cfg.dataloader.train.mapper)
    train_loader = _train_loader(cfg, mapper)
    model = create_ddp_model(model, **cfg.train.ddp)
    trainer = yolov7_train_loop(
        model, train_loader, optimizer, ema=ema, amp=cfg.train.amp.enabled,
        batch_size=cfg.dataloader.train.total_batch_size,
        nominal_batch_size=cfg.train.nominal_batch_size, warmup_iters=cfg.train.warmup_iters,
        multi_scale_size=mapper.image_size if cfg.train.multi_scale else 0,
        seed=cfg.train.seed)
    cfg.lr_multiplier.optimizer = optimizer
    scheduler = instantiate(cfg.lr_multiplier)
    extra = {"ema": ema} if ema is not None else {}
    # init_checkpoint of another class count (official COCO weights) is fine-tuned.
    checkpointer = YOLOv7Checkpointer(model, cfg.train.output_dir, trainer=weakref.proxy(trainer),
                                      finetune=True, **extra)
    trainer.last_eval_results = {}
    has_evaluator = "evaluator" in cfg.dataloader
    trainer.register_hooks(yolov7_training_hooks(
        trainer, checkpointer=checkpointer, checkpoint_period=cfg.train.checkpointer.period,
        max_to_keep=cfg.train.checkpointer.max_to_keep, eval_period=cfg.train.eval_period,
        test=lambda evaluated: do_test(cfg, evaluated),
        best_metric=cfg.train.best_metric if has_evaluator else "",
        early_stop_patience=cfg.train.early_stop_patience,
        writers=default_writers(cfg.train.output_dir, cfg.train.max_iter)
        if comm.is_main_process() else None,
        log_period=cfg.train.log_period, scheduler=scheduler,
        start_hooks=_start_hooks(cfg, mapper)))
    return trainer, checkpointer


def _train_loader(cfg, mapper):
    """``cfg.dataloader.train`` built around the already instantiated ``mapper``."""
    spec = {key: cfg.dataloader.train[key] for key in cfg.dataloader.train if key != "mapper"}
    return instantiate(OmegaConf.create({**spec, "mapper": mapper}, flags={"allow_objects": True}))


def _start_hooks(cfg, mapper):
    """As train_net.py: the training artefacts (``train.artifacts``) and the anchor check
    (``train.anchor_check``) on the mapper's dataset."""
    ret = []
    if comm.is_main_process() and cfg.train.get("artifacts", True):
        names = mapper_dataset_names(cfg)
        classes = MetadataCatalog.get(names[0]).get("thing_classes", []) if names else []
        ret.append(TrainingArtifactsHook(cfg.train.output_dir, mapper, class_names=classes,
                                         seed=cfg.train.seed))
    check = cfg.train.get("anchor_check", {"min_bpr": 0.98, "autoanchor": True})
    if check["min_bpr"] > 0:
        ret.append(AnchorCheckHook(mapper.dataset, image_size=mapper.image_size,
                                   anchor_t=cfg.model.loss.anchor_t, min_bpr=check["min_bpr"],
                                   autoanchor=check["autoanchor"], seed=max(cfg.train.seed, 0),
                                   config_hint="the LazyConfig (model.anchors)"))
    return ret


def _names(dataset_dicts):
    """The registered names a ``load_dataset_dicts`` node loads (one or a list)."""
    names = dataset_dicts.get("names", []) if dataset_dicts is not None else []
    return [names] if isinstance(names, str) else list(names)


def mapper_dataset_names(cfg):
    """The registered names of ``dataloader.train.mapper.dataset_dicts``."""
    return _names(cfg.dataloader.train.mapper.dataset_dicts)


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
    setup_yolov7_run(cfg.train.output_dir)  # registers the bundled datasets
    # The bundled datasets the run uses, prepared on first use.
    test = _names(cfg.dataloader.test.get("dataset")) if "test" in cfg.dataloader else []
    prepare_bundled_datasets(test if args.eval_only else mapper_dataset_names(cfg) + test)
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
        YOLOv7Checkpointer(model, cfg.train.output_dir, prefer_ema=True).resume_or_load(
            cfg.train.init_checkpoint, resume=args.resume
        )
        return do_test(cfg, create_ddp_model(inference_form(model)))
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
