"""Numerical faults in training (yolov7_d2.numerics): a non-finite input or loss, or a step
that makes the weights non-finite, stops training with an error before anything non-finite
reaches the BatchNorm statistics, the EMA or a checkpoint; a float16 step skipped by the
gradient scaler is no fault."""
import math
from pathlib import Path

import pytest
import torch

from yolov7_d2.checkpoint import YOLOv7Checkpointer
from yolov7_d2.config import load_config
from yolov7_d2.engine import ModelEMA, YOLOv7TrainLoop
from yolov7_d2.numerics import BufferSnapshot, all_finite

from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64


def tiny_model():
    cfg = load_config(str(ROOT / "configs" / "coco" / "yolov7-tiny.yaml"),
                      ["MODEL.DEVICE", "cpu", "MODEL.YOLOV7.WIDTH_MULTIPLE", "0.125",
                       "MODEL.YOLOV7.NUM_CLASSES", "2"])
    return build_model(cfg).train()


def sample(name, image=None):
    instances = Instances((SIZE, SIZE), gt_boxes=Boxes(torch.tensor([[8.0, 10.0, 40.0, 50.0]])),
                          gt_classes=torch.tensor([1]))
    if image is None:
        image = torch.randint(256, (3, SIZE, SIZE), dtype=torch.uint8)
    return {"file_name": name, "image": image, "instances": instances}


def train_loop(batches, lr=0.01, ema=True):
    model = tiny_model()
    ema = ModelEMA(model, decay=0.9, tau=1.0) if ema else None
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loop = YOLOv7TrainLoop(model, iter(batches), optimizer, accumulation=lambda it: 1, ema=ema)
    return loop, model, ema


def snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_same(state, module):
    for key, value in module.state_dict().items():
        assert torch.equal(value, state[key]), key


def read_checkpoint(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_non_finite_input_stops_training_and_leaves_statistics_ema_and_checkpoints_finite(
        tmp_path):
    image = torch.rand(3, SIZE, SIZE) * 255
    image[:, 20:30, 20:30] = float("nan")
    loop, model, ema = train_loop([[sample("a.jpg"), sample("b.jpg")],
                                   [sample("c.jpg"), sample("nan.tif", image)]])
    checkpointer = YOLOv7Checkpointer(model, str(tmp_path), ema=ema)
    with EventStorage():
        loop.iter = 0
        loop.run_step()  # a good batch: an optimizer step and an EMA update
        checkpointer.save("model_0000000")
        model_state, ema_state = snapshot(model), snapshot(ema.ema)
        loop.iter = 1
        with pytest.raises(FloatingPointError) as error:
            loop.run_step()
    message = str(error.value)
    assert "Non-finite loss at iteration 1: " in message and "loss_obj = nan" in message
    assert "nan.tif (pixels)" in message and "c.jpg" not in message
    # The forward pass wrote NaN into the BatchNorm statistics; they were put back.
    assert_same(model_state, model)
    assert_same(ema_state, ema.ema) and ema.updates == 1
    saved = read_checkpoint(tmp_path / "model_0000000.pth")
    assert all_finite([*saved["model"].values(), *saved["ema"]["model"].values()])


def test_learning_rate_1e6_stops_training_with_every_checkpoint_finite(tmp_path):
    """The issue's run: BASE_LR 1e6 and a checkpoint after every step. Training stops with
    an error within a few steps; every checkpoint written, and the EMA, are finite."""
    loop, model, ema = train_loop([[sample("a.jpg"), sample("b.jpg")]] * 6, lr=1e6)
    checkpointer = YOLOv7Checkpointer(model, str(tmp_path), ema=ema)
    with EventStorage(), pytest.raises(FloatingPointError, match="iteration [1-5]"):
        for loop.iter in range(6):
            loop.run_step()
            checkpointer.save(f"model_{loop.iter:07d}")
    written = sorted(tmp_path.glob("*.pth"))
    assert written and (tmp_path / "last_checkpoint").read_text() == written[-1].name
    for path in written:
        saved = read_checkpoint(path)
        assert all_finite([*saved["model"].values(), *saved["ema"]["model"].values()]), path
    assert all_finite(list(ema.ema.state_dict().values()))


def test_overflowing_step_stops_before_the_ema_update_and_no_checkpoint_is_written(tmp_path):
    """A step that makes the weights non-finite (an infinite learning rate): caught before
    the EMA update, and by the checkpointer."""
    loop, model, ema = train_loop([[sample("a.jpg")]], lr=math.inf)
    checkpointer = YOLOv7Checkpointer(model, str(tmp_path), ema=ema)
    checkpointer.save("model_0000000")
    ema_state = snapshot(ema.ema)
    with EventStorage():
        loop.iter = 0
        with pytest.raises(FloatingPointError, match=r"parameter tensors are not finite after "
                                                      r"the optimizer step of iteration 0 \("):
            loop.run_step()
    assert_same(ema_state, ema.ema) and ema.updates == 0
    with pytest.raises(FloatingPointError, match=r"Refusing to write checkpoint 'model_0000001'"
                                                 r": \d+ tensors are not finite \(model\."):
        checkpointer.save("model_0000001")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000000.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000000.pth"

    # The EMA alone non-finite (e.g. statistics averaged in from a bad batch): refused too.
    model.load_state_dict(ema.ema.state_dict())
    key, running_var = next((k, v) for k, v in ema.ema.state_dict().items() if "running_var" in k)
    running_var.fill_(float("inf"))
    with pytest.raises(FloatingPointError,
                       match=rf"1 tensors are not finite \(ema\.model\.{key}\)"):
        checkpointer.save("model_0000001")


def test_gradient_scaler_skipped_step_is_no_fault_and_updates_no_ema():
    """GradScaler (here on the CPU) skips a step whose scaled gradients overflow and shrinks
    its scale: no error, no weight change, no EMA update; the next step goes through."""
    loop, model, ema = train_loop([[sample("a.jpg")], [sample("b.jpg")]], ema=True)
    loop.grad_scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127, backoff_factor=2.0**-100)
    model_state, ema_state = snapshot(model), snapshot(ema.ema)
    with EventStorage():
        loop.iter = 0
        loop.run_step()
        assert loop.grad_scaler.get_scale() == 2.0**27
        assert all(torch.equal(p, model_state[k]) for k, p in model.named_parameters())
        assert_same(ema_state, ema.ema) and ema.updates == 0
        loop.iter = 1
        loop.run_step()
    assert ema.updates == 1 and all_finite(list(ema.ema.state_dict().values()))
    assert not torch.equal(model.head.predictors[0].weight, model_state["head.predictors.0.weight"])


def test_all_finite_and_buffer_snapshot():
    huge = torch.full((3,), 3e38)  # a sum of squares would overflow: no false alarm
    assert all_finite([huge, torch.zeros(2, 2)]) and all_finite([])
    for bad in (float("nan"), float("inf"), -float("inf")):
        assert not all_finite([huge, torch.tensor([[0.0, bad]])])
    bn = torch.nn.BatchNorm2d(4).train()
    snapshot_ = BufferSnapshot()
    snapshot_.save(bn)
    before = snapshot(bn)
    bn(torch.full((2, 4, 3, 3), math.nan))
    assert not all_finite([bn.running_mean]) and bn.num_batches_tracked == 1
    snapshot_.restore()
    assert_same(before, bn)
