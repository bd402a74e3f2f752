"""Fine-tuning from official weights to other classes, frozen backbone stages, and ImageNet
weights (detectron2 / Caffe2 / torchvision .pkl, timm state dicts) for the research backbones.

Official checkpoints are built by PyPI ``sas-yolov7`` (the official model code) with random
weights and saved as official train.py saves them (helpers of test_convert.py).
"""
import logging
import pickle

import numpy as np
import pytest
import torch
from test_backbones import ROOT, training_input
from test_backbones import build as build_research
from test_convert import _official_model, _our_model, _save_official
from test_train import CONFIG as TREES_CONFIG
from test_train import small_run_opts

from yolov7_d2.checkpoint import CheckpointError, YOLOv7Checkpointer
from yolov7_d2.config import load_config
from yolov7_d2.convert import official_to_yolov7, read_official_checkpoint
from yolov7_d2.engine import YOLOv7Trainer
from yolov7_d2.engine.optimizer import yolov7_param_groups
from yolov7_d2.finetune import COCO_CLASSES, is_class_dependent
from yolov7_d2.modeling.head import init_prediction_bias

from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from log_records import records_of
from scripts import load_script

NUM_ANCHORS = 3


def _official_checkpoint(tmp_path, names=None):
    """An 80-class official yolov7-tiny .pt; ``names`` as train.py sets ``model.names``."""
    model = _official_model("yolov7-tiny")
    if names is not None:
        model.names = list(names)
    path = tmp_path / "yolov7-tiny.pt"
    _save_official(model, path)
    return path


def _rows(tensor, key):
    """(A, 5 + K, ...) view of a prediction tensor's channels."""
    if ".implicit_m." in key:
        tensor = tensor.flatten()
    return tensor.reshape(NUM_ANCHORS, -1, *tensor.shape[1:])


def _prior_bias(model, level):
    """The class-row bias prior of ``init_prediction_bias`` for a zero-initialised conv."""
    conv = torch.nn.Conv2d(1, NUM_ANCHORS * (5 + model.num_classes), 1)
    conv.bias.data.zero_()
    init_prediction_bias(conv, NUM_ANCHORS, model.num_classes, model.strides[level])
    return conv.bias.view(NUM_ANCHORS, -1)[:, 5:]


def _logged(logger_name, action):
    """What ``action()`` logs at INFO and above on ``logger_name``."""
    with records_of(logger_name) as handler:
        action()
    return "\n".join(handler.messages(logging.INFO))


def test_official_tiny_fine_tuned_to_one_class_on_trees(tmp_path):
    path = _official_checkpoint(tmp_path)
    train_net = load_script("train_net.py")
    args = train_net.parse_args([
        "--config-file", str(TREES_CONFIG), *small_run_opts(tmp_path / "run", 2),
        "MODEL.YOLOV7.WIDTH_MULTIPLE", "1.0", "MODEL.WEIGHTS", str(path),
        "SOLVER.AMP.ENABLED", "False", "DATASETS.TEST", "()", "TEST.YOLOV7.ARTIFACTS", "False",
        "MODEL.YOLOV7.ANCHOR_CHECK_MIN_BPR", "0.0",
    ])
    trainer = YOLOv7Trainer(train_net.setup(args))
    model = trainer.model
    fresh = {k: v.clone() for k, v in model.state_dict().items() if is_class_dependent(k)}
    table = _logged("yolov7_d2.finetune", lambda: trainer.resume_or_load(resume=False))
    assert "re-initialised" in table and "| 1: tree" in table

    expected = official_to_yolov7(read_official_checkpoint(str(path)), _our_model("yolov7-tiny"))
    loaded = model.state_dict()
    plain = [k for k in loaded if not is_class_dependent(k)]
    assert "anchors" in plain and "backbone.bottom_up.stem.0.conv.weight" in plain
    for key in plain:  # backbone, neck, 3x3 head convs, ImplicitA, anchors
        assert torch.equal(loaded[key], expected[key]), key
    assert sorted(fresh) == sorted(f"head.{p}.{i}.{n}" for i in range(3)
                                   for p, n in [("predictors", "weight"), ("predictors", "bias"),
                                                ("implicit_m", "implicit")])
    for key in fresh:
        mine, theirs = _rows(loaded[key], key), _rows(expected[key], key)
        init = _rows(fresh[key], key)
        assert mine.shape[1] == 6 and theirs.shape[1] == 85
        assert torch.equal(mine[:, :5], theirs[:, :5]), key  # x, y, w, h, obj from the checkpoint
        assert torch.equal(mine[:, 5:], init[:, 5:]), key  # the class row as the model built it
    for level in range(3):
        bias = loaded[f"head.predictors.{level}.bias"].view(NUM_ANCHORS, -1)[:, 5:]
        bound = model.head.predictors[level].weight.shape[1] ** -0.5  # PyTorch's bias init
        assert (bias - _prior_bias(model, level)).abs().max() <= bound
    # The EMA starts from the loaded weights.
    assert torch.equal(trainer.ema.ema.state_dict()["head.predictors.0.weight"],
                       loaded["head.predictors.0.weight"])

    trainer.train()
    saved = torch.load(tmp_path / "run" / "model_final.pth", map_location="cpu", weights_only=False)
    assert saved["iteration"] == 1 and saved["thing_classes"] == ["tree"]
    assert saved["model"]["head.predictors.0.bias"].shape == (18,)


@pytest.mark.parametrize("names, person", [(list(reversed(COCO_CLASSES)), 79), (None, 0)])
def test_keep_shared_classes_keeps_exactly_the_named_rows(tmp_path, names, person):
    """Names as train.py stores them, or none (the placeholders "0".."79": COCO's are assumed)."""
    path = _official_checkpoint(tmp_path, names)
    car = 77 if names else 2
    expected = official_to_yolov7(read_official_checkpoint(str(path)), _our_model("yolov7-tiny"))
    model = _our_model("yolov7-tiny", "MODEL.YOLOV7.NUM_CLASSES", "3")
    fresh = {k: v.clone() for k, v in model.state_dict().items() if is_class_dependent(k)}
    checkpointer = YOLOv7Checkpointer(model, finetune=True, keep_shared_classes=True,
                                      class_names=["Car", "tree", "person"])
    table = _logged("yolov7_d2.finetune", lambda: checkpointer.load(str(path)))
    assert "| 2: Car (<- car), person" in table and "| 1: tree" in table
    for key in fresh:
        mine, theirs = _rows(model.state_dict()[key], key), _rows(expected[key], key)
        assert torch.equal(mine[:, :5], theirs[:, :5])
        assert torch.equal(mine[:, 5], theirs[:, 5 + car]), key
        assert torch.equal(mine[:, 6], _rows(fresh[key], key)[:, 6]), key
        assert torch.equal(mine[:, 7], theirs[:, 5 + person]), key

    # A converted checkpoint carries the names as "thing_classes" (tools/convert_official_weights).
    converted = tmp_path / "converted.pth"
    torch.save({"model": expected, "thing_classes": names or list(COCO_CLASSES)}, converted)
    again = _our_model("yolov7-tiny", "MODEL.YOLOV7.NUM_CLASSES", "3")
    YOLOv7Checkpointer(again, finetune=True, keep_shared_classes=True,
                       class_names=["car", "tree", "person"]).load(str(converted))
    for key in fresh:
        assert torch.equal(_rows(again.state_dict()[key], key)[:, 7],
                           _rows(expected[key], key)[:, 5 + person])


def test_class_count_mismatch_needs_finetune_and_other_scales_stay_errors(tmp_path):
    path = _official_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="NUM_CLASSES"):
        YOLOv7Checkpointer(_our_model("yolov7-tiny", "MODEL.YOLOV7.NUM_CLASSES", "3")).load(
            str(path))
    with pytest.raises(CheckpointError, match="does not fit"):
        YOLOv7Checkpointer(_our_model("yolov7", "MODEL.YOLOV7.NUM_CLASSES", "3"),
                           finetune=True).load(str(path))
    with pytest.raises(CheckpointError, match="needs class names"):
        YOLOv7Checkpointer(_our_model("yolov7-tiny", "MODEL.YOLOV7.NUM_CLASSES", "3"),
                           finetune=True, keep_shared_classes=True).load(str(path))


def test_freeze_at_freezes_stem_and_first_stages():
    opts = ["MODEL.DEVICE", "cpu", "MODEL.YOLOV7.WIDTH_MULTIPLE", "0.25"]
    assert load_config(str(ROOT / "configs/coco/yolov7-tiny.yaml")).MODEL.BACKBONE.FREEZE_AT == 0
    model = build_model(load_config(str(ROOT / "configs/coco/yolov7-tiny.yaml"),
                                    [*opts, "MODEL.BACKBONE.FREEZE_AT", "2"]))
    elan = model.backbone.bottom_up
    assert elan.frozen_modules == ["stem", "c2"]
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.named_parameters()
                      if n.startswith(("backbone.bottom_up.stem.", "backbone.bottom_up.c2."))}
    trainable = {id(p) for group in yolov7_param_groups(model, 5e-4) for p in group["params"]}
    assert trainable == {id(p) for p in model.parameters() if p.requires_grad}

    model.train()
    assert not elan.stem.training and not elan.c2.training and elan.c3.training
    stats = {k: v.clone() for k, v in elan.state_dict().items() if "running" in k}
    with EventStorage():
        losses = model([training_input([[10, 20, 60, 90]], [0], size=64)])
        sum(losses.values()).backward()
    for key, value in elan.state_dict().items():
        if "running" in key:
            assert torch.equal(value, stats[key]) == key.startswith(("stem.", "c2.")), key
    assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)


def _c2_resnet_weights(bottom_up):
    """A Caffe2 ImageNet ResNet (detectron2 model zoo R-50.pkl layout) for a few tensors."""
    own = bottom_up.state_dict()
    names = {"conv1_w": "stem.conv1.weight", "res_conv1_bn_s": "stem.conv1.norm.weight",
             "res2_0_branch2a_w": "res2.0.conv1.weight", "res5_2_branch2c_w": "res5.2.conv3.weight"}
    blobs = {c2: np.random.rand(*own[d2].shape).astype(np.float32) for c2, d2 in names.items()}
    blobs["fc1000_w"] = np.zeros((1000, 2048), dtype=np.float32)
    return blobs, names


def test_model_zoo_pkl_loads_into_resnet_backbone(tmp_path):
    model = build_research("yolov7-resnet50")
    blobs, names = _c2_resnet_weights(model.backbone.bottom_up)
    c2_file = tmp_path / "R-50.pkl"
    c2_file.write_bytes(pickle.dumps(blobs))
    head_before = model.head.predictors[0].weight.clone()
    table = _logged("yolov7_d2.finetune",
                    lambda: YOLOv7Checkpointer(model, finetune=True).load(str(c2_file)))
    assert "into backbone.bottom_up" in table and "unused: 1: fc1000.weight" in table
    assert "| stem " in table and "| res5 " in table
    own = model.state_dict()
    for c2, d2 in names.items():
        assert torch.equal(own[f"backbone.bottom_up.{d2}"], torch.from_numpy(blobs[c2])), d2
    assert torch.equal(model.head.predictors[0].weight, head_before)

    # detectron2 names without the prefix (torchvision R-50.pkl converted for detectron2).
    d2_file = tmp_path / "torchvision-R-50.pkl"
    state = {d2: blobs[c2] * 2 for c2, d2 in names.items()}
    d2_file.write_bytes(pickle.dumps({"model": state, "__author__": "torchvision",
                                      "matching_heuristics": True}))
    YOLOv7Checkpointer(model).load(str(d2_file))
    assert torch.equal(model.state_dict()["backbone.bottom_up.res5.2.conv3.weight"],
                       torch.from_numpy(state["res5.2.conv3.weight"]))


def test_timm_state_dict_loads_into_timm_backbone(tmp_path):
    import timm

    reference = timm.create_model("convnext_atto")
    weights = tmp_path / "convnext_atto.pth"
    torch.save(reference.state_dict(), weights)
    expected = reference.stages[3].blocks[0].conv_dw.weight

    model = build_research("yolov7-convnext-tiny", "MODEL.TIMM.NAME", "convnext_atto")
    body = model.backbone.bottom_up.body
    assert not torch.equal(body.stages_3.blocks[0].conv_dw.weight, expected)
    table = _logged("yolov7_d2.finetune", lambda: YOLOv7Checkpointer(model).load(str(weights)))
    assert "head.fc.weight" in table  # the classifier has no place in the backbone
    assert torch.equal(body.stages_3.blocks[0].conv_dw.weight, expected)
    assert torch.equal(body.stem_0.weight, reference.stem[0].weight)

    # The same file as MODEL.TIMM.PRETRAINED_FILE, without MODEL.TIMM.PRETRAINED.
    model = build_research("yolov7-convnext-tiny", "MODEL.TIMM.NAME", "convnext_atto",
                           "MODEL.TIMM.PRETRAINED_FILE", str(weights))
    assert torch.equal(model.backbone.bottom_up.body.stages_3.blocks[0].conv_dw.weight, expected)
