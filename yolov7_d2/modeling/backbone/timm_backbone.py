"""Any timm feature extractor (ConvNeXt, PVTv2, Swin, ResNet, ...) as a detectron2 Backbone,
to put under the YOLOv7 PAN neck (``MODEL.YOLOV7.BOTTOM_UP: "build_timm_backbone"``)."""
import math
import os
import socket
from typing import Dict, Iterable, List, Optional, Sequence
from urllib.parse import urlparse

import torch

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from ...utils.optional import import_optional

__all__ = ["TimmBackbone", "build_timm_backbone", "PretrainedWeightsUnavailable"]

# Seconds to wait for the weight server before declaring it unreachable. timm itself would
# retry for ~45 s per file (huggingface_hub's back-off) before failing on a machine offline.
_PROBE_TIMEOUT = 3.0


def _import_timm():
    return import_optional("timm", "research",
                           "The timm backbones (build_timm_backbone, configs/research/)")


class PretrainedWeightsUnavailable(RuntimeError):
    """Pretrained timm weights were asked for but are neither local nor downloadable."""


def _local_weight_file(pretrained_cfg) -> Optional[str]:
    """The cached file of ``pretrained_cfg``'s weights (huggingface or torch hub cache), if any."""
    hub_id = pretrained_cfg.hf_hub_id
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        names = [pretrained_cfg.hf_hub_filename] if pretrained_cfg.hf_hub_filename else [
            "model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin",
            "open_clip_pytorch_model.bin"]
        for name in names:
            path = try_to_load_from_cache(hub_id, name)
            if isinstance(path, str) and os.path.isfile(path):
                return path
    if pretrained_cfg.url:
        path = os.path.join(torch.hub.get_dir(), "checkpoints",
                            os.path.basename(urlparse(pretrained_cfg.url).path))
        if os.path.isfile(path):
            return path
    return None


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname, parsed.port or 443), _PROBE_TIMEOUT).close()
        return True
    except OSError:
        return False


def _pretrained_overlay(name: str, pretrained_file: str) -> dict:
    """``pretrained_cfg_overlay`` for timm: the given or cached weight file, or {} to let timm
    download. Fails within seconds (never after timm's minute of retries) when the weights
    can be neither found nor downloaded, saying how to provide them."""
    if pretrained_file:
        if not os.path.isfile(pretrained_file):
            raise PretrainedWeightsUnavailable(
                f"timm weight file {pretrained_file!r} does not exist")
        return {"file": pretrained_file}
    timm = _import_timm()

    pretrained_cfg = timm.models.get_pretrained_cfg(name)
    if pretrained_cfg is None:
        raise PretrainedWeightsUnavailable(f"timm has no pretrained weights for {name!r}")
    local = _local_weight_file(pretrained_cfg)
    if local:
        return {"file": local}
    from huggingface_hub import constants

    server = constants.ENDPOINT if pretrained_cfg.hf_hub_id else pretrained_cfg.url
    if not constants.HF_HUB_OFFLINE and server and _reachable(server):
        return {}
    source = pretrained_cfg.hf_hub_id or pretrained_cfg.url
    raise PretrainedWeightsUnavailable(
        f"Pretrained weights of timm model {name!r} ({source}) are not in the local cache and "
        f"{server or 'the weight server'} cannot be reached (no hub access here). Download the "
        "weights on a connected machine (e.g. `huggingface-cli download "
        f"{pretrained_cfg.hf_hub_id or '<hub id>'}`), then copy the huggingface cache (HF_HOME) "
        "here, or pass the file as TimmBackbone(pretrained_file=...) (timm's "
        "pretrained_cfg_overlay=dict(file=...)); or train from scratch (PRETRAINED False)."
    )


class TimmBackbone(Backbone):
    """A timm model created with ``features_only=True`` (Wightman, "PyTorch Image Models"),
    e.g. ConvNeXt (Liu et al. 2022), PVTv2 (Wang et al. 2022) or Swin (Liu et al. 2021).

    Outputs are named by log2(stride) as the ELAN backbone's: "c3" (stride 8) ... "c5", always
    (N, C, H, W): channels-last outputs (Swin) are permuted.

    Args:
        name: timm model name, optionally with a pretrained tag ("convnext_tiny.fb_in22k").
        out_indices: timm feature indices; default the last three (strides 8, 16, 32 for
            the usual 4-stage models).
        pretrained: load timm's ImageNet weights (from ``pretrained_file`` or the local cache;
            downloaded only if the server is reachable).
        pretrained_file: a local weights file for ``pretrained``.
        in_channels: image channels.
        img_size: input size for models whose position tables are built for a fixed size
            (Swin, ViT); they are also made to accept any size (``dynamic_img_size``).
        **model_kwargs: more ``timm.create_model`` arguments (drop_path_rate, ...).
    """

    def __init__(self, name: str, out_indices: Optional[Sequence[int]] = None,
                 pretrained: bool = False, pretrained_file: str = "", in_channels: int = 3,
                 img_size: int = 640, **model_kwargs):
        super().__init__()
        timm = _import_timm()

        pretrained_cfg = timm.models.get_pretrained_cfg(name)
        if pretrained_cfg is not None and pretrained_cfg.fixed_input_size:
            model_kwargs = {"img_size": img_size, "dynamic_img_size": True, **model_kwargs}
        if pretrained:
            model_kwargs["pretrained_cfg_overlay"] = _pretrained_overlay(name, pretrained_file)
        self.body = timm.create_model(
            name, features_only=True, out_indices=tuple(out_indices or (-3, -2, -1)),
            pretrained=pretrained, in_chans=in_channels, **model_kwargs)
        fmt = getattr(self.body, "output_fmt", "NCHW")
        self.channels_last = getattr(fmt, "value", fmt) == "NHWC"
        info = self.body.feature_info
        strides, channels = info.reduction(), info.channels()
        names = [f"c{int(math.log2(s))}" for s in strides]
        if len(set(names)) != len(names) or any(2 ** int(math.log2(s)) != s for s in strides):
            raise ValueError(f"timm model {name!r} gives features at strides {strides}; the YOLOv7 "
                             "neck needs one per power-of-two stride (8, 16, 32, ...)")
        self._out_features: List[str] = names
        self._out_feature_strides = dict(zip(names, strides))
        self._out_feature_channels = dict(zip(names, channels))

    @property
    def size_divisibility(self) -> int:
        return max(self._out_feature_strides.values())

    def names_of_timm_state_dict(self, names: Iterable[str]) -> Dict[str, str]:
        """This backbone's state-dict name of each of ``names``, names of the full timm model
        (as timm and the hub save its state dict) that have a place here (not the classifier).

        timm's ``features_only`` wrapper joins flattened module names with "_" ("stages.0" ->
        "stages_0"), so names are compared with "_" read as ".".
        """
        own: Dict[str, List[str]] = {}
        for key in self.state_dict():
            own.setdefault(key.replace("_", "."), []).append(key)
        found = {}
        for name in names:
            matches = own.get("body." + name.replace("_", "."), [])
            if len(matches) == 1:  # an ambiguous name is left out rather than guessed
                found[name] = matches[0]
        return found

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(N, C, H, W) -> {"cK": (N, C_K, H / 2^K, W / 2^K)}."""
        features = self.body(x)
        if self.channels_last:
            features = [f.permute(0, 3, 1, 2).contiguous() for f in features]
        return dict(zip(self._out_features, features))


@BACKBONE_REGISTRY.register()
def build_timm_backbone(cfg, input_shape: ShapeSpec) -> TimmBackbone:
    """``TimmBackbone`` of ``cfg.MODEL.TIMM`` (NAME, OUT_INDICES, PRETRAINED, PRETRAINED_FILE:
    a file given is loaded); fixed-size models (Swin) are built for
    ``cfg.INPUT.YOLOV7.IMAGE_SIZE``."""
    timm_cfg = cfg.MODEL.TIMM
    return TimmBackbone(
        timm_cfg.NAME,
        out_indices=list(timm_cfg.OUT_INDICES) or None,
        pretrained=timm_cfg.PRETRAINED or bool(timm_cfg.PRETRAINED_FILE),
        pretrained_file=timm_cfg.PRETRAINED_FILE,
        in_channels=input_shape.channels,
        img_size=cfg.INPUT.YOLOV7.IMAGE_SIZE,
    )
