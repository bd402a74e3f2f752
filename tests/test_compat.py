"""yolov7_d2.compat: detectron2 0.6 (Python-only or upstream) works on this stack."""
import importlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from yolov7_d2 import compat


def test_apply_is_idempotent():
    first = compat.apply()
    placeholder = sys.modules.get("detectron2._C")
    second = compat.apply()
    assert first == second == compat.APPLIED
    assert sys.modules.get("detectron2._C") is placeholder
    # nothing was installed twice
    assert len(set(compat.APPLIED)) == len(compat.APPLIED)
    assert isinstance(compat.HAS_D2_C, bool)


@pytest.mark.parametrize(
    "module",
    [
        "detectron2.layers",
        "detectron2.modeling",
        "detectron2.engine",
        "detectron2.evaluation",
        "detectron2.data",
        "detectron2.data.transforms",
        "detectron2.checkpoint",
        "detectron2.utils.collect_env",
    ],
)
def test_detectron2_modules_import(module):
    compat.apply()
    importlib.import_module(module)


def test_pil_linear_is_bilinear():
    from PIL import Image

    import detectron2.data.transforms as T

    if "PIL.Image.LINEAR = PIL.Image.BILINEAR" in compat.APPLIED:  # Pillow >= 10, detectron2 0.6
        assert Image.LINEAR == Image.BILINEAR
    # the class whose default argument needed it
    t = T.ExtentTransform(src_rect=(0, 0, 8, 8), output_size=(4, 4))
    assert t.apply_image(np.zeros((8, 8, 3), np.uint8)).shape == (4, 4, 3)


def test_c_placeholder_raises_naming_the_op():
    import detectron2

    if compat.HAS_D2_C:
        pytest.skip("detectron2 has its compiled _C here: no placeholder")
    _C = sys.modules["detectron2._C"]
    assert detectron2._C is _C
    with pytest.raises(RuntimeError, match=r"detectron2\._C\.deform_conv_forward .*C\+\+/CUDA op"):
        _C.deform_conv_forward(1, 2)
    with pytest.raises(RuntimeError, match="COCOevalAccumulate"):
        _C.COCOevalAccumulate()
    # dunder / private lookups stay plain missing attributes (import machinery, pickle, ...)
    assert not hasattr(_C, "__path__")
    assert not hasattr(_C, "__file__")
    assert not hasattr(_C, "_private")
    assert _C.has_cuda() is False
    assert "not built" in _C.get_compiler_version()
    assert "not built" in _C.get_cuda_version()
    assert compat.UNAVAILABLE_WITHOUT_D2_C


def test_detectron2_op_needing_c_raises_runtime_error():
    if compat.HAS_D2_C:
        pytest.skip("detectron2 has its compiled _C here")
    from detectron2.structures import RotatedBoxes, pairwise_iou_rotated

    boxes = RotatedBoxes(torch.tensor([[10.0, 10.0, 4.0, 6.0, 30.0]]))
    with pytest.raises(RuntimeError, match="box_iou_rotated"):
        pairwise_iou_rotated(boxes, boxes)


def test_collect_env_info():
    from detectron2.utils.collect_env import collect_env_info

    info = collect_env_info()
    assert "detectron2" in info and "PyTorch" in info
    if not compat.HAS_D2_C:
        assert "not built (Python-only detectron2)" in info


def test_numpy_aliases_for_class_histogram(caplog):
    from detectron2.data.build import print_instances_class_histogram

    if any(a.startswith("numpy.") for a in compat.APPLIED):
        assert np.int is int and np.float is float
    dicts = [{"annotations": [{"category_id": 0}, {"category_id": 1}, {"category_id": 1}]}]
    with caplog.at_level("INFO"):
        print_instances_class_histogram(dicts, ["tree", "bush"])
    assert "Distribution of instances among all 2 categories" in caplog.text


def test_coco_evaluator_pycocotools_path(tmp_path):
    """COCOEvaluator(use_fast_impl=False) scores perfect predictions as AP 100."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.evaluation import COCOEvaluator
    from detectron2.structures import Boxes, BoxMode, Instances

    boxes = {0: [[10.0, 10.0, 50.0, 60.0], [60.0, 20.0, 90.0, 90.0]], 1: [[5.0, 5.0, 40.0, 30.0]]}
    classes = {0: [0, 1], 1: [1]}

    def dicts():
        return [
            {
                "file_name": f"img{i}.jpg",
                "image_id": i,
                "height": 100,
                "width": 100,
                "annotations": [
                    {"bbox": b, "bbox_mode": BoxMode.XYXY_ABS, "category_id": c, "iscrowd": 0}
                    for b, c in zip(boxes[i], classes[i])
                ],
            }
            for i in (0, 1)
        ]

    name = "_test_compat_coco_eval"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, dicts)
        MetadataCatalog.get(name).set(thing_classes=["a", "b"])
    evaluator = COCOEvaluator(name, output_dir=str(tmp_path), use_fast_impl=False)
    evaluator.reset()
    for i in (0, 1):
        inst = Instances((100, 100))
        inst.pred_boxes = Boxes(torch.tensor(boxes[i]))
        inst.scores = torch.ones(len(boxes[i]))
        inst.pred_classes = torch.tensor(classes[i])
        evaluator.process([{"image_id": i}], [{"instances": inst}])
    results = evaluator.evaluate()
    assert results["bbox"]["AP"] == pytest.approx(100.0)


def test_default_setup_runs(tmp_path):
    """engine.default_setup (logger setup + collect_env + config dump) in a fresh process."""
    code = textwrap.dedent(
        f"""
        import argparse, os, sys
        from yolov7_d2 import compat
        compat.apply()
        from detectron2.config import get_cfg
        from detectron2.engine import default_setup
        cfg = get_cfg()
        cfg.OUTPUT_DIR = {str(tmp_path)!r}
        cfg.MODEL.DEVICE = "cpu"
        default_setup(cfg, argparse.Namespace(config_file="", eval_only=False))
        assert os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "config.yaml"))
        print("DEFAULT_SETUP_OK")
        """
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "DEFAULT_SETUP_OK" in proc.stdout
    log = (tmp_path / "log.txt").read_text()
    assert "Environment info" in log


def test_import_prints_no_third_party_jit_deprecation():
    """Importing yolov7_d2 (so every command) shows no warning about fvcore's / detectron2's
    import-time ``torch.jit.script`` calls, and leaves no filter behind that would hide the
    warning from the user's own code."""
    code = textwrap.dedent(
        """
        import warnings
        warnings.simplefilter("always")
        import yolov7_d2, detectron2.modeling, fvcore.nn
        print("FILTERS", sum("is deprecated" in str(f[1]) for f in warnings.filters))
        """
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "jit.script" not in proc.stderr, proc.stderr
    assert "FILTERS 0" in proc.stdout, proc.stdout
