"""Research backbones under the YOLOv7 neck: timm models (ConvNeXt, PVTv2, Swin) and
detectron2's ResNet, built from configs/research/*.yaml with small variants for speed."""
import time
from pathlib import Path

import pytest
import torch

from yolov7_d2.config import load_config
from yolov7_d2.modeling.backbone import TimmBackbone, timm_backbone

from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["MODEL.DEVICE", "cpu", "MODEL.YOLOV7.WIDTH_MULTIPLE", "0.25",
         "MODEL.YOLOV7.NUM_CLASSES", "3", "INPUT.YOLOV7.IMAGE_SIZE", "128"]
# Each research config with a small variant of its backbone where timm has one.
CASES = {
    "yolov7-convnext-tiny": ["MODEL.TIMM.NAME", "convnext_atto"],
    "yolov7-pvtv2-b0": [],
    "yolov7-swin-tiny": [],
    "yolov7-resnet50": [],
}
SIZE = 128


def build(config: str, *opts):
    return build_model(load_config(str(ROOT / "configs" / "research" / f"{config}.yaml"),
                                   [*SMALL, *opts]))


def training_input(boxes, classes, size=SIZE):
    instances = Instances((size, size))
    instances.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
    return {"image": torch.randint(0, 256, (3, size, size), dtype=torch.uint8).float(),
            "instances": instances}


@pytest.mark.parametrize("config", sorted(CASES))
def test_research_backbone_shapes_training_step_and_inference(config):
    model = build(config, *CASES[config])
    bottom_up = model.backbone.bottom_up
    assert model.backbone.size_divisibility == 32  # the neck pads to its coarsest stride
    if isinstance(bottom_up, TimmBackbone):
        assert bottom_up.size_divisibility == 32

    # The declared ShapeSpecs are the real feature shapes.
    features = bottom_up(torch.zeros(2, 3, SIZE, SIZE))
    shapes = bottom_up.output_shape()
    assert list(features) == list(model.backbone.in_features)
    for name, feature in features.items():
        assert feature.shape == (2, shapes[name].channels, SIZE // shapes[name].stride,
                                 SIZE // shapes[name].stride), name
    assert [model.backbone.output_shape()[f].stride for f in ("p3", "p4", "p5")] == [8, 16, 32]

    model.train()
    batch = [training_input([[10, 20, 60, 90], [50, 50, 120, 127]], [0, 2]),
             training_input([[30, 30, 70, 100]], [1])]
    with EventStorage():
        losses = model(batch)
        assert set(losses) == {"loss_box", "loss_obj", "loss_cls"}
        assert all(torch.isfinite(v) and v > 0 for v in losses.values())
        sum(losses.values()).backward()
    grads = [p.grad for p in bottom_up.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0  # the loss reaches the backbone

    # Inference on a rectangular image (padded to 160 x 128): fixed-size models (Swin) too.
    model.eval()
    with torch.no_grad():
        (result,) = model([{"image": torch.zeros(3, 150, 128), "height": 300, "width": 256}])
    assert result["instances"].image_size == (300, 256)


def test_timm_channels_last_outputs_are_permuted():
    backbone = TimmBackbone("swin_tiny_patch4_window7_224", img_size=SIZE)
    assert backbone.channels_last
    out = backbone(torch.zeros(1, 3, SIZE, SIZE))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "c3": (1, 192, 16, 16), "c4": (1, 384, 8, 8), "c5": (1, 768, 4, 4)}


def test_timm_rejects_single_stride_models():
    with pytest.raises(ValueError, match="power-of-two stride"):
        TimmBackbone("vit_tiny_patch16_224", img_size=SIZE)


@pytest.fixture
def no_weight_server(monkeypatch, tmp_path):
    """No cached weights and an unreachable weight server, whatever this machine has."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch_hub"))
    monkeypatch.setattr(timm_backbone, "_reachable", lambda url: False)
    return tmp_path


def test_pretrained_offline_fails_fast_with_instructions(no_weight_server):
    start = time.perf_counter()
    with pytest.raises(timm_backbone.PretrainedWeightsUnavailable,
                       match=r"(?s)convnext_atto.*cannot be reached.*pretrained_file"):
        build("yolov7-convnext-tiny", "MODEL.TIMM.NAME", "convnext_atto",
              "MODEL.TIMM.PRETRAINED", "True")
    assert time.perf_counter() - start < 10
    with pytest.raises(timm_backbone.PretrainedWeightsUnavailable, match="does not exist"):
        TimmBackbone("convnext_atto", pretrained=True, pretrained_file="/nonexistent.pth")


def test_pretrained_weights_from_a_local_file_or_the_cache(no_weight_server):
    import timm

    reference = timm.create_model("convnext_atto")
    weights = no_weight_server / "convnext_atto.pth"
    torch.save(reference.state_dict(), weights)
    expected = reference.stages[3].blocks[0].conv_dw.weight

    backbone = TimmBackbone("convnext_atto", pretrained=True, pretrained_file=str(weights))
    assert torch.equal(backbone.body.stages_3.blocks[0].conv_dw.weight, expected)

    # A file in the torch hub cache under its url's name is found without any network access.
    url = timm.models.get_pretrained_cfg("convnext_atto").url
    cached = no_weight_server / "torch_hub" / "checkpoints" / Path(url).name
    cached.parent.mkdir(parents=True)
    weights.rename(cached)
    backbone = TimmBackbone("convnext_atto", pretrained=True)
    assert torch.equal(backbone.body.stages_3.blocks[0].conv_dw.weight, expected)
