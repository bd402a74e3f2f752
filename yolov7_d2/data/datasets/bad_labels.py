"""Bad labels and bad image files of a dataset load, collected and then reported at once: with
``on_bad_label="error"`` one ``ValueError`` lists them; with ``"skip"`` each is logged as a
warning and left out. Used by the YOLO and VOC readers and by the image validation of
:mod:`yolov7_d2.data.validate`."""
from __future__ import annotations

import logging
from typing import List, Optional

__all__ = ["ON_BAD_LABEL_CHOICES", "ON_BAD_LABEL_KEY", "MAX_LOGGED", "MAX_LISTED",
           "BadLabelError", "BadLabels", "check_on_bad_label"]

logger = logging.getLogger(__name__)

ON_BAD_LABEL_CHOICES = ("error", "skip")
ON_BAD_LABEL_KEY = "DATASETS.YOLOV7.ON_BAD_LABEL"
#: In skip mode, problems logged one by one before only the total is reported.
MAX_LOGGED = 50
#: In error mode, problems listed in the exception message.
MAX_LISTED = 20


class BadLabelError(ValueError):
    """Bad label lines or image files (``on_bad_label="error"``); the message lists them."""


def check_on_bad_label(mode: str, key: str = ON_BAD_LABEL_KEY) -> str:
    """``mode`` if it is one of :data:`ON_BAD_LABEL_CHOICES`, else ValueError naming ``key``."""
    if mode not in ON_BAD_LABEL_CHOICES:
        raise ValueError(f"{key} must be one of {ON_BAD_LABEL_CHOICES}, got {mode!r}")
    return mode


class BadLabels:
    """Collects ``where: reason`` problems of one dataset load and, at the end, raises
    (``mode="error"``) or has logged each as a warning (``mode="skip"``).

    The defaults are those of label files; the image validation of
    :mod:`yolov7_d2.data.validate` names its own config ``key``, the problems (``what``), the
    ``error`` class, and lists every problem (``max_listed=None``)."""

    def __init__(self, dataset_name: str, mode: str, *, key: str = ON_BAD_LABEL_KEY,
                 what: str = "bad label line(s) / image file(s)",
                 max_listed: Optional[int] = MAX_LISTED, error: type = BadLabelError):
        check_on_bad_label(mode, key)
        self.dataset_name, self.mode = dataset_name, mode
        self.key, self.what, self.max_listed = key, what, max_listed
        self.error = error
        self.problems: List[str] = []

    def add(self, where: str, reason: str) -> None:
        message = f"{where}: {reason}"
        self.problems.append(message)
        if self.mode == "skip" and len(self.problems) <= MAX_LOGGED:
            logger.warning("%s: %s; skipped (%s skip)", self.dataset_name, message, self.key)

    def finish(self) -> None:
        n = len(self.problems)
        if not n:
            return
        if self.mode == "error":
            listed = self.problems if self.max_listed is None else self.problems[:self.max_listed]
            more = f"\n  ... and {n - len(listed)} more" if n > len(listed) else ""
            raise self.error(
                f"dataset {self.dataset_name!r}: {n} {self.what}:\n  "
                + "\n  ".join(listed)
                + f"{more}\nFix them, or leave them out with {self.key} skip (each is then "
                "logged).")
        if n > MAX_LOGGED:
            logger.warning("%s: %d %s skipped in total (the first %d are logged above)",
                           self.dataset_name, n, self.what, MAX_LOGGED)
        else:
            logger.warning("%s: %d %s skipped", self.dataset_name, n, self.what)
