"""Set-up shared by train_net.py, tools/lazyconfig_train_net.py and the tools after
detectron2's own: this package's loggers, the bundled datasets registered, and the bundled
datasets a run uses prepared."""
import logging
import subprocess
import sys
from typing import Iterable

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..data import register_deepforest, register_labelme_examples
from ..data.datasets.prepared import PREPARE_SCRIPT, checkout_dir

__all__ = ["setup_yolov7_run", "prepare_bundled_datasets"]

logger = logging.getLogger(__name__)


def setup_yolov7_run(output_dir: str) -> None:
    """This package's own messages (dataset checks, anchor check) in the console and
    ``output_dir``/log.txt at INFO (the mapper's per-sample DEBUG lines stay off), still
    propagated so handlers on the root logger (pytest's caplog, a user's) see them; and the
    bundled datasets registered (nothing is fetched: see :func:`prepare_bundled_datasets`)."""
    yolo_logger = setup_logger(output_dir, distributed_rank=comm.get_rank(),
                               name="yolov7_d2", abbrev_name="yolov7")
    yolo_logger.setLevel(logging.INFO)
    yolo_logger.propagate = True
    register_deepforest()
    register_labelme_examples()


def prepare_bundled_datasets(names: Iterable[str]) -> None:
    """Prepare the bundled datasets among the registered ``names`` (those whose metadata has
    a ``bundled`` :class:`~yolov7_d2.data.datasets.BundledDataset`) that are not prepared yet,
    by running the checkout's ``tools/prepare_datasets.py`` as a user would (its output goes
    to this console). Entry points call it before loading their datasets, so the main job
    needs no separate step; the library never downloads by itself.

    Raises:
        FileNotFoundError: without a checkout (a non-editable install): the message gives
            the command to run.
        RuntimeError: the tool failed (its error is printed above).
    """
    # The splits of one bundled dataset share it (and its checksum pass): once each.
    first_name = {}  # BundledDataset -> the first of names that loads it
    for name in names:
        if name in DatasetCatalog:
            first_name.setdefault(MetadataCatalog.get(name).get("bundled"), name)
    for bundled, name in first_name.items():
        if bundled is None or bundled.is_prepared():
            continue
        checkout = checkout_dir()
        if checkout is None or not (checkout / PREPARE_SCRIPT).is_file():
            bundled.check_prepared()  # raises with the command to run
        command = [sys.executable, str(checkout / PREPARE_SCRIPT), *bundled.prepare_arguments]
        logger.info("%s is not prepared in %s: running %s", name, bundled.directory,
                    " ".join(command))
        # The tool locks the directory: of several ranks (or jobs) one prepares, the others
        # wait and find it ready.
        if subprocess.run(command).returncode != 0:
            raise RuntimeError(f"preparing the dataset {name!r} failed: `{' '.join(command)}` "
                               "exited with an error (printed above)")
        bundled.check_prepared()
