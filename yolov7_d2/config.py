"""Config keys of the YOLOv7 plugin."""
from detectron2.config import CfgNode as CN

__all__ = ["add_yolov7_config"]


def add_yolov7_config(cfg: CN) -> None:
    """Add the ``cfg.MODEL.YOLOV7`` subtree (and YOLO input defaults) to a detectron2 config."""
    cfg.MODEL.YOLOV7 = CN()
    yolo = cfg.MODEL.YOLOV7
    # Official scale whose architecture table row is built: yolov7-tiny, yolov7, yolov7x,
    # yolov7-w6, yolov7-e6, yolov7-d6 or yolov7-e6e.
    yolo.ARCH = "yolov7"
    # Registered BACKBONE_REGISTRY builder of the bottom-up part under the PAN neck.
    yolo.BOTTOM_UP = "build_elan_backbone"
    # Bottom-up outputs fed to the neck, finest first ("c3".."c5"; P6 scales add "c6").
    yolo.IN_FEATURES = ["c3", "c4", "c5"]
    # Scales every channel width as the official width_multiple (ceil to a multiple of 8).
    yolo.WIDTH_MULTIPLE = 1.0
    # Number of object classes (80 for COCO).
    yolo.NUM_CLASSES = 80
    # Anchors per level, stride 8 first, as flat (w, h) pixel pairs; official checkpoints
    # carry their own, which replace these when loaded.
    yolo.ANCHORS = [[12, 16, 19, 36, 40, 28], [36, 75, 76, 55, 72, 146], [142, 110, 192, 243, 459, 401]]
    # Build the auxiliary head (P6 scales, training only; its outputs are unused in inference).
    yolo.AUX_HEAD = False
    # Deploy form: plain Detect head without implicit knowledge and without auxiliary head.
    yolo.DEPLOY = False
    # Inference: candidates need objectness and score above this (official test.py: 0.001).
    yolo.CONF_THRESH_TEST = 0.001
    # Inference: IoU threshold of the class-wise NMS (official test.py: 0.65).
    yolo.NMS_THRESH_TEST = 0.65
    # Inference: highest-scoring candidates kept before NMS (official max_nms).
    yolo.MAX_NMS_CANDIDATES_TEST = 30000
    # Inference: report a box once per class above the threshold (official evaluation).
    yolo.MULTI_LABEL_TEST = True
