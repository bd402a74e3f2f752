"""Deployment: the re-parameterized model (:mod:`.deploy`) and its ONNX export with an
onnxruntime predictor (:mod:`.onnx`; needs the ``onnx`` / ``onnxruntime`` packages, imported
only when used: ``pip install d2-yolov7[export]``)."""
from .deploy import (REPARAMETERIZED_KEY, build_deploy_model, checkpoint_is_reparameterized,
                     count_parameters, deploy_checkpoint, is_reparameterized_state)

__all__ = ["REPARAMETERIZED_KEY", "build_deploy_model", "checkpoint_is_reparameterized",
           "count_parameters", "deploy_checkpoint", "is_reparameterized_state"]
