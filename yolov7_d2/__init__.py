"""YOLOv7 for detectron2. Importing the package applies the detectron2 0.6 compatibility
shims (before any detectron2 import) and registers the meta-architecture and backbones."""
from . import compat

compat.apply()

from .config import add_yolov7_config, load_config  # noqa: E402
from .modeling import ELANBackbone, YOLOv7, YOLOv7Head, YOLOv7PAN  # noqa: E402

__all__ = ["add_yolov7_config", "load_config", "YOLOv7", "YOLOv7Head", "YOLOv7PAN", "ELANBackbone"]
