"""Bundled datasets: DeepForest tiling (synthetic fixture + the real wheel from PyPI) and the
Debian labelme-examples COCO export (real, via apt), prepared by tools/prepare_datasets.py
(the downloads), which the entry points run through prepare_bundled_datasets."""
import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yolov7_d2.config import load_config
from yolov7_d2.data import YOLOv7MosaicMapper, datasets_root
from yolov7_d2.data.datasets import ENV_VAR
from yolov7_d2.data.datasets import deepforest as df
from yolov7_d2.data.datasets import labelme as lm
from yolov7_d2.engine import prepare_bundled_datasets, run_setup

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from scripts import load_script

REPO = Path(__file__).resolve().parents[1]
prep = load_script("tools/prepare_datasets.py")


def test_datasets_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert datasets_root() == tmp_path
    assert df.deepforest_dir() == tmp_path / "deepforest"
    assert lm.labelme_dir() == tmp_path / "labelme_examples"
    monkeypatch.delenv(ENV_VAR)
    assert datasets_root() == REPO / "datasets"


def test_grid_cells_clip_boxes_and_drop_slivers():
    boxes = np.array([
        [10, 10, 50, 50],      # inside cell (0, 0)
        [400, 100, 440, 140],  # 16 px in cell 0 (40%), 24 px in cell 1 (60%)
        [414, 200, 454, 240],  # 2 px (5%) in cell 0: kept at the limit; 95% in cell 1
        [415, 300, 455, 340],  # 1 px (2.5%) in cell 0: dropped there
        [850, 10, 880, 40],    # in the right margin: the short cell 2
        [820, 450, 860, 490],  # across cells 1 and 2 of the second, short row
    ], dtype=float)
    cells = df.grid_cells(900, 500, boxes, tile=416, min_visible=0.05)
    assert [c[:4] for c in cells] == [(0, 0, 416, 416), (416, 0, 416, 416), (832, 0, 68, 416),
                                      (0, 416, 416, 84), (416, 416, 416, 84),
                                      (832, 416, 68, 84)]
    t0, t1, t2, t3, t4, t5 = (c[4] for c in cells)
    np.testing.assert_array_equal(t0, [[10, 10, 50, 50], [400, 100, 416, 140],
                                       [414, 200, 416, 240]])
    np.testing.assert_array_equal(t1, [[0, 100, 24, 140], [0, 200, 38, 240], [0, 300, 39, 340]])
    np.testing.assert_array_equal(t2, [[18, 10, 48, 40]])
    assert len(t3) == 0
    np.testing.assert_array_equal(t4, [[404, 34, 416, 74]])
    np.testing.assert_array_equal(t5, [[0, 34, 28, 74]])


def _voc_xml(file_name, width, height, boxes):
    objects = "".join(
        f"<object><name>Tree</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
        f"<ymax>{d}</ymax></bndbox></object>" for a, b, c, d in boxes)
    return (f"<annotation><filename>{file_name}</filename><size><width>{width}</width>"
            f"<height>{height}</height><depth>3</depth></size>{objects}</annotation>")


def test_build_tiles_from_a_synthetic_wheel(tmp_path):
    """Two images: 900x880 (2x2 tiles, the third in reading order in val; the 68 px right
    strip gives two extra pieces, the 48 px bottom strip is too thin) and 300x300 (smaller
    than a tile: one extra piece)."""
    rng = np.random.default_rng(0)
    wheel = tmp_path / "fake.whl"
    big_boxes = [[20, 20, 60, 60], [430, 20, 470, 60], [20, 430, 60, 470],
                 [500, 500, 540, 540], [400, 30, 430, 60], [850, 100, 890, 140],
                 [100, 850, 140, 870]]
    with zipfile.ZipFile(wheel, "w") as z:
        for name, (w, h), boxes in [("big", (900, 880), big_boxes),
                                    ("small", (300, 300), [[10, 10, 40, 40]])]:
            buf = tmp_path / f"{name}.png"
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf)
            z.write(buf, f"deepforest/data/{name}.png")
            z.writestr(f"deepforest/data/{name}.xml", _voc_xml(f"{name}.png", w, h, boxes))
    out = tmp_path / "out"
    built = df.build_deepforest_tiles(wheel, out)
    # tiles in reading order: (0,0) train, (416,0) train, (0,416) val, (416,416) train
    assert built["counts"] == {"train": {"images": 3, "boxes": 5}, "val": {"images": 1, "boxes": 1},
                               "extra": {"images": 3, "boxes": 2}}
    train = load_coco_json(str(out / "annotations/train.json"), str(out), "fake_deepforest_train")
    val = load_coco_json(str(out / "annotations/val.json"), str(out), "fake_deepforest_val")
    assert [Path(d["file_name"]).name for d in val] == ["big_x0000_y0416.png"]
    assert all(Image.open(d["file_name"]).size == (416, 416) for d in train + val)
    boxes = {Path(d["file_name"]).name: [a["bbox"] for a in d["annotations"]] for d in train}
    assert boxes["big_x0000_y0000.png"] == [[20, 20, 40, 40], [400, 30, 16, 30]]
    assert boxes["big_x0416_y0000.png"] == [[14, 20, 40, 40], [0, 30, 14, 30]]
    assert all(a["category_id"] == 0 for d in train for a in d["annotations"])
    extra = load_coco_json(str(out / "annotations/extra.json"), str(out), "fake_deepforest_extra")
    assert [(Path(d["file_name"]).name, Image.open(d["file_name"]).size,
             [a["bbox"] for a in d["annotations"]]) for d in extra] == [
        ("big_x0832_y0000.png", (68, 416), [[18, 100, 40, 40]]),
        ("big_x0832_y0416.png", (68, 416), []),
        ("small_x0000_y0000.png", (300, 300), [[10, 10, 30, 30]])]
    for name in ("fake_deepforest_train", "fake_deepforest_val", "fake_deepforest_extra"):
        MetadataCatalog.remove(name)


def _images(root: Path, split: str) -> list:
    """The "images" entries of a prepared split's COCO json."""
    return json.loads((root / "annotations" / f"{split}.json").read_text())["images"]


def test_deepforest_real_wheel(tmp_path):
    """What train_net.py does: prepare_bundled_datasets runs tools/prepare_datasets.py, which
    downloads the 20 MB deepforest wheel from PyPI (about 1 s) and tiles it (about 2 s).
    Neither registering nor loading downloads anything."""
    root = tmp_path / "deepforest"
    names = df.register_deepforest(root)
    try:
        assert names == ["deepforest_trees_train", "deepforest_trees_val",
                         "deepforest_trees_extra"]
        assert not root.exists()  # registering prepares nothing
        with pytest.raises(FileNotFoundError, match=r"python tools/prepare_datasets.py --only "
                                                    r"deepforest --dir .*deepforest`"):
            DatasetCatalog.get("deepforest_trees_train")
        assert not root.exists()  # nor does loading
        prepare_bundled_datasets(["deepforest_trees_val", "coco_2017_val", *names])
        train = DatasetCatalog.get("deepforest_trees_train")
        val = DatasetCatalog.get("deepforest_trees_val")
        extra = DatasetCatalog.get("deepforest_trees_extra")
        assert MetadataCatalog.get("deepforest_trees_train").thing_classes == ["tree"]
        assert MetadataCatalog.get("deepforest_trees_val").json_file == str(
            root / "annotations" / "val.json")
        counts = [(len(ds), sum(len(d["annotations"]) for d in ds))
                  for ds in (train, val, extra)]
        assert counts == [(21, 503), (10, 231), (16, 352)], counts
        assert {d["width"] for d in train + val} == {416}
        assert {Path(d["file_name"]).stem.split("_x")[0] for d in train} == {
            "2019_YELL_2_528000_4978000_image_crop2", "2019_YELL_2_541000_4977000_image_crop"}
        # the extra pieces: no pixel of a val tile
        val_boxes = [(d["source"], d["x0"], d["y0"]) for d in _images(root, "val")]
        extra_images = _images(root, "extra")
        for d in extra_images:
            for src, x0, y0 in val_boxes:
                assert d["source"] != src or (d["x0"] >= x0 + 416 or d["x0"] + d["width"] <= x0
                                              or d["y0"] >= y0 + 416
                                              or d["y0"] + d["height"] <= y0)
        assert {d["source"] for d in extra_images} == {
            "2019_YELL_2_528000_4978000_image_crop2", "2019_YELL_2_541000_4977000_image_crop",
            "OSBS_029", "SOAP_061"}
        manifest = json.loads((root / "manifest.json").read_text())
        assert manifest["source_sha256"] == df.WHEEL_SHA256 and len(manifest["files"]) == 50

        # idempotent: a second preparation finds everything in place and downloads nothing
        wheel = next((root / "_download").glob("*.whl"))
        stamp = wheel.stat().st_mtime_ns, (root / "manifest.json").stat().st_mtime_ns
        t0 = time.perf_counter()
        info = prep.prepare_deepforest(root)
        assert time.perf_counter() - t0 < 2.0
        assert stamp == (wheel.stat().st_mtime_ns, (root / "manifest.json").stat().st_mtime_ns)
        assert info["counts"]["val"] == {"images": 10, "boxes": 231}

        # a damaged tile is noticed and the dataset prepared again
        tile = root / train[0]["file_name"]
        tile.write_bytes(b"broken")
        prep.prepare_deepforest(root)
        assert Image.open(tile).size == (416, 416)

        # the train mapper on the real tiles; seeded: an unlucky official-strength sample
        # (scale gain 0.9, mosaic crop) can legitimately hold no tree at all
        cfg = load_config(opts=["INPUT.FORMAT", "RGB", "INPUT.YOLOV7.IMAGE_SIZE", "416",
                                "SEED", "0"])
        mapper = YOLOv7MosaicMapper(cfg, is_train=True, dataset_dicts=train)
        out = mapper(train[0])
        b = out["instances"].gt_boxes.tensor
        assert len(b) > 0 and (b >= 0).all() and (b <= 416).all()
        assert (out["instances"].gt_classes == 0).all()
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_clean_coco_drops_background_and_renumbers():
    coco = {"images": [{"id": 0, "file_name": "a.jpg"}, {"id": 7, "file_name": "b.jpg"}],
            "annotations": [{"id": 0, "image_id": 0, "category_id": 2},
                            {"id": 1, "image_id": 7, "category_id": 0},
                            {"id": 2, "image_id": 7, "category_id": 1}],
            "categories": [{"id": 0, "name": "_background_"}, {"id": 1, "name": "x"},
                           {"id": 2, "name": "y"}]}
    clean = lm.clean_coco(coco)
    assert [i["id"] for i in clean["images"]] == [1, 2]
    assert [(a["id"], a["image_id"], a["category_id"]) for a in clean["annotations"]] == [
        (1, 1, 2), (2, 2, 1)]
    assert [c["name"] for c in clean["categories"]] == ["x", "y"]


@pytest.mark.skipif(shutil.which("apt-get") is None,
                    reason="apt-get is not available (labelme-examples is a Debian package)")
def test_labelme_examples_real_package(tmp_path):
    """apt-get download labelme-examples (9.7 MB, about 1 s), cleaned COCO json, registered."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    root = tmp_path / "labelme_examples"
    (name,) = lm.register_labelme_examples(root)
    try:
        prepare_bundled_datasets([name])
        dicts = DatasetCatalog.get(name)
        meta = MetadataCatalog.get(name)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert "_background_" not in meta.thing_classes and len(meta.thing_classes) == 20
    assert len(dicts) == 3 and sum(len(d["annotations"]) for d in dicts) == 12
    # the export's image id 0 is kept (now id 1), and every object has its polygon
    assert [Path(d["file_name"]).name for d in dicts][0] == "2011_000003.jpg"
    assert sorted(d["image_id"] for d in dicts) == [1, 2, 3]
    assert all(a["segmentation"] for d in dicts for a in d["annotations"])
    names = sorted(meta.thing_classes[a["category_id"]] for d in dicts for a in d["annotations"])
    assert names == sorted(["person"] * 6 + ["bottle", "chair", "sofa", "bus", "bus", "car"])
    # the ground truth scored as detections gives AP 1 (an annotation id 0 could never match)
    gt = COCO(str(meta.json_file))
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
             "score": 1.0} for a in gt.dataset["annotations"]]
    ev = COCOeval(gt, gt.loadRes(dets), "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)
    # the mapper on real polygons (paste-in on)
    cfg = load_config(opts=["INPUT.FORMAT", "RGB", "INPUT.YOLOV7.IMAGE_SIZE", "320",
                            "INPUT.YOLOV7.PASTE_IN_PROB", "1.0"])
    mapper = YOLOv7MosaicMapper(cfg, is_train=True, dataset_dicts=dicts)
    out = mapper(dicts[0])
    assert tuple(out["image"].shape) == (3, 320, 320) and len(out["instances"]) > 0


def test_labelme_without_apt_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(prep.shutil, "which", lambda _: None)
    with pytest.raises(RuntimeError, match="apt-get download labelme-examples"):
        prep.prepare_labelme_examples(tmp_path / "labelme")


def test_preparing_without_a_checkout_says_the_command(tmp_path, monkeypatch):
    """An install without tools/ cannot prepare: the error names the command to run."""
    monkeypatch.setattr(run_setup, "checkout_dir", lambda: None)
    (name,) = lm.register_labelme_examples(tmp_path / "labelme", deb=tmp_path / "x.deb")
    try:
        with pytest.raises(FileNotFoundError, match="python tools/prepare_datasets.py --only "
                                                    "labelme_examples --dir .*labelme "
                                                    "--labelme-deb .*x.deb"):
            prepare_bundled_datasets([name])
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert not (tmp_path / "labelme").exists()


def test_prepare_datasets_cli_help():
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "prepare_datasets.py"), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--root", "--only", "--force", "--labelme-deb"):
        assert flag in proc.stdout


def test_train_net_prepares_the_bundled_datasets_it_uses(tmp_path, monkeypatch,
                                                         deepforest_prepared):
    """The main job's first step on a fresh machine: train_net.py's setup finds the tree
    tiles unprepared in $YOLOV7_D2_DATASETS and runs tools/prepare_datasets.py (the wheel is
    copied in beforehand, so only the tiling runs); labelme_examples, which the run does not
    use, is left alone."""
    wheel = next((datasets_root() / "deepforest" / "_download").glob("*.whl"))
    download = tmp_path / "deepforest" / "_download"
    download.mkdir(parents=True)
    shutil.copy(wheel, download)
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    train_net = load_script("train_net.py")
    args = train_net.parse_args([
        "--config-file", str(REPO / "configs/deepforest/yolov7-tiny-trees.yaml"), "--eval-only",
        "OUTPUT_DIR", str(tmp_path / "out")])
    try:
        cfg = train_net.setup(args)
        assert (tmp_path / "deepforest" / "manifest.json").is_file()
        assert not (tmp_path / "labelme_examples").exists()
        assert len(DatasetCatalog.get(cfg.DATASETS.TEST[0])) == 10
    finally:
        monkeypatch.delenv(ENV_VAR)
        df.register_deepforest()  # back to the default root for the other tests
        lm.register_labelme_examples()
