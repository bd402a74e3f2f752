"""The one image reader of the package: training and evaluation mappers, the predictor, the
demo and the dataset validation all decode files with :func:`read_image`.

It is detectron2's ``read_image`` (PIL, EXIF orientation applied the same way) with two
differences: any failure raises :class:`ImageLoadError` naming the file, and 16-bit grayscale
images are scaled to 8 bits. PIL opens those in mode "I;16" (or "I"), which
``Image.convert("RGB")`` clips at 255: a 16-bit PNG came out solid white. OpenCV (official
YOLOv7 reads with ``cv2.imread``) keeps the high byte; so does this reader. The other modes
follow OpenCV too: 16-bit RGB(A) is opened by PIL with its high byte already, grayscale and
palette images are repeated over 3 channels, an alpha channel is dropped.
"""
from __future__ import annotations

import os
from typing import Tuple, Union

import numpy as np
from PIL import Image

from detectron2.data import detection_utils as utils
from detectron2.utils.file_io import PathManager

__all__ = ["ImageLoadError", "read_image", "image_check"]

#: PIL modes of one-channel images with more than 8 bits per sample.
_HIGH_DEPTH_GRAY = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class ImageLoadError(OSError):
    """An image file could not be read. ``file_name`` and ``reason`` are attributes; the
    message names both."""

    def __init__(self, file_name: str, reason: str = ""):
        super().__init__(f"cannot read image {file_name!r}: {reason}")
        self.file_name, self.reason = file_name, reason


def _to_8bit(image: Image.Image) -> Image.Image:
    """A 16-bit grayscale image as 8-bit "L" (sample >> 8, as OpenCV); others unchanged."""
    if image.mode not in _HIGH_DEPTH_GRAY:
        return image
    # "I" is 32-bit signed in PIL; older Pillows open 16-bit PNGs in it, values 0..65535.
    samples = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
    return Image.fromarray((samples >> 8).astype(np.uint8), "L")


def read_image(file_name: Union[str, os.PathLike], format: str = "BGR") -> np.ndarray:
    """Decode a whole image file.

    Args:
        file_name: a path (anything detectron2's ``PathManager`` opens).
        format: "BGR", "RGB", or another of detectron2's ``read_image`` formats ("L", ...).

    Returns:
        np.ndarray: (H, W, 3) uint8 for "BGR" / "RGB" (H, W after EXIF orientation).

    Raises:
        ImageLoadError: missing file, unknown format, truncated or corrupt data (PIL raises
            "image file is truncated" without the file name; this error names it).
    """
    file_name = os.fspath(file_name)
    try:
        with PathManager.open(file_name, "rb") as f:
            image = Image.open(f)
            image = utils._apply_exif_orientation(image)
            return utils.convert_PIL_to_numpy(_to_8bit(image), format)
    except Exception as e:  # OSError, PIL.UnidentifiedImageError, SyntaxError (bad PNG), ...
        raise ImageLoadError(file_name, f"{type(e).__name__}: {e}") from e


def image_check(file_name: Union[str, os.PathLike]) -> Tuple[int, int]:
    """Decode the whole file as :func:`read_image` does and return its (width, height) in
    pixels, after EXIF orientation. Raises :class:`ImageLoadError` with the reason."""
    image = read_image(file_name, format="RGB")
    height, width = image.shape[:2]
    if image.ndim != 3 or image.shape[2] != 3 or width == 0 or height == 0:
        raise ImageLoadError(os.fspath(file_name), f"decoded to an array of shape {image.shape}")
    return width, height
