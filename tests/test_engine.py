"""The training recipe pieces: parameter groups, warm-up/decay schedule, accumulation, EMA."""
import math
from pathlib import Path

import pytest
import torch

from yolov7_d2.config import load_config
from yolov7_d2.engine import (
    ModelEMA,
    YOLOv7LRScheduler,
    accumulation_steps,
    build_yolov7_optimizer,
    lr_factor,
    yolov7_param_groups,
)
from yolov7_d2.modeling.layers import ImplicitA, ImplicitM

from detectron2.modeling import build_model


def tiny_model(*opts):
    cfg = load_config(str(Path(__file__).resolve().parents[1] / "configs/coco/yolov7-tiny.yaml"),
                      ["MODEL.DEVICE", "cpu", "MODEL.YOLOV7.WIDTH_MULTIPLE", "0.125", *opts])
    return build_model(cfg)


def test_param_groups_follow_official_split():
    model = tiny_model()
    groups = {g["name"]: g for g in yolov7_param_groups(model, 5e-4)}
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    bn_weights = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    implicit = {id(m.implicit) for m in model.modules() if isinstance(m, (ImplicitA, ImplicitM))}
    biases = {id(p) for n, p in model.named_parameters() if n.endswith(".bias")}
    assert ids["no_decay"] == bn_weights | implicit
    assert ids["bias"] == biases
    assert (len(ids["decay"]) + len(ids["no_decay"]) + len(ids["bias"])
            == len(list(model.parameters())))
    assert groups["decay"]["weight_decay"] == 5e-4
    assert groups["no_decay"]["weight_decay"] == groups["bias"]["weight_decay"] == 0.0


def test_adam_options_use_momentum_as_beta1_and_keep_the_groups():
    model = tiny_model()
    for name, cls in (("Adam", torch.optim.Adam), ("AdamW", torch.optim.AdamW)):
        optimizer = build_yolov7_optimizer(model, base_lr=0.002, momentum=0.937,
                                           weight_decay=5e-4, name=name)
        assert type(optimizer) is cls and optimizer.defaults["betas"] == (0.937, 0.999)
        assert [g["name"] for g in optimizer.param_groups] == ["no_decay", "decay", "bias"]
        assert [g["weight_decay"] for g in optimizer.param_groups] == [0.0, 5e-4, 0.0]
        # The warm-up ramps SGD's momentum only: Adam's groups have none to ramp.
        scheduler = YOLOv7LRScheduler(optimizer, max_iter=10, warmup_iters=5, warmup_bias_lr=0.0,
                                      warmup_momentum=0.8, momentum=0.937, final_ratio=0.1)
        assert "momentum" not in optimizer.param_groups[0] and scheduler.get_last_lr()[1] == 0.0
    with pytest.raises(ValueError, match="SOLVER.YOLOV7.OPTIMIZER must be one of SGD, Adam, "
                                         "AdamW, got 'adam'"):
        build_yolov7_optimizer(model, base_lr=0.01, momentum=0.9, weight_decay=0.0, name="adam")


def test_schedule_warmup_and_cosine_decay():
    model = tiny_model()
    optimizer = build_yolov7_optimizer(model, base_lr=0.01, momentum=0.937, weight_decay=5e-4)
    assert optimizer.defaults["nesterov"]
    scheduler = YOLOv7LRScheduler(optimizer, max_iter=100, warmup_iters=10, warmup_bias_lr=0.1,
                                  warmup_momentum=0.8, momentum=0.937, final_ratio=0.1)
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["bias"] == pytest.approx(0.1) and lrs["decay"] == 0.0  # iteration 0
    assert optimizer.param_groups[0]["momentum"] == pytest.approx(0.8)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    target = 0.01 * lr_factor(0.05, 0.1)
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["decay"] == pytest.approx(target / 2)
    assert lrs["bias"] == pytest.approx((0.1 + target) / 2)
    assert optimizer.param_groups[0]["momentum"] == pytest.approx((0.8 + 0.937) / 2)
    for _ in range(95):
        optimizer.step()
        scheduler.step()
    assert all(g["lr"] == pytest.approx(0.001) for g in optimizer.param_groups)
    assert optimizer.param_groups[1]["momentum"] == pytest.approx(0.937)
    assert lr_factor(0.5, 0.1, "linear") == pytest.approx(0.55)
    assert lr_factor(0.5, 0.1, "cosine") == pytest.approx(0.55)
    assert lr_factor(0.25, 0.1, "cosine") == pytest.approx(
        1 - 0.9 * (1 - math.cos(math.pi / 4)) / 2)


def test_accumulation_ramps_to_nominal_batch():
    assert accumulation_steps(0, 1000, batch_size=16, nominal=64) == 1
    assert accumulation_steps(500, 1000, batch_size=16, nominal=64) == 2  # round(2.5) -> 2
    assert accumulation_steps(1000, 1000, batch_size=16, nominal=64) == 4
    assert accumulation_steps(5000, 0, batch_size=128, nominal=64) == 1


def test_ema_follows_official_decay():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = ModelEMA(model, decay=0.9999, tau=2000)
    start = ema.ema[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update(model)
    d = 0.9999 * (1 - math.exp(-1 / 2000))
    assert torch.allclose(ema.ema[0].weight, start * d + (start + 1) * (1 - d))
    state = ema.state_dict()
    other = ModelEMA(model)
    other.load_state_dict(state)
    assert other.updates == 1 and torch.equal(other.ema[0].weight, ema.ema[0].weight)
    assert not any(p.requires_grad for p in ema.ema.parameters())


def test_multi_scale_resizes_images_and_boxes_together():
    from yolov7_d2.engine import MultiScale

    from detectron2.structures import Boxes, Instances

    sizes = set()
    scaler = MultiScale(image_size=64, stride=32, seed=3)
    for _ in range(20):
        instances = Instances((64, 64), gt_boxes=Boxes(torch.tensor([[8.0, 16.0, 40.0, 48.0]])),
                              gt_classes=torch.tensor([0]))
        batch = [{"image": torch.zeros(3, 64, 64, dtype=torch.uint8), "instances": instances}]
        (sample,) = scaler(batch)
        h, w = sample["image"].shape[-2:]
        sizes.add(h)
        assert h == w and h % 32 == 0 and 32 <= h <= 96 + 32
        assert sample["instances"].image_size == (h, w)
        expected = torch.tensor([[8.0, 16.0, 40.0, 48.0]]) * h / 64
        assert torch.allclose(sample["instances"].gt_boxes.tensor, expected)
    assert len(sizes) > 1
