#!/usr/bin/env python
"""Packaging for d2-yolov7 (import package ``yolov7_d2``): YOLOv7 as a detectron2 plugin.

PyTorch, torchvision and detectron2 are deliberately NOT listed in ``install_requires``:

* torch / torchvision come in many builds (CPU, CUDA x.y, ROCm) that pip cannot choose
  between, and detectron2's compiled ops must match the torch they were built against;
* detectron2 is not published on PyPI under its own name; users install it from its
  repository (a full build with the compiled ``detectron2._C``).

``install.sh`` installs a tested torch/torchvision pair and, when no detectron2 is importable,
a Python-only detectron2 0.6 (see ``yolov7_d2/compat.py`` for what that install lacks).
"""
from setuptools import find_packages, setup

install_requires = [
    "fvcore",
    "pycocotools",
    # TEST.YOLOV7.EVAL_BACKEND "faster_coco_eval": pycocotools' numbers, several times faster.
    "faster-coco-eval>=1.8",
    "opencv-python-headless",
    "timm",
    "numpy",
    "pyyaml",
    "tqdm",
    "matplotlib",
    "tensorboard",
    "pillow",
    "termcolor",
    # detectron2 0.6's model_zoo imports pkg_resources, which setuptools 81 removed.
    "setuptools<81",
]

extras_require = {
    "test": [
        "pytest",
        # property tests of the box transforms and the mapper (tests/test_properties.py)
        "hypothesis",
        # real CC0 / public-domain photos (astronaut, coffee, chelsea) for demo tests
        "scikit-image",
        # what `import sas_yolov7.models.yolo` needs; sas-yolov7 itself (a GPL-3.0 test-only
        # reference implementation) is installed by install.sh with --no-deps, because its
        # own requirements pin numpy<1.24.
        "requests",
        "scipy",
        # ONNX export tests (tools/export_onnx.py, demo.py --onnx)
        "onnx",
        "onnxruntime",
    ],
    # ONNX export and onnxruntime inference (tested with onnx 1.23.2, onnxruntime 1.31.1)
    "export": ["onnx", "onnxruntime"],
}

setup(
    name="d2-yolov7",
    version="0.1.0",
    description="YOLOv7 object detector as a detectron2 plugin",
    license="Apache-2.0",
    packages=find_packages(exclude=("tests", "tests.*", "configs", "configs.*", "tools", "tools.*")),
    python_requires=">=3.10",
    install_requires=install_requires,
    extras_require=extras_require,
)
