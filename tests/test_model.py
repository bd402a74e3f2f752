"""Architecture parity with the official YOLOv7 (../shared/REFERENCE.md) and model behaviour."""
from pathlib import Path

import pytest
import torch

from yolov7_d2.config import load_config
from yolov7_d2.modeling import reparameterize
from yolov7_d2.modeling.flops import count_gflops
from yolov7_d2.modeling.head import YOLOv7Head

from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from photos import all_photos

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
SCALES = ["yolov7-tiny", "yolov7", "yolov7x", "yolov7-w6", "yolov7-e6", "yolov7-d6", "yolov7-e6e"]
P6 = {"yolov7-w6", "yolov7-e6", "yolov7-d6", "yolov7-e6e"}

# Official counts (nc=80): training cfg as built (P6 with aux heads), deploy cfg as built,
# deploy cfg fused (BN folded, RepConv merged, implicit folded).
TRAIN_PARAMS = {"yolov7-tiny": 6228762, "yolov7": 37622682, "yolov7x": 71347394,
                "yolov7-w6": 82312436, "yolov7-e6": 111898292, "yolov7-d6": 154709364,
                "yolov7-e6e": 166408884}
DEPLOY_PARAMS = {"yolov7-tiny": 6227101, "yolov7": 37620125, "yolov7x": 71344389,
                 "yolov7-w6": 70426236, "yolov7-e6": 97246652, "yolov7-d6": 133810044,
                 "yolov7-e6e": 151757244}
FUSED_PARAMS = {"yolov7-tiny": 6219709, "yolov7": 36905341, "yolov7x": 71311741,
                "yolov7-w6": 70394300, "yolov7-e6": 97202940, "yolov7-d6": 133757052,
                "yolov7-e6e": 151687420}
# Official GFLOPs at 640 (P5) / 1280 (P6): training (P5 only published) and deploy fused.
TRAIN_GFLOPS = {"yolov7-tiny": 13.9, "yolov7": 106.5, "yolov7x": 190.6}
FUSED_GFLOPS = {"yolov7-tiny": 13.7, "yolov7": 104.5, "yolov7x": 189.7, "yolov7-w6": 359.7,
                "yolov7-e6": 514.4, "yolov7-d6": 701.8, "yolov7-e6e": 842.2}


def build(name: str, *opts):
    cfg = load_config(str(ROOT / "configs" / "coco" / f"{name}.yaml"),
                      ["MODEL.DEVICE", "cpu", *opts])
    return build_model(cfg)


def num_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", SCALES)
def test_parameter_counts_and_gflops_equal_official(name):
    model = build(name)
    assert num_params(model) == TRAIN_PARAMS[name]
    assert (model.aux_head is not None) == (name in P6)
    size = 1280 if name in P6 else 640
    if name in TRAIN_GFLOPS:
        assert count_gflops(model, size) == pytest.approx(TRAIN_GFLOPS[name], rel=0.01)
    reparameterize(model)
    assert num_params(model) == FUSED_PARAMS[name]
    assert count_gflops(model, size) == pytest.approx(FUSED_GFLOPS[name], rel=0.01)
    del model
    assert num_params(build(name, "MODEL.YOLOV7.DEPLOY", "True")) == DEPLOY_PARAMS[name]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_config_loads_and_builds(config):
    cfg = load_config(str(config), ["MODEL.DEVICE", "cpu", "MODEL.YOLOV7.WIDTH_MULTIPLE", "0.125"])
    model = build_model(cfg)
    assert model.backbone.size_divisibility == (64 if cfg.MODEL.YOLOV7.ARCH in P6 else 32)
    if config.parent.name == "coco":
        size = 1280 if cfg.MODEL.YOLOV7.ARCH in P6 else 640
        assert cfg.INPUT.MAX_SIZE_TEST == cfg.INPUT.YOLOV7.IMAGE_SIZE == size


@pytest.mark.parametrize("name", SCALES)
def test_output_shapes_at_tiny_width(name):
    model = build(name, "MODEL.YOLOV7.WIDTH_MULTIPLE", "0.125", "MODEL.YOLOV7.NUM_CLASSES", "3")
    levels = 4 if name in P6 else 3
    h, w = 128, 192
    strides = [8, 16, 32, 64][:levels]
    model.train()
    raw = model.forward_raw(torch.rand(2, 3, h, w))
    assert set(raw) == ({"lead", "aux"} if name in P6 else {"lead"})
    for maps in raw.values():
        assert [tuple(m.shape) for m in maps] == [(2, 3, h // s, w // s, 8) for s in strides]
    model.eval()
    assert set(model.forward_raw(torch.rand(1, 3, h, w))) == {"lead"}


@pytest.mark.parametrize("name, size", [("yolov7-tiny", 160), ("yolov7", 128), ("yolov7-w6", 128)])
def test_reparameterized_model_gives_same_outputs(name, size):
    model = build(name)
    with torch.no_grad():
        for m in model.modules():  # trained-looking BatchNorm statistics and implicit vectors
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.eval()
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        before = model.forward_raw(x)["lead"]
        reparameterize(model)
        after = model.forward_raw(x)["lead"]
    assert max((a - b).abs().max().item() for a, b in zip(before, after)) < 1e-4
    assert model.head.implicit_a is None and model.aux_head is None


def test_head_folds_implicit_knowledge_into_the_official_function_and_gradients():
    head = YOLOv7Head(input_shapes=[ShapeSpec(channels=8, stride=8)], conv_channels=[16],
                      num_classes=2, act="silu").train()
    add, mul = head.implicit_a[0].implicit, head.implicit_m[0].implicit
    with torch.no_grad():
        add.normal_(0.0, 0.5)
        mul.normal_(1.0, 0.5)
    x = torch.randn(2, 8, 6, 5)
    weights = torch.randn(2, 3, 6, 5, 7)  # a random linear function of the output
    params = [add, mul, head.predictors[0].weight, head.predictors[0].bias]

    official = head.predictors[0](head.convs[0](x) + add) * mul  # IDetect's training forward
    official = official.view(2, 3, 7, 6, 5).permute(0, 1, 3, 4, 2)
    official_grads = torch.autograd.grad((official * weights).sum(), params)
    (ours,) = head([x])
    grads = torch.autograd.grad((ours * weights).sum(), params)
    torch.testing.assert_close(ours, official, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, official_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_eval_on_real_photos_returns_instances_at_original_size():
    # Random weights score about 1e-5 (the official bias prior), below the 0.001 default.
    model = build("yolov7-tiny", "MODEL.YOLOV7.WIDTH_MULTIPLE", "0.25",
                  "MODEL.YOLOV7.CONF_THRESH_TEST", "1e-7").eval()
    inputs = []
    for name, bgr in all_photos().items():
        h, w = bgr.shape[:2]
        rgb = torch.from_numpy(bgr[:, :, ::-1].copy()).permute(2, 0, 1).float()
        # The network sees a 256-long-side resize; outputs must come back at h x w.
        small = torch.nn.functional.interpolate(rgb[None], scale_factor=256 / max(h, w))[0]
        inputs.append({"image": small, "height": h, "width": w})
    with torch.no_grad():
        outputs = model(inputs)
    assert len(outputs) == len(inputs)
    for inp, out in zip(inputs, outputs):
        inst = out["instances"]
        assert isinstance(inst, Instances)
        assert inst.image_size == (inp["height"], inp["width"])
        assert 0 < len(inst) <= 300
        boxes = inst.pred_boxes.tensor
        assert torch.isfinite(boxes).all()
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= inp["width"]).all()
        assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= inp["height"]).all()
        assert ((inst.scores > 1e-7) & (inst.scores <= 1)).all()
        assert inst.scores.equal(inst.scores.sort(descending=True).values)
        assert ((inst.pred_classes >= 0) & (inst.pred_classes < 80)).all()


def test_decoding_follows_official_formula():
    from yolov7_d2.modeling.meta_arch import decode_predictions

    raw = torch.zeros(1, 1, 2, 3, 6)  # one anchor, 2x3 grid, one class; sigmoid(0) = 0.5
    raw[0, 0, 1, 2, :4] = torch.tensor([10.0, -10.0, 0.0, 10.0])
    decoded = decode_predictions([raw], torch.tensor([[[30.0, 40.0]]]), [8])
    assert decoded.shape == (1, 6, 6)
    # cell (0, 0): xy = (2*0.5 - 0.5 + 0) * 8 = 4, wh = (2*0.5)^2 * anchor
    assert torch.allclose(decoded[0, 0, :4], torch.tensor([4.0, 4.0, 30.0, 40.0]))
    # cell (row 1, col 2): sigmoid(10) ~ 1, sigmoid(-10) ~ 0
    assert torch.allclose(decoded[0, 5, :4],
                          torch.tensor([(1.5 + 2) * 8, (-0.5 + 1) * 8, 30.0, 160.0]),
                          atol=0.02)
    assert torch.allclose(decoded[0, :, 4:], torch.full((6, 2), 0.5))


def _nms_model(**overrides):
    opts = ["MODEL.YOLOV7.WIDTH_MULTIPLE", "0.125", "MODEL.YOLOV7.NUM_CLASSES", "2"]
    for key, value in overrides.items():
        opts += [f"MODEL.YOLOV7.{key}", str(value)]
    return build("yolov7-tiny", *opts)


def test_nms_thresholds_multi_label_and_one_class():
    # rows: cx, cy, w, h, obj, p(class0), p(class1)
    decoded = torch.tensor([
        [50.0, 50, 20, 20, 0.9, 0.9, 0.8],  # box A, both classes confident
        [51.0, 50, 20, 20, 0.8, 0.9, 0.1],  # overlaps A, class 0 -> suppressed by A
        [10.0, 10, 4, 4, 0.9, 0.0005, 0.0005],  # score 0.00045 < 0.001 -> dropped
        [90.0, 90, 10, 10, 0.0005, 0.9, 0.9],  # objectness below threshold -> dropped
    ])
    out = _nms_model()._inference_single_image(decoded, (100, 100))
    assert sorted(out.pred_classes.tolist()) == [0, 1]  # A reported once per class
    assert torch.allclose(out.scores, torch.tensor([0.81, 0.72]))
    out = _nms_model(MULTI_LABEL_TEST=False)._inference_single_image(decoded, (100, 100))
    assert out.pred_classes.tolist() == [0] and torch.allclose(out.scores, torch.tensor([0.81]))
    out = _nms_model(NMS_THRESH_TEST=0.99)._inference_single_image(decoded, (100, 100))
    assert len(out) == 4  # box B survives a lax NMS, once per class (0.72 and 0.08)
    capped = _nms_model()
    capped.max_detections = 1
    assert len(capped._inference_single_image(decoded, (100, 100))) == 1
    single = build("yolov7-tiny", "MODEL.YOLOV7.WIDTH_MULTIPLE", "0.125",
                   "MODEL.YOLOV7.NUM_CLASSES", "1")
    out = single._inference_single_image(decoded[:, :6], (100, 100))
    # one class: the score is the objectness alone (official behaviour)
    assert torch.allclose(out.scores, torch.tensor([0.9, 0.9]))


def test_bad_config_is_named():
    with pytest.raises(KeyError, match="yolov7-huge"):
        build("yolov7-tiny", "MODEL.YOLOV7.ARCH", "yolov7-huge")
    with pytest.raises(KeyError, match="MODEL.YOLOV7.NOT_A_KEY"):
        load_config(str(ROOT / "configs/coco/yolov7.yaml"), ["MODEL.YOLOV7.NOT_A_KEY", "1"])
    with pytest.raises(ValueError, match="IN_FEATURES"):
        build("yolov7-tiny", "MODEL.YOLOV7.IN_FEATURES", "['c4', 'c5']")
    with pytest.raises(ValueError, match="ANCHORS"):
        build("yolov7-tiny", "MODEL.YOLOV7.ANCHORS", "[[10, 13], [20, 30]]")


def _training_input(boxes, classes, size=128):
    instances = Instances((size, size))
    instances.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).view(-1, 4))
    instances.gt_classes = torch.tensor(classes, dtype=torch.long)
    return {"image": torch.rand(3, size, size) * 255, "instances": instances}


@pytest.mark.parametrize("name", ["yolov7-tiny", "yolov7-w6"])
def test_training_step_with_half_empty_and_empty_batches(name):
    from detectron2.utils.events import EventStorage

    model = build(name, "MODEL.YOLOV7.WIDTH_MULTIPLE", "0.125", "MODEL.YOLOV7.NUM_CLASSES", "3")
    model.train()
    half_empty = [_training_input([[10, 20, 60, 90], [50, 50, 120, 127]], [0, 2]),
                  _training_input([], [])]
    keys = {"loss_box", "loss_obj", "loss_cls"}
    if name in P6:
        keys |= {k + "_aux" for k in keys}
    with EventStorage() as storage:
        losses = model(half_empty)
        assert set(losses) == keys
        assert all(torch.isfinite(v) and v > 0 for v in losses.values())
        sum(losses.values()).backward()
        assert "yolov7/num_pos_lead_p3" in storage.latest()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.head.predictors[0].weight.grad.abs().sum() > 0

    model.zero_grad()
    with EventStorage():
        losses = model([_training_input([], []), _training_input([], [])])
        assert all(v == 0 for k, v in losses.items() if not k.startswith("loss_obj"))
        assert losses["loss_obj"] > 0
        sum(losses.values()).backward()
    assert model.head.predictors[0].weight.grad.abs().sum() > 0


def test_training_rejects_inputs_without_ground_truth():
    # Class ids beyond the model are refused where datasets are loaded (test_validate.py:
    # test_category_ids_beyond_the_model_are_refused_when_loaded), not at every step.
    model = build("yolov7-tiny", "MODEL.YOLOV7.WIDTH_MULTIPLE", "0.125",
                  "MODEL.YOLOV7.NUM_CLASSES", "3").train()
    with pytest.raises(ValueError, match="instances"):
        model([{"image": torch.zeros(3, 64, 64)}])


def test_channels_last_gives_same_outputs_losses_and_gradients():
    from detectron2.utils.events import EventStorage

    opts = ("MODEL.YOLOV7.WIDTH_MULTIPLE", "0.25", "MODEL.YOLOV7.NUM_CLASSES", "3")
    nchw = build("yolov7-tiny", *opts)
    nhwc = build("yolov7-tiny", *opts, "MODEL.YOLOV7.CHANNELS_LAST", "True")
    nhwc.load_state_dict(nchw.state_dict())
    conv = next(p for p in nhwc.parameters() if p.dim() == 4 and p.shape[-1] > 1)  # a 3x3 conv
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()

    batch = [_training_input([[10, 20, 60, 90], [50, 50, 120, 127]], [0, 2]),
             _training_input([[30, 30, 50, 45]], [1])]
    losses = {}
    for name, model in (("nchw", nchw), ("nhwc", nhwc)):
        with EventStorage():
            losses[name] = model(batch)
        sum(losses[name].values()).backward()
    for key, value in losses["nchw"].items():
        torch.testing.assert_close(losses["nhwc"][key], value, rtol=1e-4, atol=1e-6, msg=key)
    for (key, a), b in zip(nchw.named_parameters(), nhwc.parameters()):
        # relative to the largest gradient of the tensor: sums over many pixels in another order
        assert (b.grad - a.grad).abs().max() <= 1e-3 * a.grad.abs().max() + 1e-7, key

    nchw.eval(), nhwc.eval()
    x = torch.rand(1, 3, 128, 96)
    with torch.no_grad():
        for a, b in zip(nchw.forward_raw(x)["lead"], nhwc.forward_raw(x)["lead"]):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("norm, kind", [("SyncBN", "SyncBatchNorm"),
                                        ("naiveSyncBN", "NaiveSyncBatchNorm")])
def test_norm_key_converts_every_batchnorm_keeping_its_settings(norm, kind):
    plain = build("yolov7-tiny", "MODEL.YOLOV7.WIDTH_MULTIPLE", "0.125")
    synced = build("yolov7-tiny", "MODEL.YOLOV7.WIDTH_MULTIPLE", "0.125", "MODEL.YOLOV7.NORM",
                   norm)
    norms = [m for m in synced.modules() if isinstance(m, torch.nn.modules.batchnorm._NormBase)]
    assert len(norms) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules()) > 0
    assert {type(m).__name__ for m in norms} == {kind}
    assert {(m.eps, m.momentum) for m in norms} == {(1e-3, 0.03)}
    # same parameter and buffer names: checkpoints and official conversion load either way
    assert synced.state_dict().keys() == plain.state_dict().keys()
    with pytest.raises(Exception, match="MODEL.YOLOV7.NORM 'GN' is not a BatchNorm kind"):
        from yolov7_d2.config_checks import check_config

        check_config(load_config(str(ROOT / "configs/coco/yolov7-tiny.yaml"),
                                 ["MODEL.YOLOV7.NORM", "GN"]), training=False)
