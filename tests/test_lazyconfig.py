"""LazyConfigs (configs/**/*.py): every one instantiates, each builds the same model and recipe
as its yaml twin, overrides stay consistent, and tools/lazyconfig_train_net.py trains,
checkpoints, resumes and evaluates on the real DeepForest tree tiles."""
from pathlib import Path

import pytest
import torch

from yolov7_d2.config import keys_set_by, load_config
from yolov7_d2.data import YOLOv7MosaicMapper
from yolov7_d2.data.test_mapper import build_yolov7_test_mapper as build_test_mapper
from yolov7_d2.engine import YOLOv7Trainer, resolve_epoch_schedule, resolve_lazy_epoch_schedule

from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import build_model

from scripts import load_script

# Trains or loads the bundled tree tiles.
pytestmark = pytest.mark.usefixtures("deepforest_prepared")

ROOT = Path(__file__).resolve().parents[1]
LEAVES = sorted(str(p.relative_to(ROOT / "configs")) for p in ROOT.glob("configs/*/*.py")
                if p.parent.name != "common")
LOSS_KEYS = ("num_classes", "box_gain", "obj_gain", "cls_gain", "balance", "anchor_t",
             "aux_weight", "topk", "gt_chunk", "cls_pos", "cls_neg")
META_KEYS = ("num_classes", "conf_thresh", "nms_thresh", "merge_iou", "max_detections",
             "max_nms_candidates", "multi_label", "strides", "head_in_features")
SCHEDULE_KEYS = ("max_iter", "warmup_iters", "warmup_bias_lr", "warmup_momentum", "momentum",
                 "final_ratio", "decay")


def yaml_twin(leaf: str) -> Path:
    """configs/coco/yolov7_tiny.py -> configs/coco/yolov7-tiny.yaml."""
    return ROOT / "configs" / leaf.replace("_", "-").replace(".py", ".yaml")


def load_pair(leaf: str, lazy_overrides=(), yaml_opts=()):
    cfg = LazyConfig.load(str(ROOT / "configs" / leaf))
    cfg = LazyConfig.apply_overrides(cfg, list(lazy_overrides))
    return cfg, load_config(str(yaml_twin(leaf)), ["MODEL.DEVICE", "cpu", *yaml_opts])


def assert_same_model(lazy_model, yaml_model):
    lazy_shapes = {k: tuple(v.shape) for k, v in lazy_model.state_dict().items()}
    assert lazy_shapes == {k: tuple(v.shape) for k, v in yaml_model.state_dict().items()}
    assert (sum(p.numel() for p in lazy_model.parameters())
            == sum(p.numel() for p in yaml_model.parameters()))
    for key in META_KEYS:
        assert getattr(lazy_model, key) == getattr(yaml_model, key), key
    for key in ("anchors", "pixel_mean", "pixel_std"):
        assert torch.equal(getattr(lazy_model, key), getattr(yaml_model, key)), key
    assert (lazy_model.aux_head is None) == (yaml_model.aux_head is None)
    for key in LOSS_KEYS:
        assert getattr(lazy_model.loss, key) == pytest.approx(getattr(yaml_model.loss, key)), key


def test_every_leaf_has_a_yaml_twin():
    assert len(LEAVES) == 11
    assert all(yaml_twin(leaf).is_file() for leaf in LEAVES)


@pytest.mark.parametrize("leaf", LEAVES)
def test_lazyconfig_builds_the_model_and_recipe_of_its_yaml(leaf):
    cfg, ycfg = load_pair(leaf)
    train, solver = cfg.train, ycfg.SOLVER
    assert (train.epochs, train.warmup_epochs, train.min_warmup_iters) == (
        solver.YOLOV7.EPOCHS, solver.YOLOV7.WARMUP_EPOCHS, solver.YOLOV7.MIN_WARMUP_ITERS)
    assert (train.checkpoint_period_epochs, train.eval_period_epochs) == (
        solver.YOLOV7.CHECKPOINT_PERIOD_EPOCHS, ycfg.TEST.YOLOV7.EVAL_PERIOD_EPOCHS)
    assert (train.best_metric, train.early_stop_patience) == (
        ycfg.TEST.YOLOV7.BEST_METRIC, ycfg.TEST.YOLOV7.EARLY_STOP_PATIENCE)
    # The same iterations from the epochs, for COCO train2017's size.
    cfg = resolve_lazy_epoch_schedule(cfg, 118287)
    ycfg = resolve_epoch_schedule(ycfg, 118287, keys_set_by(str(yaml_twin(leaf))))
    model, yaml_model = instantiate(cfg.model), build_model(ycfg)
    assert_same_model(model, yaml_model)

    # Data: the mapper's hyper-parameters are those the yaml gives (from_config; the groups
    # MixProbs, PerspectiveRange, ... built), the test resize and format follow the training
    # ones.
    mapper = cfg.dataloader.train.mapper
    expected = YOLOv7MosaicMapper.from_config(ycfg, is_train=True, dataset_dicts=[])
    expected.pop("dataset_dicts")
    expected["hsv_gains"] = list(expected["hsv_gains"])
    assert {k: instantiate(mapper[k]) for k in expected} == expected
    assert [mapper.dataset_dicts.names] == list(ycfg.DATASETS.TRAIN)
    assert mapper.dataset_dicts.filter_empty == ycfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
    assert [cfg.dataloader.test.dataset.names] == list(ycfg.DATASETS.TEST)
    # the evaluation geometry: official letterbox, its image size, stride and batch shapes
    test_mapper, expected_test = instantiate(cfg.dataloader.test.mapper), build_test_mapper(ycfg)
    assert type(test_mapper) is type(expected_test)
    keys = ("image_size", "stride", "batch_size", "image_format")
    assert [getattr(test_mapper, k) for k in keys] == [getattr(expected_test, k) for k in keys]
    assert cfg.dataloader.evaluator.backend == ycfg.TEST.YOLOV7.EVAL_BACKEND
    assert cfg.dataloader.train.total_batch_size == ycfg.SOLVER.IMS_PER_BATCH
    assert cfg.dataloader.train.num_workers == ycfg.DATALOADER.NUM_WORKERS

    # Optimizer and schedule: same groups, LR, momentum, (scaled) weight decay, warm-up, decay.
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    yaml_optimizer = YOLOv7Trainer.build_optimizer(ycfg, yaml_model)
    for group, yaml_group in zip(optimizer.param_groups, yaml_optimizer.param_groups, strict=True):
        assert len(group["params"]) == len(yaml_group["params"])
        for key in ("name", "lr", "momentum", "nesterov", "weight_decay"):
            assert group[key] == pytest.approx(yaml_group[key]), key
    cfg.lr_multiplier.optimizer = optimizer
    schedule = instantiate(cfg.lr_multiplier)
    yaml_schedule = YOLOv7Trainer.build_lr_scheduler(ycfg, yaml_optimizer)
    for key in SCHEDULE_KEYS:
        assert getattr(schedule, key) == getattr(yaml_schedule, key), key

    train, solver = cfg.train, ycfg.SOLVER
    assert (train.max_iter, train.warmup_iters, train.nominal_batch_size) == (
        solver.MAX_ITER, solver.WARMUP_ITERS, solver.YOLOV7.NOMINAL_BATCH_SIZE)
    assert (train.ema.decay, train.ema.tau) == (solver.YOLOV7.EMA_DECAY, solver.YOLOV7.EMA_TAU)
    assert train.checkpointer.period == solver.CHECKPOINT_PERIOD
    assert train.eval_period == ycfg.TEST.EVAL_PERIOD
    assert train.amp.enabled == solver.AMP.ENABLED
    assert train.multi_scale == ycfg.INPUT.YOLOV7.MULTI_SCALE


def test_overrides_keep_the_lazyconfig_consistent():
    """Width, classes and image size are single keys: the heads and loss gains follow them."""
    cfg, ycfg = load_pair(
        "coco/yolov7_w6.py",
        ["model.backbone.width_multiple=0.25", "model.num_classes=3",
         "dataloader.train.mapper.image_size=320"],
        ["MODEL.YOLOV7.WIDTH_MULTIPLE", "0.25", "MODEL.YOLOV7.NUM_CLASSES", "3",
         "INPUT.YOLOV7.IMAGE_SIZE", "320"],
    )
    assert_same_model(instantiate(cfg.model), build_model(ycfg))
    test_mapper = instantiate(cfg.dataloader.test.mapper)
    assert (test_mapper.image_size, test_mapper.stride) == (320, 64)


def load_tool():
    return load_script("tools/lazyconfig_train_net.py")


def small_run(output_dir, max_iter):
    """A narrow yolov7-tiny on 160-px versions of the real DeepForest tiles."""
    return [
        "model.num_classes=1", "model.backbone.width_multiple=0.25",
        "dataloader.train.mapper.image_size=160",
        "dataloader.train.mapper.dataset_dicts.names=deepforest_trees_train",
        "dataloader.test.dataset.names=deepforest_trees_val",
        "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0", f"train.max_iter={max_iter}", "train.warmup_iters=2",
        "train.checkpointer.period=1", f"train.eval_period={max_iter}", "train.device=cpu",
        f"train.output_dir={output_dir}",
    ]


def test_lazyconfig_train_net_trains_resumes_and_evaluates(tmp_path):
    tool = load_tool()
    config = str(ROOT / "configs" / "coco" / "yolov7_tiny.py")
    results = tool.main(tool.parse_args(["--config-file", config, *small_run(tmp_path, 2)]))
    assert "bbox" in results and 0.0 <= results["bbox"]["AP50"] <= 100.0
    assert (tmp_path / "model_0000000.pth").is_file() and (tmp_path / "model_best.pth").is_file()
    saved = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)
    assert saved["iteration"] == 1 and saved["ema"]["updates"] >= 1
    assert "optimizer" in saved["trainer"]  # with the iteration and the hooks
    assert "loss_box" in (tmp_path / "log.txt").read_text()

    # The saved config.yaml is a loadable LazyConfig of the same model.
    saved_cfg = LazyConfig.load(str(tmp_path / "config.yaml"))
    assert saved_cfg.model.backbone.width_multiple == 0.25
    expected = LazyConfig.apply_overrides(LazyConfig.load(config), small_run(tmp_path, 2))
    assert_same_model(instantiate(saved_cfg.model), instantiate(expected.model))

    # --resume continues after the saved iteration with the saved EMA state.
    args = tool.parse_args(["--config-file", config, "--resume", *small_run(tmp_path, 3)])
    trainer, checkpointer = tool.build_training(tool.setup(args))
    checkpointer.resume_or_load("", resume=True)
    assert trainer.iter == 1 and trainer.ema.updates == saved["ema"]["updates"]
    for key, value in saved["ema"]["model"].items():
        assert torch.equal(trainer.ema.ema.state_dict()[key], value), key

    # --eval-only evaluates the EMA weights of a training checkpoint.
    args = tool.parse_args(["--config-file", config, "--eval-only", *small_run(tmp_path, 2),
                            f"train.init_checkpoint={tmp_path / 'model_final.pth'}"])
    assert tool.main(args)["bbox"].keys() == results["bbox"].keys()


def test_both_entry_points_build_the_same_hooks_and_first_steps(tmp_path):
    """train_net.py (YOLOv7Trainer) and tools/lazyconfig_train_net.py assemble training from
    the same pieces: the same hooks in the same order, and from the same weights and batches
    the same losses, weights and EMA after two iterations (an optimizer step in between)."""
    import copy

    from yolov7_d2.engine import YOLOv7Trainer

    from detectron2.utils.events import EventStorage

    tool = load_tool()
    config = str(ROOT / "configs" / "coco" / "yolov7_tiny.py")
    args = tool.parse_args(["--config-file", config, *small_run(tmp_path / "lazy", 3),
                            "train.seed=0", "dataloader.train.mapper.seed=0"])
    lazy, _ = tool.build_training(tool.setup(args))
    ycfg = load_config(str(yaml_twin("coco/yolov7_tiny.py")), [
        "MODEL.DEVICE", "cpu", "MODEL.YOLOV7.NUM_CLASSES", "1", "MODEL.YOLOV7.WIDTH_MULTIPLE",
        "0.25", "INPUT.YOLOV7.IMAGE_SIZE", "160", "DATASETS.TRAIN", "('deepforest_trees_train',)",
        "DATASETS.TEST", "('deepforest_trees_val',)", "SOLVER.IMS_PER_BATCH", "2",
        "DATALOADER.NUM_WORKERS", "0", "SOLVER.MAX_ITER", "3", "SOLVER.WARMUP_ITERS", "2",
        "SOLVER.CHECKPOINT_PERIOD", "1", "TEST.EVAL_PERIOD", "3", "SEED", "0",
        "OUTPUT_DIR", str(tmp_path / "yaml")])
    yaml = YOLOv7Trainer(ycfg)

    def names(hooks):
        return [type(h).__name__ for h in hooks]

    assert names(lazy._hooks) == names(yaml._hooks)
    assert "AnchorCheckHook" in names(yaml._hooks) and "EarlyStopHook" not in names(yaml._hooks)

    loop = yaml._trainer
    lazy.model.load_state_dict(loop.model.state_dict())
    lazy.ema.ema.load_state_dict(loop.ema.ema.state_dict())
    batches = [next(iter(loop.data_loader)) for _ in range(2)]
    losses = {}
    for name, trainer in (("yaml", loop), ("lazy", lazy)):
        trainer._data_loader_iter = iter(copy.deepcopy(batches))
        with EventStorage() as storage:
            trainer.storage = storage
            for it in range(2):
                trainer.iter = storage.iter = it
                trainer.run_step()
            losses[name] = storage.history("total_loss").values()
    assert losses["yaml"] == losses["lazy"] and len(losses["yaml"]) == 2
    assert lazy.ema.updates == loop.ema.updates >= 1
    for (key, value), other in zip(loop.model.state_dict().items(),
                                   lazy.model.state_dict().values()):
        assert torch.equal(value, other), key
