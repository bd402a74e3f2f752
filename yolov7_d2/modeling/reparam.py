"""Re-parameterization of a trained YOLOv7 into its deploy form (bag of freebies, sec. 3.2)."""
import torch
from torch import nn

from .head import YOLOv7Head
from .layers import ConvBNAct, RepConv

__all__ = ["fold_implicit_knowledge", "reparameterize", "inference_form"]


@torch.no_grad()
def fold_implicit_knowledge(head: YOLOv7Head) -> None:
    """Fold ImplicitA / ImplicitM into each prediction conv in place (official IDetect.fuse),
    with :meth:`~.head.YOLOv7Head.folded_prediction`."""
    if head.implicit_a is None:
        return
    for level, conv in enumerate(head.predictors):
        weight, bias = head.folded_prediction(level)
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
    head.implicit_a = head.implicit_m = None


@torch.no_grad()
def reparameterize(model: nn.Module) -> nn.Module:
    """Turn a trained YOLOv7 into its deploy form, in place, and return it in eval mode:
    BatchNorm folded into every conv, RepConv merged into one 3x3 conv, implicit knowledge
    folded into the prediction convs, auxiliary head removed. Inference outputs are unchanged
    (up to float rounding)."""
    model.eval()
    for module in model.modules():
        if isinstance(module, (ConvBNAct, RepConv)):
            module.fuse()
    fold_implicit_knowledge(model.head)
    if getattr(model, "aux_head", None) is not None:
        model.aux_head = None
        model.backbone.disable_aux_outputs()
        model.head_in_features = model.head_in_features[:model.num_levels]
    return model


def inference_form(model: nn.Module) -> nn.Module:
    """The form inference-only runs use (the predictor, demo.py, ``--eval-only``), in place:
    the deploy form of :func:`reparameterize` (same outputs up to float rounding) in NHWC
    memory layout, the faster layout on CPUs (oneDNN) and tensor-core GPUs. Load the
    weights before: checkpoints hold the training form."""
    reparameterize(model)
    model.to(memory_format=torch.channels_last)
    model.channels_last = True
    return model
