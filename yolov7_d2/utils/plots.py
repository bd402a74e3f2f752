"""Plots of the run artefacts (matplotlib, drawn on Agg canvases without pyplot, so no global
backend is set) and drawings of boxes on images (detectron2's ``Visualizer``)."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import cv2
import numpy as np

__all__ = [
    "plot_metric_curves",
    "plot_confusion_matrix",
    "plot_label_distribution",
    "draw_boxes",
    "image_grid",
    "save_image",
]

# Per-class curves are labelled in the legend up to this many classes, else drawn in grey.
_MAX_LEGEND_CLASSES = 20


def _figure(figsize):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=100, tight_layout=True)


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def plot_metric_curves(x: np.ndarray, curves: np.ndarray, names: Sequence[str], path: str, *,
                       xlabel: str, ylabel: str, valid: Optional[np.ndarray] = None,
                       class_values: Optional[np.ndarray] = None, value_fmt: str = "{:.3f}",
                       mean_label: str = "all classes") -> str:
    """One PNG: a curve per class (thin) and their mean over ``valid`` classes (thick).

    Args:
        x (K,): common abscissa; curves (C, K): one row per class.
        valid (C,) bool: classes in the mean (default: all).
        class_values (C,): a number shown after each class name in the legend (e.g. AP50).
        mean_label: legend text of the mean curve (its value is appended by the caller).
    """
    curves = np.asarray(curves, dtype=np.float64).reshape(len(names), -1)
    valid = np.ones(len(names), bool) if valid is None else np.asarray(valid, bool)
    fig = _figure((9, 6))
    ax = fig.subplots()
    labelled = len(names) <= _MAX_LEGEND_CLASSES
    for c in np.flatnonzero(valid):
        label = None
        if labelled:
            label = names[c] + ("" if class_values is None
                                else " " + value_fmt.format(class_values[c]))
        ax.plot(x, curves[c], linewidth=1, label=label, color=None if labelled else "grey")
    if valid.any():
        ax.plot(x, curves[valid].mean(0), linewidth=3, color="blue", label=mean_label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
    return _save(fig, path)


def plot_confusion_matrix(matrix: np.ndarray, names: Sequence[str], path: str, *,
                          normalize: bool = True, title: str = "") -> str:
    """Heat map of a (C + 1) x (C + 1) confusion matrix (rows: predicted, columns: true;
    the last row / column is "background"), each column divided by its sum when
    ``normalize`` (share of each true class); cells are annotated for up to 30 classes."""
    m = np.asarray(matrix, dtype=np.float64)
    if normalize:
        m = m / np.maximum(m.sum(0, keepdims=True), 1e-9)
    labels = list(names) + ["background"]
    n = len(labels)
    size = min(max(4 + 0.45 * n, 6), 24)
    fig = _figure((size + 1.5, size))
    ax = fig.subplots()
    image = ax.imshow(np.where(m > 0.005, m, np.nan), cmap="Blues", vmin=0,
                      vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if n <= 31:
        ax.set_xticks(range(n), labels, rotation=90, fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
        for i in range(n):
            for j in range(n):
                if m[i, j] > 0.005:
                    text = f"{m[i, j]:.2f}" if normalize else f"{int(m[i, j])}"
                    ax.text(j, i, text, ha="center", va="center", fontsize=7,
                            color="white" if m[i, j] > 0.5 * np.nanmax(m) else "black")
    ax.set_xlabel("True")
    ax.set_ylabel("Predicted")
    ax.set_title(title or ("Confusion matrix (column-normalized)" if normalize else
                           "Confusion matrix (counts)"))
    return _save(fig, path)


def plot_label_distribution(classes: np.ndarray, boxes_xywhn: np.ndarray, names: Sequence[str],
                            path: str, max_outlines: int = 1000, seed: int = 0) -> str:
    """The training labels at a glance (as the official labels.jpg): instances per class, box
    outlines centred on one canvas, a heat map of box centres (x, y) and one of box sizes
    (w, h), all in image-normalized coordinates.

    Args:
        classes (N,): class index of each box; boxes_xywhn (N, 4): centre x, centre y, width,
            height divided by the image width / height.
    """
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    b = np.asarray(boxes_xywhn, dtype=np.float64).reshape(-1, 4)
    nc = max(len(names), int(classes.max()) + 1 if len(classes) else 0)
    fig = _figure((12, 10))
    axes = fig.subplots(2, 2).ravel()
    counts = np.bincount(classes, minlength=nc)
    axes[0].bar(range(nc), counts, color="tab:blue")
    axes[0].set_ylabel("instances")
    axes[0].set_title(f"{len(classes)} boxes, {nc} classes")
    if nc <= 30:
        axes[0].set_xticks(range(nc),
                           [str(n) for n in names][:nc] + [str(i) for i in range(len(names), nc)],
                           rotation=90, fontsize=8)
    canvas = np.full((500, 500, 3), 255, np.uint8)
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(b))[:max_outlines]
    for (_, _, w, h), c in zip(b[pick], classes[pick]):
        x0, y0 = int(250 - w * 250), int(250 - h * 250)
        x1, y1 = int(250 + w * 250), int(250 + h * 250)
        color = tuple(int(v) for v in np.array(_color(c)) * 255)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), color, 1)
    axes[1].imshow(canvas)
    axes[1].set_title("box shapes (centred)")
    axes[1].axis("off")
    for ax, (u, v), (xl, yl) in ((axes[2], (0, 1), ("x", "y")),
                                 (axes[3], (2, 3), ("width", "height"))):
        ax.hist2d(b[:, u], b[:, v], bins=50, range=[[0, 1], [0, 1]], cmap="Blues", cmin=1)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[2].invert_yaxis()  # image convention: y downwards
    axes[2].set_title("box centres")
    axes[3].set_title("box sizes")
    return _save(fig, path)


def _color(index: int):
    from detectron2.utils.colormap import _COLORS

    return _COLORS[int(index) % len(_COLORS)]


def draw_boxes(image_rgb: np.ndarray, boxes: np.ndarray, classes: np.ndarray, names: Sequence[str],
               scores: Optional[np.ndarray] = None, title: str = "") -> np.ndarray:
    """RGB image with labelled boxes (XYXY pixels), one colour per class, drawn by detectron2's
    ``Visualizer``; ``title`` is written in the top-left corner."""
    from detectron2.utils.visualizer import Visualizer

    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    labels = [names[c] if 0 <= c < len(names) else str(c) for c in classes]
    if scores is not None:
        labels = [f"{label} {s:.2f}" for label, s in zip(labels, np.asarray(scores).reshape(-1))]
    vis = Visualizer(np.ascontiguousarray(image_rgb))
    colors = [_color(c) for c in classes]
    out = vis.overlay_instances(boxes=boxes, labels=labels, assigned_colors=colors, alpha=0.5)
    if title:
        h, w = image_rgb.shape[:2]
        out = vis.draw_text(title, (4, 4), horizontal_alignment="left", color="w",
                            font_size=max(np.sqrt(h * w) // 90, 10))
    return out.get_image()


def image_grid(images: Sequence[np.ndarray], columns: Optional[int] = None,
               fill: int = 255) -> np.ndarray:
    """Tile RGB images of any sizes into one image (row-major, cells of the largest size)."""
    if not images:
        raise ValueError("no images to tile")
    columns = columns or int(np.ceil(np.sqrt(len(images))))
    rows = int(np.ceil(len(images) / columns))
    h = max(i.shape[0] for i in images)
    w = max(i.shape[1] for i in images)
    grid = np.full((rows * h, columns * w, 3), fill, np.uint8)
    for k, image in enumerate(images):
        r, c = divmod(k, columns)
        grid[r * h:r * h + image.shape[0], c * w:c * w + image.shape[1]] = image[..., :3]
    return grid


def save_image(path: str, image_rgb: np.ndarray, quality: int = 90) -> str:
    """Write an RGB image (JPEG / PNG by extension); raises if OpenCV cannot write it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    bgr = cv2.cvtColor(np.ascontiguousarray(image_rgb[..., :3]), cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(path, bgr, [cv2.IMWRITE_JPEG_QUALITY, quality]):
        raise OSError(f"cannot write image {path!r}")
    return path
