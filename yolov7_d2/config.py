"""Config keys of the YOLOv7 plugin."""
from detectron2.config import CfgNode as CN

__all__ = ["add_yolov7_config", "load_config"]


def add_yolov7_config(cfg: CN) -> None:
    """Add the ``cfg.MODEL.YOLOV7`` subtree (and YOLO input defaults) to a detectron2 config."""
    cfg.MODEL.YOLOV7 = CN()
    yolo = cfg.MODEL.YOLOV7
    # Official scale whose architecture table row is built: yolov7-tiny, yolov7, yolov7x,
    # yolov7-w6, yolov7-e6, yolov7-d6 or yolov7-e6e.
    yolo.ARCH = "yolov7"
    # Registered BACKBONE_REGISTRY builder of the bottom-up part under the PAN neck.
    yolo.BOTTOM_UP = "build_elan_backbone"
    # Bottom-up outputs fed to the neck, finest first; empty: "c3".."c5" ("c6" for P6 scales).
    yolo.IN_FEATURES = []
    # Scales every channel width as the official width_multiple (ceil to a multiple of 8).
    yolo.WIDTH_MULTIPLE = 1.0
    # Number of object classes (80 for COCO).
    yolo.NUM_CLASSES = 80
    # Anchors per level, stride 8 first, as flat (w, h) pixel pairs; empty: the official
    # anchors of ARCH. Checkpoints carry their anchors, which replace these when loaded.
    yolo.ANCHORS = []
    # Build the auxiliary head where ARCH has one (P6 scales); it only serves training.
    yolo.AUX_HEAD = True
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


def load_config(config_file: str = "", opts=()) -> CN:
    """A detectron2 config with the YOLOv7 keys, merged from ``config_file`` and ``opts``
    ("KEY VALUE" pairs). Unknown keys raise an error naming them."""
    from detectron2.config import get_cfg

    cfg = get_cfg()
    add_yolov7_config(cfg)
    try:
        if config_file:
            cfg.merge_from_file(config_file)
        cfg.merge_from_list(list(opts))
    except (AssertionError, KeyError) as e:  # yacs reports unknown keys with an assert
        source = f"{config_file!r} or the command-line options" if config_file else "the options"
        raise KeyError(f"{e} (in {source}); the YOLOv7 keys and their meaning are in "
                       "yolov7_d2/config.py") from e
    return cfg
