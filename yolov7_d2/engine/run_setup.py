"""Set-up shared by train_net.py and tools/lazyconfig_train_net.py after detectron2's own."""
import logging

from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..data import register_deepforest, register_labelme_examples

__all__ = ["setup_yolov7_run"]


def setup_yolov7_run(output_dir: str) -> None:
    """This package's own messages (dataset checks, anchor check) in the console and
    ``output_dir``/log.txt at INFO (the mapper's per-sample DEBUG lines stay off), still
    propagated so handlers on the root logger (pytest's caplog, a user's) see them; and the
    built-in datasets registered, lazily: data is fetched and prepared only when a registered
    split is first loaded."""
    yolo_logger = setup_logger(output_dir, distributed_rank=comm.get_rank(),
                               name="yolov7_d2", abbrev_name="yolov7")
    yolo_logger.setLevel(logging.INFO)
    yolo_logger.propagate = True
    register_deepforest()
    register_labelme_examples()
