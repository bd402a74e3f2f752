"""Deployment: the re-parameterized model (:mod:`.deploy`), its ONNX export (:mod:`.onnx`) and
the onnxruntime predictor of the exported file (:mod:`.onnx_predictor`). The last two need the
``onnx`` / ``onnxruntime`` packages, imported only when used: extra ``onnx``,
``pip install -e '.[onnx]'``."""
from .deploy import (
    REPARAMETERIZED_KEY,
    build_deploy_model,
    checkpoint_is_reparameterized,
    count_parameters,
    deploy_checkpoint,
    is_reparameterized_state,
)

__all__ = ["REPARAMETERIZED_KEY", "build_deploy_model", "checkpoint_is_reparameterized",
           "count_parameters", "deploy_checkpoint", "is_reparameterized_state"]
