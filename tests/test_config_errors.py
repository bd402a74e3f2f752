"""Config errors before any training starts: a file, key or value that cannot work is one
message naming it and the fix (yolov7_d2/config_checks.py, called by load_config, train_net.py
and the checkpointer), never a yacs assertion or a ZeroDivisionError in the middle of training."""
import glob
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from yolov7_d2.checkpoint import CheckpointError, YOLOv7Checkpointer
from yolov7_d2.config import load_config
from yolov7_d2.config_checks import ConfigError, check_config, check_schedule
from yolov7_d2.data import register_deepforest, register_labelme_examples
from yolov7_d2.data.validate import DatasetConfigError, check_datasets

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from log_records import Records
from scripts import load_script

# Trains or loads the bundled tree tiles.
pytestmark = pytest.mark.usefixtures("deepforest_prepared")

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "coco" / "yolov7-tiny.yaml")
THREE = "config_errors_three"  # a registered dataset of 3 classes


@pytest.fixture(scope="module", autouse=True)
def datasets():
    register_deepforest()  # lazy: nothing is fetched
    register_labelme_examples()
    DatasetCatalog.register(THREE, lambda: [])
    MetadataCatalog.get(THREE).thing_classes = ["a", "b", "c"]
    yield
    DatasetCatalog.remove(THREE)
    MetadataCatalog.remove(THREE)


@pytest.fixture
def warnings():
    """Records of the yolov7_d2 loggers (warnings of the checks)."""
    handler, log = Records(), logging.getLogger("yolov7_d2")
    log.addHandler(handler)
    yield handler
    log.removeHandler(handler)


def error_of(*opts, training=True, config=TINY):
    """The message of the error that loading and checking ``config`` with ``opts`` raises."""
    with pytest.raises((ConfigError, DatasetConfigError)) as info:
        cfg = load_config(config, list(opts))
        check_config(cfg, training=training)
        check_schedule(cfg)
    return str(info.value)


# ---------------------------------------------------------------------------- files and keys
def test_unknown_keys_suggest_close_matches(tmp_path):
    message = error_of("MODEL.YOLOV7.NUM_CLASS", "3")
    assert message.startswith("Unknown config key MODEL.YOLOV7.NUM_CLASS in the command-line "
                              "options. Did you mean MODEL.YOLOV7.NUM_CLASSES? (the YOLOv7 keys")
    # a key of another subtree: the same name there
    assert "Did you mean INPUT.YOLOV7.IMAGE_SIZE?" in error_of("MODEL.YOLOV7.IMAGE_SIZE", "320")
    # in a file: the file that sets it is named; an unknown subtree too
    child = tmp_path / "child.yaml"
    child.write_text(f'_BASE_: "{TINY}"\nMODEL:\n  YOLOV8:\n    NUM_CLASSES: 3\n')
    with pytest.raises(KeyError) as info:  # a KeyError, as yacs' own
        load_config(str(child))
    assert str(info.value).startswith(f"Unknown config key MODEL.YOLOV8 in config file "
                                      f"{str(child)!r}. Did you mean MODEL.YOLOV7?")


def test_wrong_types_name_the_type_the_key_takes(tmp_path):
    assert error_of("SOLVER.MAX_ITER", "abc") == (
        "SOLVER.MAX_ITER takes an integer (like 40000), got 'abc' (a string) in the "
        "command-line options.")
    assert "Write a sequence, e.g. ('mine',)." in error_of("DATASETS.TRAIN", "mine")
    child = tmp_path / "lr.yaml"
    child.write_text(f'_BASE_: "{TINY}"\nSOLVER:\n  BASE_LR: 1\n')
    assert error_of(config=str(child)) == (
        f"SOLVER.BASE_LR takes a number (like 0.001), got 1 (an integer) in config file "
        f"{str(child)!r}. Write it as 1.0.")
    assert "'SOLVER.MAX_ITER' (the last of 3 items) has no value" in error_of(
        "SOLVER.BASE_LR", "0.1", "SOLVER.MAX_ITER")


def test_missing_or_broken_config_files_are_named(tmp_path):
    missing = str(ROOT / "configs" / "coco" / "yolov7-tny.yaml")
    message = error_of(config=missing)
    assert message.startswith(f"Config file {missing!r} does not exist. Did you mean "
                              f"{os.path.join(os.path.dirname(missing), 'yolov7-tiny.yaml')}")
    assert "key" not in message
    child = tmp_path / "child.yaml"
    child.write_text('_BASE_: "../coco/Base-YOLOv7.yaml"\n')
    assert error_of(config=str(child)).startswith(
        f"Config file {str(child)!r} names _BASE_ '../coco/Base-YOLOv7.yaml', which does not "
        f"exist (looked for {str(tmp_path / '../coco/Base-YOLOv7.yaml')!r}")
    broken = tmp_path / "broken.yaml"
    broken.write_text("MODEL: [1\n")
    assert error_of(config=str(broken)).startswith(f"Config file {str(broken)!r} is not valid YAML")


# ---------------------------------------------------------------------------- values
@pytest.mark.parametrize("opts, message", [
    (["SOLVER.IMS_PER_BATCH", "0"], "SOLVER.IMS_PER_BATCH is 0: set the number of training "
                                    "images per iteration"),
    (["SOLVER.IMS_PER_BATCH", "-4"], "SOLVER.IMS_PER_BATCH is -4"),
    (["SOLVER.YOLOV7.NOMINAL_BATCH_SIZE", "0"], "SOLVER.YOLOV7.NOMINAL_BATCH_SIZE is 0"),
    (["SOLVER.YOLOV7.EMA_TAU", "0.0"], "SOLVER.YOLOV7.EMA_TAU is 0.0: the EMA warm-up needs a "
                                       "positive number of updates"),
    (["SOLVER.CHECKPOINT_PERIOD", "0"], "SOLVER.CHECKPOINT_PERIOD is 0: set the iterations "
                                        "between checkpoints"),
    (["SOLVER.MAX_ITER", "0", "SOLVER.YOLOV7.EPOCHS", "0"], "SOLVER.MAX_ITER is 0: train at "
                                                            "least 1 iteration"),
    (["DATALOADER.NUM_WORKERS", "-1"], "DATALOADER.NUM_WORKERS is -1"),
    (["DATASETS.TRAIN", "()"], "DATASETS.TRAIN is empty"),
    (["MODEL.YOLOV7.NUM_CLASSES", "0"], "MODEL.YOLOV7.NUM_CLASSES is 0"),
    (["MODEL.YOLOV7.WIDTH_MULTIPLE", "0.0"], "MODEL.YOLOV7.WIDTH_MULTIPLE is 0.0"),
    (["MODEL.YOLOV7.ARCH", "yolov7-tyni"], "MODEL.YOLOV7.ARCH 'yolov7-tyni' is not a YOLOv7 "
                                           "scale. Did you mean yolov7-tiny"),
    (["INPUT.YOLOV7.IMAGE_SIZE", "650"], "INPUT.YOLOV7.IMAGE_SIZE 650 is not a multiple of 32, "
                                         "the largest stride of yolov7-tiny"),
    (["MODEL.YOLOV7.ARCH", "yolov7-w6", "INPUT.YOLOV7.IMAGE_SIZE", "1248"],
     "INPUT.YOLOV7.IMAGE_SIZE 1248 is not a multiple of 64, the largest stride of yolov7-w6: "
     "every image would be padded with grey to 1280 px. Use 1216 or 1280."),
    (["INPUT.YOLOV7.IMAGE_SIZE", "0"], "INPUT.YOLOV7.IMAGE_SIZE is 0"),
    (["INPUT.YOLOV7.MOSAIC_CROP_SIZE", "300"], "INPUT.YOLOV7.MOSAIC_CROP_SIZE is 300: set 0 "
     "(mosaic samples of INPUT.YOLOV7.IMAGE_SIZE) or the side of the window cut from each "
     "mosaic, a multiple of 32"),
    (["INPUT.YOLOV7.MOSAIC_CROP_SIZE", "-32"], "INPUT.YOLOV7.MOSAIC_CROP_SIZE is -32"),
    (["INPUT.MAX_SIZE_TEST", "0"], "INPUT.MAX_SIZE_TEST is 0"),
    (["TEST.YOLOV7.FLIPS", "('lr', 'rot90')"], "TEST.YOLOV7.FLIPS ('lr', 'rot90'): unknown "
                                               "test-time flips ['rot90']; choose from"),
    (["TEST.YOLOV7.SCALES", "(0.83, 1.0)"], "TEST.YOLOV7.SCALES (0.83, 1.0): test-time scale "
                                            "1.0 must be positive and not 1"),
])
def test_values_that_cannot_work(opts, message):
    assert message in error_of(*opts)


def test_several_errors_are_listed_and_eval_only_skips_the_solver():
    opts = ["SOLVER.IMS_PER_BATCH", "0", "MODEL.YOLOV7.NUM_CLASSES", "0"]
    message = error_of(*opts)
    assert message.startswith("2 config errors:\n  MODEL.YOLOV7.NUM_CLASSES is 0")
    assert "\n  SOLVER.IMS_PER_BATCH is 0" in message
    assert error_of(*opts, training=False).startswith("MODEL.YOLOV7.NUM_CLASSES is 0")
    check_config(load_config(TINY, opts[:2]), training=False)


def test_shipped_configs_pass_without_warnings(warnings):
    configs = sorted(glob.glob(str(ROOT / "configs" / "*" / "*.yaml")))
    assert len(configs) >= 10
    for config in configs:
        cfg = load_config(config)
        check_config(cfg)
        check_schedule(cfg)
    assert warnings.messages(logging.WARNING) == []


def test_test_sizes_other_than_the_training_size_warn(warnings):
    check_config(load_config(TINY, ["INPUT.MIN_SIZE_TEST", "800", "INPUT.MAX_SIZE_TEST", "1333"]))
    check_config(load_config(TINY, ["INPUT.MIN_SIZE_TEST", "0"]))
    check_config(load_config(TINY, ["INPUT.YOLOV7.IMAGE_SIZE", "320"]))
    first, no_resize, smaller = warnings.messages(logging.WARNING)
    assert first.startswith("INPUT.MIN_SIZE_TEST 800 and INPUT.MAX_SIZE_TEST 1333: demo.py, "
                            "YOLOv7Predictor and tools/export_onnx.py resize the short side to "
                            "800, the long side to at most 1333, but training and its "
                            "evaluation resize the long side to INPUT.YOLOV7.IMAGE_SIZE 640")
    assert first.endswith("Set INPUT.MIN_SIZE_TEST 640 INPUT.MAX_SIZE_TEST 640 unless that is "
                          "meant.")
    assert "do not resize images" in no_resize
    assert "IMAGE_SIZE 320" in smaller and "Set INPUT.MIN_SIZE_TEST 320" in smaller


def test_datasets_unregistered_and_class_counts(warnings):
    message = error_of("DATASETS.TRAIN", "('config_errors_thre',)")
    assert message.startswith(f"DATASETS.TRAIN names dataset 'config_errors_thre', which is "
                              f"not registered. Did you mean {THREE}?")
    assert "registered: " in message
    assert "DATASETS.TEST names dataset 'nope'" in error_of("DATASETS.TEST", "('nope',)",
                                                            training=False)
    # NUM_CLASSES below the training set's classes: an error; above: a warning (only the
    # evaluation needs equal counts).
    opts = ["DATASETS.TRAIN", f"('{THREE}',)", "DATASETS.TEST", "()"]
    with pytest.raises(DatasetConfigError, match="has 3 classes .*NUM_CLASSES is 2: set "
                                                 "MODEL.YOLOV7.NUM_CLASSES 3"):
        check_datasets(load_config(TINY, opts + ["MODEL.YOLOV7.NUM_CLASSES", "2"]))
    check_datasets(load_config(TINY, opts + ["MODEL.YOLOV7.NUM_CLASSES", "5"]))
    assert warnings.messages(logging.WARNING) == [
        f"dataset '{THREE}' (DATASETS.TRAIN) has 3 classes but MODEL.YOLOV7.NUM_CLASSES is 5: "
        "the model learns 2 classes that never occur. Set MODEL.YOLOV7.NUM_CLASSES 3 unless "
        "that is meant."]
    assert "has 3 classes" in error_of("DATASETS.TEST", f"('{THREE}',)",
                                       "MODEL.YOLOV7.NUM_CLASSES", "5")


# ---------------------------------------------------------------------------- train_net.py
def test_train_net_setup_reports_zero_batch_and_period_before_training(tmp_path):
    train_net = load_script("train_net.py")
    common = ["--config-file", TINY, "OUTPUT_DIR", str(tmp_path), "MODEL.DEVICE", "cpu"]
    # SOLVER.YOLOV7.EPOCHS 300 (the config): the batch size divides the image count.
    with pytest.raises(ConfigError, match="SOLVER.IMS_PER_BATCH is 0"):
        train_net.setup(train_net.parse_args(common + ["SOLVER.IMS_PER_BATCH", "0"]))
    with pytest.raises(ConfigError, match="SOLVER.CHECKPOINT_PERIOD is 0"):
        train_net.setup(train_net.parse_args(common + [
            "SOLVER.YOLOV7.EPOCHS", "0", "SOLVER.CHECKPOINT_PERIOD", "0"]))


def test_train_net_command_line_prints_one_message(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train_net.py"), "--config-file", TINY,
         "MODEL.YOLOV7.NUM_CLASS", "3"],
        capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "train_net.py: error: Unknown config key MODEL.YOLOV7.NUM_CLASS in the command-line "
        "options. Did you mean MODEL.YOLOV7.NUM_CLASSES?")
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------- checkpoints
def test_checkpoint_of_another_scale_or_width_is_named(tmp_path):
    narrow = ["MODEL.DEVICE", "cpu", "MODEL.YOLOV7.WIDTH_MULTIPLE", "0.125"]
    tiny = build_model(load_config(TINY, narrow))
    for name, opts in (("yolov7", ["MODEL.YOLOV7.ARCH", "yolov7"]),
                       ("yolov7-e6e", ["MODEL.YOLOV7.ARCH", "yolov7-e6e"]),
                       ("wide", ["MODEL.YOLOV7.WIDTH_MULTIPLE", "0.5"])):
        path = str(tmp_path / f"{name}.pth")
        torch.save({"model": build_model(load_config(TINY, narrow + opts)).state_dict()}, path)
        with pytest.raises(CheckpointError) as info:
            YOLOv7Checkpointer(tiny).load(path)
        if name == "wide":
            assert str(info.value).startswith(
                f"MODEL.WEIGHTS {path!r} is a yolov7-tiny checkpoint of other channel widths "
                "than the model (backbone.bottom_up.")
            assert str(info.value).endswith("set MODEL.YOLOV7.WIDTH_MULTIPLE as in its training.")
        else:
            assert str(info.value) == (
                f"MODEL.WEIGHTS {path!r} is a {name} checkpoint, the config builds yolov7-tiny "
                f"(MODEL.YOLOV7.ARCH). Use a {name} config (configs/coco/{name}.yaml) or "
                "yolov7-tiny weights.")
