"""The one image reader of the package: training and evaluation mappers, the predictor, the
demo and the dataset validation all decode files with :func:`read_image`.

Its pixels are those of ``cv2.imread``, which official YOLOv7 reads with: EXIF orientation
applied, 16-bit samples reduced to their high byte, grayscale and palette images repeated
over 3 channels, an alpha channel dropped. Any failure raises :class:`ImageLoadError`
naming the file.

Complete JPEG and PNG files in BGR or RGB are decoded by OpenCV: 1.5-2x faster than PIL with
its copy into numpy, which made decoding two thirds of the training data pipeline. 8-bit RGB
and RGBA PNGs without EXIF data are decoded by libspng where the ``fast-png`` extra (pyspng)
is installed: the same pixels, 1.3x faster than OpenCV's libpng. Everything else, and every
file with ``strict=True`` (the dataset check), goes through detectron2's PIL reader. PIL
refuses JPEGs with corrupt data that libjpeg decodes with only a warning, and names the
reason. 16-bit grayscale images are scaled to 8 bits on that path: PIL opens them in mode
"I;16" (or "I"), which ``Image.convert("RGB")`` clips at 255 (a solid white image).
"""
from __future__ import annotations

import io
import os
from typing import Optional, Tuple, Union

import cv2
import numpy as np
from PIL import Image

from detectron2.data import detection_utils as utils
from detectron2.utils.file_io import PathManager

try:  # the "fast-png" extra
    import pyspng
except ImportError:
    pyspng = None

__all__ = ["ImageLoadError", "read_image", "read_image_reduced", "image_check"]

#: PIL modes of one-channel images with more than 8 bits per sample.
_HIGH_DEPTH_GRAY = ("I;16", "I;16L", "I;16B", "I;16N", "I")
#: (first bytes, last bytes) of a complete file that OpenCV decodes: JPEG from its
#: start-of-image to its end-of-image marker, PNG from its signature to its IEND chunk. A
#: truncated file does not end so and goes to PIL, which names what is wrong.
_JPEG_START, _PNG_START = b"\xff\xd8", b"\x89PNG\r\n\x1a\n"
_COMPLETE_FILES = ((_JPEG_START, b"\xff\xd9"), (_PNG_START, b"IEND\xaeB`\x82"))


#: cv2.imdecode flags of a JPEG decoded at 1 / factor of its size, by factor.
_REDUCED_JPEG_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                       8: cv2.IMREAD_REDUCED_COLOR_8}


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


def _decode_fast(data: bytes, format: str, jpeg_factor: int = 1) -> Optional[np.ndarray]:
    """(H, W, 3) uint8 in ``format`` as ``cv2.imdecode`` gives it (decoded by libspng or
    OpenCV), or None where PIL should decode: another format than BGR / RGB, a file that is
    not a complete JPEG or PNG, or one that neither can decode. ``jpeg_factor`` 2, 4 or 8
    (``data`` must then be a JPEG): decoded at that fraction of its size."""
    if format not in ("BGR", "RGB") or not any(
            data.startswith(head) and data.endswith(tail) for head, tail in _COMPLETE_FILES):
        return None
    if _spng_decodes_as_opencv(data):
        try:
            image = pyspng.load(data)  # RGB or RGBA
        except Exception:  # libspng refuses what libpng may accept: let OpenCV try
            pass
        else:
            if image.shape[2] == 3 and format == "RGB":
                return image
            code = {(3, "BGR"): cv2.COLOR_RGB2BGR, (4, "BGR"): cv2.COLOR_RGBA2BGR,
                    (4, "RGB"): cv2.COLOR_RGBA2RGB}[image.shape[2], format]
            return cv2.cvtColor(image, code)  # OpenCV's IMREAD_COLOR drops the alpha too
    flag = _REDUCED_JPEG_FLAGS[jpeg_factor] if jpeg_factor > 1 else cv2.IMREAD_COLOR
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if image is None or format == "BGR":
        return image
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _spng_decodes_as_opencv(data: bytes) -> bool:
    """Whether libspng is installed and ``data`` (a complete PNG) has 8 bits per sample, RGB
    or RGBA (IHDR's bit depth and colour type, bytes 24 and 25 of the file) and no EXIF
    chunk (whose orientation OpenCV applies): what libspng decodes to OpenCV's pixels. EXIF is
    looked for before the first and after the last image data chunk, not through the image
    data (a quarter of a millisecond for a 0.5 MB file)."""
    if not (pyspng is not None and data.startswith(_PNG_START) and len(data) > 25
            and data[24] == 8 and data[25] in (2, 6)):
        return False
    first, last = data.find(b"IDAT"), data.rfind(b"IDAT")
    return first >= 0 and b"eXIf" not in data[:first] and b"eXIf" not in data[last:]


def _decode_with_pil(data: bytes, format: str) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    image = utils._apply_exif_orientation(image)
    return utils.convert_PIL_to_numpy(_to_8bit(image), format)


def read_image(file_name: Union[str, os.PathLike], format: str = "BGR",
               strict: bool = False) -> np.ndarray:
    """Decode a whole image file.

    Args:
        file_name: a path (anything detectron2's ``PathManager`` opens).
        format: "BGR", "RGB", or another of detectron2's ``read_image`` formats ("L", ...).
        strict: decode with PIL only, which also refuses a JPEG whose data is corrupt where
            OpenCV decodes it with a warning (the dataset check uses it).

    Returns:
        np.ndarray: (H, W, 3) uint8 for "BGR" / "RGB" (H, W after EXIF orientation).

    Raises:
        ImageLoadError: missing file, unknown format, truncated or corrupt data (PIL raises
            "image file is truncated" without the file name; this error names it).
    """
    return _read_file(os.fspath(file_name), format, strict, jpeg_factor=1)[0]


def read_image_reduced(file_name: Union[str, os.PathLike], max_factor: int,
                       format: str = "BGR") -> Tuple[np.ndarray, int]:
    """:func:`read_image`, except that a complete JPEG is decoded at 1/2, 1/4 or 1/8 of its
    size, the smallest of those that ``max_factor`` allows (libjpeg's DCT scaling: 2-3x
    faster for a large photo, and a low-pass filter, not the aliasing of shrinking it
    bilinearly afterwards). Returns the image and the factor its width and height were
    divided by, rounded up (1: decoded whole, as other files are)."""
    factor = max((f for f in _REDUCED_JPEG_FLAGS if f <= max_factor), default=1)
    return _read_file(os.fspath(file_name), format, strict=False, jpeg_factor=factor)


def _read_file(file_name: str, format: str, strict: bool,
               jpeg_factor: int) -> Tuple[np.ndarray, int]:
    try:
        with PathManager.open(file_name, "rb") as f:
            data = f.read()
        factor = jpeg_factor if data.startswith(_JPEG_START) else 1
        image = None if strict else _decode_fast(data, format, factor)
        if image is None:  # PIL decodes whole images
            return _decode_with_pil(data, format), 1
        return image, factor
    except Exception as e:  # OSError, PIL.UnidentifiedImageError, SyntaxError (bad PNG), ...
        raise ImageLoadError(file_name, f"{type(e).__name__}: {e}") from e


def image_check(file_name: Union[str, os.PathLike]) -> Tuple[int, int]:
    """Decode the whole file as :func:`read_image` does with ``strict=True`` and return its
    (width, height) in pixels, after EXIF orientation. Raises :class:`ImageLoadError` with
    the reason."""
    image = read_image(file_name, format="RGB", strict=True)
    height, width = image.shape[:2]
    if image.ndim != 3 or image.shape[2] != 3 or width == 0 or height == 0:
        raise ImageLoadError(os.fspath(file_name), f"decoded to an array of shape {image.shape}")
    return width, height
