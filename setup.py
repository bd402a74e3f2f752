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
    "opencv-python-headless",
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

# Optional features, each an extra (`pip install -e .[NAME]` in a checkout); where a missing
# one is imported, the error names its extra (yolov7_d2/utils/optional.py).
optional = {
    # research backbones: MODEL.YOLOV7.BOTTOM_UP "build_timm_backbone" (configs/research/)
    "research": ["timm"],
    # TEST.YOLOV7.EVAL_BACKEND "faster_coco_eval": pycocotools' numbers, several times faster
    "fast-eval": ["faster-coco-eval>=1.8"],
    # ONNX export and onnxruntime inference (tested with onnx 1.23.2, onnxruntime 1.31.1)
    "onnx": ["onnx", "onnxruntime"],
    # 8-bit RGB(A) PNGs decoded by libspng, 1.3x faster than OpenCV (tested with pyspng 0.1.4)
    "fast-png": ["pyspng"],
}

extras_require = {
    **optional,
    # everything the tests use (install.sh installs it): every optional feature is tested
    "test": [
        "pytest",
        # property tests of the box transforms and the mapper (tests/test_properties.py)
        "hypothesis",
        # real CC0 / public-domain photos (astronaut, coffee, chelsea) for demo tests
        "scikit-image",
        # the linter that tests/test_lint.py runs on the whole tree (pyproject.toml's settings)
        "ruff",
        # what `import sas_yolov7.models.yolo` needs; sas-yolov7 itself (a GPL-3.0 test-only
        # reference implementation) is installed by install.sh with --no-deps, because its
        # own requirements pin numpy<1.24.
        "requests",
        "scipy",
        *(package for packages in optional.values() for package in packages),
    ],
}

setup(
    name="d2-yolov7",
    version="0.1.0",
    description="YOLOv7 object detector as a detectron2 plugin",
    license="Apache-2.0",
    packages=find_packages(
        exclude=("tests", "tests.*", "configs", "configs.*", "tools", "tools.*")
    ),
    python_requires=">=3.10",
    install_requires=install_requires,
    extras_require=extras_require,
)
