"""Every workaround that detectron2 0.6 needs on today's Python stack, in one place.

``yolov7_d2`` runs on two kinds of detectron2 install:

* **upstream detectron2**, built from its repository with its compiled ``detectron2._C``
  (C++/CUDA ops).  Nothing here changes it: every patch below first checks that it is needed.
* **the Python-only detectron2 0.6** that ``install.sh`` installs when no detectron2 is
  importable: detectron2 v0.6's Python code from PyPI's ``pb1-detectron2`` sdist, built with
  ``ext_modules=[]``, i.e. without ``detectron2._C``.

:func:`apply` (idempotent; ``yolov7_d2/__init__.py`` calls it before anything imports
detectron2's submodules) bridges these gaps, each only when it is present:

1. **No ``detectron2._C``.**  ``detectron2.layers`` (deform_conv, rotated_boxes,
   roi_align_rotated) and ``detectron2.evaluation`` (fast_eval_api) do
   ``from detectron2 import _C`` at import time.  A placeholder module is put in
   ``sys.modules["detectron2._C"]``: any op looked up on it is a callable that raises
   ``RuntimeError`` naming the op, and ``get_compiler_version()`` / ``get_cuda_version()`` /
   ``has_cuda()`` answer so that ``detectron2.utils.collect_env.collect_env_info()`` and
   ``detectron2.engine.default_setup()`` work.
2. **Pillow >= 10 has no ``Image.LINEAR``**, which detectron2 0.6's
   ``data/transforms/transform.py`` uses as a default argument (so it fails at import):
   ``PIL.Image.LINEAR = PIL.Image.BILINEAR`` (the value it always had).
3. **numpy >= 1.24 has no ``np.int`` / ``np.float`` / ``np.str`` / ``np.object``** (the
   deprecated aliases of the builtins), which detectron2 0.6 uses in the class histogram that
   ``build_detection_train_loader`` logs, in ``load_voc_instances`` (``np.str``), and in the
   semantic-segmentation and Pascal VOC evaluators.  The missing ones that the installed
   detectron2's source uses are set to the builtins they always were.
4. **torch deprecates ``torch.jit.script``** (a ``FutureWarning``), which fvcore's focal loss
   and detectron2's ``modeling/box_regression.py`` call at import time: every command printed
   two warnings about code that is not its own before its output.  Those modules are imported
   once with that warning silenced; the scripted functions are unchanged.

What the Python-only install cannot do is listed in :data:`UNAVAILABLE_WITHOUT_D2_C`; none of
it is on a YOLO detector's path.  With that install, evaluate COCO with
``COCOEvaluator(..., use_fast_impl=False)`` (pycocotools' COCOeval), or pass
``use_fast_impl=compat.HAS_D2_C``.

This module imports nothing from detectron2 at import time; only :func:`apply` does.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import re
import sys
import threading
import types
import warnings

__all__ = [
    "apply",
    "HAS_D2_C",
    "APPLIED",
    "UNAVAILABLE_WITHOUT_D2_C",
    "D2_C_IMPORT_ERROR",
]

#: detectron2 features that need its compiled ``detectron2._C`` and so raise ``RuntimeError``
#: (naming the op) in the Python-only detectron2 install.  Install detectron2 from its
#: repository to use them.
UNAVAILABLE_WITHOUT_D2_C: tuple[str, ...] = (
    "deformable convolution on CUDA tensors (detectron2.layers.DeformConv; on the CPU, "
    "DeformConv with deformable_groups=1 runs torchvision's deform_conv2d) and "
    "ModulatedDeformConv on CUDA (detectron2 never supported it on the CPU)",
    "rotated boxes: detectron2.layers.pairwise_iou_rotated / structures.pairwise_iou_rotated, "
    "detectron2.layers.nms_rotated / batched_nms_rotated, and so RRPN / RROIHeads",
    "detectron2.layers.ROIAlignRotated (ROIPooler(pooler_type='ROIAlignRotated'))",
    "the C++ COCOeval fast path: COCOEvaluator(use_fast_impl=True), the default; "
    "use COCOEvaluator(..., use_fast_impl=False), which runs pycocotools' COCOeval",
    "collect_env's compiler / CUDA-arch report for detectron2._C (it reports 'not built')",
)

#: True when detectron2's compiled ops are importable; set by :func:`apply`, None before.
HAS_D2_C: bool | None = None
#: Why ``import detectron2._C`` failed (a string), or None.
D2_C_IMPORT_ERROR: str | None = None
#: Names of the workarounds :func:`apply` installed in this process.
APPLIED: list[str] = []

_PLACEHOLDER_ATTR = "__yolov7_d2_placeholder__"
_lock = threading.Lock()
_done = False

# np aliases removed in numpy 1.24 (np.bool / np.long came back in numpy 2 as numpy types).
_NUMPY_ALIASES = {"int": int, "float": float, "bool": bool, "str": str, "object": object}
# detectron2 0.6 files that use them (relative to the detectron2 package directory).
_NUMPY_ALIAS_USERS = (
    "data/build.py",
    "data/datasets/pascal_voc.py",
    "evaluation/pascal_voc_evaluation.py",
    "evaluation/sem_seg_evaluation.py",
    "structures/masks.py",
    "utils/visualizer.py",
    "utils/video_visualizer.py",
)
_PIL_LINEAR_USERS = ("data/transforms/transform.py",)
# Modules that call torch.jit.script at import time.
_JIT_SCRIPT_AT_IMPORT = ("fvcore.nn.focal_loss", "detectron2.modeling.box_regression")


def apply() -> list[str]:
    """Install the workarounds this detectron2 install needs (idempotent, thread-safe).

    Returns the names of the workarounds in effect (:data:`APPLIED`).  Does nothing (and
    returns ``[]``) when detectron2 is not installed.
    """
    global _done
    with _lock:
        if _done:
            return list(APPLIED)
        d2_dir = _detectron2_dir()
        if d2_dir is None:
            return []
        # PIL and numpy first: detectron2's own __init__ does not import the modules that
        # need them, but nothing of detectron2 beyond that should be imported before.
        _patch_pil_linear(d2_dir)
        _patch_numpy_aliases(d2_dir)
        _install_c_placeholder_if_needed()
        _import_quietly_jit_scripting_modules()
        _done = True
        return list(APPLIED)


# ------------------------------------------------------------------------------ helpers
def _detectron2_dir() -> str | None:
    """The directory of the installed detectron2 package, found without importing it."""
    mod = sys.modules.get("detectron2")
    if mod is not None and getattr(mod, "__path__", None):
        return list(mod.__path__)[0]
    spec = importlib.util.find_spec("detectron2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def _source_uses(d2_dir: str, relpaths: tuple[str, ...], pattern: "re.Pattern[str]") -> set[str]:
    found: set[str] = set()
    for rel in relpaths:
        path = os.path.join(d2_dir, *rel.split("/"))
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError:
            continue
        found.update(m.group(1) for m in pattern.finditer(text))
    return found


def _patch_pil_linear(d2_dir: str) -> None:
    from PIL import Image

    if hasattr(Image, "LINEAR"):
        return
    if not _source_uses(d2_dir, _PIL_LINEAR_USERS, re.compile(r"\bImage\.(LINEAR)\b")):
        return
    Image.LINEAR = Image.BILINEAR  # type: ignore[attr-defined]  # its value before Pillow 10
    APPLIED.append("PIL.Image.LINEAR = PIL.Image.BILINEAR")


def _numpy_has(np: types.ModuleType, name: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns on the lookup of some removed aliases
        try:
            getattr(np, name)
        except AttributeError:
            return False
    return True


def _patch_numpy_aliases(d2_dir: str) -> None:
    import numpy as np

    # `np.int)` or `np.int,` but not `np.int64` / `np.int_`
    pattern = re.compile(r"\bnp\.(" + "|".join(_NUMPY_ALIASES) + r")\b(?![\w])")
    used = _source_uses(d2_dir, _NUMPY_ALIAS_USERS, pattern)
    for name in sorted(used):
        if not _numpy_has(np, name):
            setattr(np, name, _NUMPY_ALIASES[name])
            APPLIED.append(f"numpy.{name} = {_NUMPY_ALIASES[name].__name__}")


def _import_quietly_jit_scripting_modules() -> None:
    """Import the modules of ``_JIT_SCRIPT_AT_IMPORT`` (after the ``_C`` placeholder, which
    detectron2.layers needs) without torch's deprecation warning for their
    ``torch.jit.script`` calls; any other warning still shows."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated",
                                category=FutureWarning)
        for name in _JIT_SCRIPT_AT_IMPORT:
            if name not in sys.modules and importlib.util.find_spec(name.split(".")[0]):
                importlib.import_module(name)


def _install_c_placeholder_if_needed() -> None:
    global HAS_D2_C, D2_C_IMPORT_ERROR
    existing = sys.modules.get("detectron2._C")
    if existing is not None and getattr(existing, _PLACEHOLDER_ATTR, False):
        HAS_D2_C = False
        return
    try:
        importlib.import_module("detectron2._C")
    except ImportError as e:
        D2_C_IMPORT_ERROR = f"{type(e).__name__}: {e}"
        # A _C that exists but fails to load (e.g. built against another torch) is worth
        # naming in every error; a _C that is simply not there is the Python-only install.
        not_built = isinstance(e, ModuleNotFoundError) and e.name == "detectron2._C"
    else:
        HAS_D2_C = True
        return
    HAS_D2_C = False
    placeholder = _make_c_placeholder(None if not_built else D2_C_IMPORT_ERROR)
    sys.modules["detectron2._C"] = placeholder
    import detectron2

    detectron2._C = placeholder  # type: ignore[attr-defined]
    APPLIED.append("detectron2._C placeholder (Python-only detectron2)")


def _make_c_placeholder(import_error: str | None) -> types.ModuleType:
    mod = types.ModuleType(
        "detectron2._C",
        "Placeholder for detectron2's compiled ops, which this Python-only detectron2 install "
        "does not have (installed by yolov7_d2.compat). Every op raises RuntimeError.",
    )
    mod.__spec__ = importlib.machinery.ModuleSpec("detectron2._C", None, origin="placeholder")
    setattr(mod, _PLACEHOLDER_ATTR, True)
    mod.IMPORT_ERROR = import_error  # type: ignore[attr-defined]
    mod.UNAVAILABLE = UNAVAILABLE_WITHOUT_D2_C  # type: ignore[attr-defined]

    # What detectron2.utils.collect_env reads from _C (default_setup logs collect_env_info()).
    def get_compiler_version() -> str:
        return "not built (Python-only detectron2)"

    def get_cuda_version() -> str:
        return "not built"

    def has_cuda() -> bool:
        return False

    mod.get_compiler_version = get_compiler_version  # type: ignore[attr-defined]
    mod.get_cuda_version = get_cuda_version  # type: ignore[attr-defined]
    mod.has_cuda = has_cuda  # type: ignore[attr-defined]

    def __getattr__(name: str):
        # Dunder / private lookups (import machinery, pickle, inspect, mock) must see a plain
        # missing attribute, not an op.
        if name.startswith("_"):
            raise AttributeError(f"module 'detectron2._C' has no attribute {name!r}")

        def unavailable_op(*args, **kwargs):
            raise RuntimeError(
                f"detectron2._C.{name} is a C++/CUDA op that this Python-only detectron2 "
                "install does not have; install detectron2 from its repository to use it"
                + (f" (importing detectron2._C failed: {import_error})" if import_error else "")
            )

        unavailable_op.__name__ = unavailable_op.__qualname__ = name
        return unavailable_op

    mod.__getattr__ = __getattr__  # type: ignore[attr-defined]
    return mod
