"""Real photos for tests and demos, from scikit-image's bundled data (CC0 / public domain).

All helpers return HxWx3 uint8 arrays in BGR order, as cv2 and detectron2's default
``INPUT.FORMAT`` use (scikit-image gives RGB).
"""
from __future__ import annotations

import os
from typing import Dict, List

import numpy as np

#: name -> scikit-image loader name; astronaut 512x512, coffee 400x600, chelsea 300x451.
PHOTOS = ("astronaut", "coffee", "chelsea")


def photo(name: str) -> np.ndarray:
    """One photo as an HxWx3 uint8 BGR array (a fresh, writable copy)."""
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; choose from {PHOTOS}")
    from skimage import data

    rgb = getattr(data, name)()
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8, (name, rgb.shape)
    return np.ascontiguousarray(rgb[:, :, ::-1])


def astronaut() -> np.ndarray:
    return photo("astronaut")


def coffee() -> np.ndarray:
    return photo("coffee")


def chelsea() -> np.ndarray:
    return photo("chelsea")


def all_photos() -> Dict[str, np.ndarray]:
    """All photos, name -> HxWx3 uint8 BGR array."""
    return {name: photo(name) for name in PHOTOS}


def write_photos(directory: str | os.PathLike, names=PHOTOS, ext: str = ".jpg") -> List[str]:
    """Writes the photos to ``directory`` with cv2.imwrite; returns the file paths."""
    import cv2

    os.makedirs(directory, exist_ok=True)
    paths = []
    for name in names:
        path = os.path.join(os.fspath(directory), name + ext)
        if not cv2.imwrite(path, photo(name)):
            raise OSError(f"cv2.imwrite failed for {path}")
        paths.append(path)
    return paths
