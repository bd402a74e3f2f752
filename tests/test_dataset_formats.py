"""YOLO data.yaml and Pascal VOC folders as detectron2 datasets: tiny datasets of real photos
(scikit-image, CC0) built in temporary directories; every kind of bad label in error and skip
mode; the train_net.py command-line options (parse_args + setup, no training)."""
import logging
from pathlib import Path

import numpy as np
import pytest

from yolov7_d2.config import load_config
from yolov7_d2.data import YOLOv7MosaicMapper, register_voc_dataset, register_yolo_dataset
from yolov7_d2.data.datasets import voc_format, yolo_format
from yolov7_d2.engine.dataset_options import apply_dataset_arguments

from detectron2.data import DatasetCatalog, MetadataCatalog

from log_records import Records
from photos import write_photos
from scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
# Photo sizes (width, height): astronaut 512x512, coffee 600x400, chelsea 451x300.
SIZES = {"astronaut": (512, 512), "coffee": (600, 400), "chelsea": (451, 300)}


@pytest.fixture
def logs():
    handler = Records()
    names = ["yolov7_d2.data.datasets.yolo_format", "yolov7_d2.data.datasets.voc_format",
             "yolov7_d2.data.datasets.bad_labels"]
    saved = []
    for name in names:
        lg = logging.getLogger(name)
        saved.append(lg.level)
        lg.setLevel(logging.DEBUG)
        lg.addHandler(handler)
    yield handler
    for name, level in zip(names, saved):
        logging.getLogger(name).removeHandler(handler)
        logging.getLogger(name).setLevel(level)


def make_yolo(root: Path, names="[person, cup, cat]", train_labels=None, extra_yaml=""):
    """images/{train,val}/*.jpg, labels/... and data.yaml under ``root``.

    train: astronaut (2 boxes), coffee (1 polygon); val: chelsea (no label file)."""
    write_photos(root / "images" / "train", ["astronaut", "coffee"])
    write_photos(root / "images" / "val", ["chelsea"])
    labels = {
        "astronaut": "0 0.5 0.5 0.5 0.75\n\n1 0.25 0.125 0.1 0.05\n",
        "coffee": "1 0.2 0.25 0.6 0.25 0.6 0.75 0.2 0.75\n",
    }
    labels.update(train_labels or {})
    (root / "labels" / "train").mkdir(parents=True)
    for stem, text in labels.items():
        (root / "labels" / "train" / f"{stem}.txt").write_text(text)
    yaml_path = root / "data.yaml"
    yaml_path.write_text(f"train: images/train\nval: images/val\nnames: {names}\n{extra_yaml}")
    return yaml_path


def by_stem(dicts):
    return {Path(d["file_name"]).stem: d for d in dicts}


def test_yolo_good_dataset(tmp_path, logs):
    data = make_yolo(tmp_path / "shop")
    names = register_yolo_dataset(data)
    assert names == {"train": "shop_train", "val": "shop_val"}  # prefix: the yaml's directory
    assert MetadataCatalog.get("shop_train").thing_classes == ["person", "cup", "cat"]
    train = by_stem(DatasetCatalog.get("shop_train"))
    assert sorted(train) == ["astronaut", "coffee"]
    for stem, d in train.items():
        assert (d["width"], d["height"]) == SIZES[stem]
    astro = train["astronaut"]["annotations"]
    assert [a["category_id"] for a in astro] == [0, 1]
    np.testing.assert_allclose(astro[0]["bbox"], [128, 64, 384, 448])
    np.testing.assert_allclose(astro[1]["bbox"], [102.4, 51.2, 153.6, 76.8])
    (cup,) = train["coffee"]["annotations"]
    np.testing.assert_allclose(cup["bbox"], [120, 100, 360, 300])
    np.testing.assert_allclose(cup["segmentation"][0], [120, 100, 360, 100, 360, 300, 120, 300])
    (val,) = DatasetCatalog.get("shop_val")
    assert val["annotations"] == [] and (val["width"], val["height"]) == SIZES["chelsea"]
    assert any("1 of 1 images have no label file" in m for m in logs.messages(logging.INFO))
    assert not logs.messages(logging.WARNING)
    # The dicts feed the mapper (sizes agree with the decoded images).
    mapper = YOLOv7MosaicMapper(is_train=False, image_size=320, seed=0)
    out = mapper(train["coffee"])
    assert tuple(out["image"].shape) == (3, 320, 320) and len(out["instances"]) == 1


def test_yolo_dict_names_root_path_and_list_files(tmp_path):
    root = tmp_path / "data"
    make_yolo(root)
    (root / "train.txt").write_text("./images/train/astronaut.jpg\nimages/train/coffee.jpg\n")
    yaml_path = tmp_path / "my_set.yaml"
    yaml_path.write_text("path: data\ntrain: train.txt\nval: [images/val]\nnc: 3\n"
                         "names:\n  0: person\n  1: cup\n  2: cat\n")
    names = register_yolo_dataset(yaml_path, name_prefix="dictnames")
    assert MetadataCatalog.get(names["train"]).thing_classes == ["person", "cup", "cat"]
    assert sorted(by_stem(DatasetCatalog.get(names["train"]))) == ["astronaut", "coffee"]
    assert len(DatasetCatalog.get(names["val"])) == 1


def test_yolo_paths_relative_to_the_working_directory(tmp_path, monkeypatch):
    """Official YOLOv7 yamls (no 'path') name files relative to the working directory."""
    make_yolo(tmp_path / "coco")
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "coco.yaml").write_text(
        "train: ./coco/images/train\nval: coco/images/val\nnames: [a, b, c]\n")
    monkeypatch.chdir(tmp_path)
    names = register_yolo_dataset(tmp_path / "cfg" / "coco.yaml", name_prefix="cwdrel")
    assert len(DatasetCatalog.get(names["train"])) == 2


@pytest.mark.parametrize("yaml_text, match", [
    ("train: images/train\nval: images/val\nnc: 2\nnames: [a, b, c]\n", "nc: 2 but 3 names"),
    ("train: images/train\nval: images/val\nnames: {0: a, 2: b}\n", "keys must be 0..1"),
    ("train: images/train\nnames: [a]\n", "needs 'val'"),
    ("train: images/nope\nval: images/val\nnames: [a]\n", "images/nope"),
])
def test_yolo_bad_yaml(tmp_path, yaml_text, match):
    make_yolo(tmp_path)
    (tmp_path / "bad.yaml").write_text(yaml_text)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        register_yolo_dataset(tmp_path / "bad.yaml")


BAD_LINES = {
    "wrong number of fields": ("0 0.5 0.5 0.2", "4 fields"),
    "non-numeric": ("0 0.5 abc 0.2 0.2", "non-numeric value 'abc'"),
    "non-finite": ("0 0.5 nan 0.2 0.2", "non-finite"),
    "class out of range": ("3 0.5 0.5 0.2 0.2", r"class id 3 out of range \[0, 3\)"),
    "non-integer class": ("1.5 0.5 0.5 0.2 0.2", "not an integer"),
    "coordinate outside [0, 1]": ("0 1.2 0.5 0.2 0.2", "outside the image"),
    "box past the border": ("0 0.95 0.5 0.3 0.2", "outside the image"),
    "non-positive size": ("0 0.5 0.5 0 0.2", "non-positive box size"),
    "polygon outside": ("0 0.1 0.1 0.5 1.5 0.9 0.1", "polygon outside"),
    "degenerate polygon": ("0 0.1 0.5 0.5 0.5 0.9 0.5", "degenerate polygon"),
}


@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_yolo_bad_line_error_and_skip(tmp_path, logs, kind):
    line, reason = BAD_LINES[kind]
    # The bad line is line 2 of astronaut.txt, between two good ones.
    data = make_yolo(tmp_path / "ds", train_labels={
        "astronaut": f"0 0.5 0.5 0.5 0.75\n{line}\n1 0.25 0.125 0.1 0.05\n"})
    label_file = tmp_path / "ds" / "labels" / "train" / "astronaut.txt"
    register_yolo_dataset(data, name_prefix="bad")
    with pytest.raises(ValueError, match=reason) as e:
        DatasetCatalog.get("bad_train")
    assert f"{label_file}:2:" in str(e.value) and "ON_BAD_LABEL skip" in str(e.value)

    register_yolo_dataset(data, name_prefix="bad", on_bad_label="skip")
    astro = by_stem(DatasetCatalog.get("bad_train"))["astronaut"]["annotations"]
    assert [a["category_id"] for a in astro] == [0, 1]  # the good lines around it stay
    warnings = logs.messages(logging.WARNING)
    assert any(f"{label_file}:2:" in m and "skipped" in m for m in warnings), warnings


def test_yolo_small_overshoot_is_clipped(tmp_path):
    data = make_yolo(tmp_path / "ds", train_labels={"astronaut": "0 0.5 0.5 1.004 0.5\n"})
    register_yolo_dataset(data, name_prefix="clip")
    (ann,) = by_stem(DatasetCatalog.get("clip_train"))["astronaut"]["annotations"]
    np.testing.assert_allclose(ann["bbox"], [0, 128, 512, 384])


def test_yolo_missing_and_corrupt_images(tmp_path, logs):
    root = tmp_path / "ds"
    make_yolo(root)
    (root / "images" / "train" / "broken.png").write_bytes(b"not a png")
    (root / "list.txt").write_text("images/train/astronaut.jpg\nimages/train/gone.jpg\n")
    (root / "data.yaml").write_text("train: [list.txt, images/train/broken.png]\n"
                                    "val: images/val\nnames: [person, cup, cat]\n")
    register_yolo_dataset(root / "data.yaml", name_prefix="missing")
    with pytest.raises(ValueError) as e:
        DatasetCatalog.get("missing_train")
    message = str(e.value)
    assert "gone.jpg" in message and "does not exist" in message and "list.txt:2" in message
    assert "broken.png" in message and "cannot read the image header" in message

    register_yolo_dataset(root / "data.yaml", name_prefix="missing", on_bad_label="skip")
    assert sorted(by_stem(DatasetCatalog.get("missing_train"))) == ["astronaut"]
    warnings = logs.messages(logging.WARNING)
    assert any("gone.jpg" in m for m in warnings) and any("broken.png" in m for m in warnings)


def test_label_path_rule():
    assert yolo_format.label_path("/d/images/x/images/train/a.b.jpg") == \
        Path("/d/images/x/labels/train/a.b.txt")
    assert yolo_format.label_path("/d/pics/a.png") == Path("/d/pics/a.txt")


# ---------------------------------------------------------------------------- VOC
def voc_xml(filename, size, objects):
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d in objects)
    w, h = size
    return (f"<annotation><filename>{filename}</filename><size><width>{w}</width>"
            f"<height>{h}</height><depth>3</depth></size>{objs}</annotation>")


def make_voc(root: Path, cat_name="cat", broken_xml=True):
    """astronaut (person), coffee (bottle, difficult), chelsea (``cat_name``); trainval lists
    all three, test only chelsea; chelsea.xml truncated if ``broken_xml``."""
    write_photos(root / "JPEGImages", ["astronaut", "coffee", "chelsea"])
    (root / "Annotations").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    xmls = {
        "astronaut": voc_xml("astronaut.jpg", SIZES["astronaut"],
                             [("person", (129, 65, 384, 448), 0)]),
        "coffee": voc_xml("coffee.jpg", SIZES["coffee"], [("bottle", (11, 21, 100, 200), 1)]),
        "chelsea": voc_xml("chelsea.jpg", SIZES["chelsea"], [(cat_name, (51, 31, 300, 250), 0)]),
    }
    if broken_xml:
        xmls["chelsea"] = xmls["chelsea"][:-20]
    for stem, text in xmls.items():
        (root / "Annotations" / f"{stem}.xml").write_text(text)
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("astronaut\ncoffee\nchelsea\n")
    (root / "ImageSets" / "Main" / "test.txt").write_text("chelsea\n")
    return root


def test_voc_folder_with_one_bad_xml(tmp_path, logs):
    root = make_voc(tmp_path / "VOC2007")
    name = register_voc_dataset(root, "trainval")
    assert name == "voc_VOC2007_trainval"
    assert MetadataCatalog.get(name).thing_classes == list(voc_format.VOC_CLASSES)
    with pytest.raises(ValueError, match="malformed xml") as e:
        DatasetCatalog.get(name)
    assert str(root / "Annotations" / "chelsea.xml") in str(e.value)

    register_voc_dataset(root, "trainval", on_bad_label="skip")
    dicts = by_stem(DatasetCatalog.get(name))
    assert sorted(dicts) == ["astronaut", "coffee"]
    (person,) = dicts["astronaut"]["annotations"]
    assert person["category_id"] == voc_format.VOC_CLASSES.index("person")
    np.testing.assert_allclose(person["bbox"], [128, 64, 384, 448])  # 1-based xmin / ymin
    assert dicts["coffee"]["annotations"][0]["difficult"] == 1
    assert (dicts["coffee"]["width"], dicts["coffee"]["height"]) == SIZES["coffee"]
    assert any("chelsea.xml" in m and "skipped" in m for m in logs.messages(logging.WARNING))

    register_voc_dataset(root, "trainval", name="voc_nodiff", on_bad_label="skip",
                         skip_difficult=True)
    assert by_stem(DatasetCatalog.get("voc_nodiff"))["coffee"]["annotations"] == []


def test_voc_class_names_unknown_class_and_missing_image(tmp_path, logs):
    root = make_voc(tmp_path / "pets", cat_name="tabby", broken_xml=False)
    # Not all VOC classes: the names found in every xml, sorted.
    name = register_voc_dataset(root, "test")
    assert MetadataCatalog.get(name).thing_classes == ["bottle", "person", "tabby"]
    (chelsea,) = DatasetCatalog.get(name)
    assert chelsea["annotations"][0]["category_id"] == 2

    name = register_voc_dataset(root, "trainval", name="pets_given",
                                class_names=["person", "bottle"])
    with pytest.raises(ValueError, match="unknown class 'tabby'") as e:
        DatasetCatalog.get(name)
    assert "chelsea.xml (object 1, tabby)" in str(e.value)

    (root / "JPEGImages" / "coffee.jpg").unlink()
    register_voc_dataset(root, "trainval", name="pets_given", class_names=["person", "bottle"],
                         on_bad_label="skip")
    dicts = by_stem(DatasetCatalog.get("pets_given"))
    assert sorted(dicts) == ["astronaut", "chelsea"] and dicts["chelsea"]["annotations"] == []
    warnings = logs.messages(logging.WARNING)
    assert any("coffee.jpg does not exist" in m for m in warnings)
    assert any("unknown class 'tabby'" in m for m in warnings)


def test_voc_box_outside_image(tmp_path):
    root = make_voc(tmp_path / "VOC", broken_xml=False)
    xml = root / "Annotations" / "astronaut.xml"
    xml.write_text(voc_xml("astronaut.jpg", SIZES["astronaut"], [("person", (1, 1, 600, 10), 0)]))
    register_voc_dataset(root, "trainval", name="voc_outside")
    with pytest.raises(ValueError, match="outside the 512x512 image") as e:
        DatasetCatalog.get("voc_outside")
    assert "astronaut.xml (object 1, person)" in str(e.value)


# ---------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def train_net():
    return load_script("train_net.py")


def test_cli_yolo_data(train_net, tmp_path):
    data = make_yolo(tmp_path / "cli_set")
    config = str(ROOT / "configs" / "coco" / "yolov7-tiny.yaml")
    args = train_net.parse_args(["--config-file", config, "--yolo-data", str(data),
                                 "OUTPUT_DIR", str(tmp_path / "out")])
    cfg = train_net.setup(args)
    assert cfg.is_frozen()
    assert cfg.DATASETS.TRAIN == ("cli_set_train",) and cfg.DATASETS.TEST == ("cli_set_val",)
    assert cfg.MODEL.YOLOV7.NUM_CLASSES == 3
    assert len(DatasetCatalog.get("cli_set_train")) == 2

    # Options given on the command line win.
    args = train_net.parse_args(["--config-file", config, "--yolo-data", str(data),
                                 "OUTPUT_DIR", str(tmp_path / "out"),
                                 "DATASETS.TEST", "()", "MODEL.YOLOV7.NUM_CLASSES", "80"])
    cfg = train_net.setup(args)
    assert cfg.DATASETS.TRAIN == ("cli_set_train",) and cfg.DATASETS.TEST == ()
    assert cfg.MODEL.YOLOV7.NUM_CLASSES == 80

    with pytest.raises(SystemExit):  # the two dataset options exclude each other
        train_net.parse_args(["--config-file", config, "--yolo-data", "a", "--voc-root", "b"])


def test_cli_voc_root_and_on_bad_label(train_net, tmp_path):
    root = make_voc(tmp_path / "VOCcli")
    config = str(ROOT / "configs" / "coco" / "yolov7-tiny.yaml")
    args = train_net.parse_args(["--config-file", config, "--voc-root", str(root),
                                 "--voc-test-split", "test", "OUTPUT_DIR", str(tmp_path / "out"),
                                 "DATASETS.YOLOV7.ON_BAD_LABEL", "skip"])
    cfg = train_net.setup(args)
    assert cfg.DATASETS.TRAIN == ("voc_VOCcli_trainval",)
    assert cfg.DATASETS.TEST == ("voc_VOCcli_test",)
    assert cfg.MODEL.YOLOV7.NUM_CLASSES == 20
    assert len(DatasetCatalog.get("voc_VOCcli_trainval")) == 2  # the broken xml skipped

    cfg = load_config(config, ["DATASETS.YOLOV7.ON_BAD_LABEL", "ignore"])
    args = train_net.parse_args(["--config-file", config, "--voc-root", str(root)])
    with pytest.raises(ValueError, match="ON_BAD_LABEL"):
        apply_dataset_arguments(cfg, args)


def write_coco(path: Path, images, categories=((1, "person"), (3, "cup"))):
    """A COCO json of ``images`` {file name: [(category id, x, y, w, h), ...]}."""
    import json

    doc = {"images": [], "annotations": [],
           "categories": [{"id": i, "name": n} for i, n in categories]}
    for image_id, (file_name, boxes) in enumerate(images.items(), 1):
        w, h = SIZES[Path(file_name).stem]
        doc["images"].append({"id": image_id, "file_name": file_name, "width": w, "height": h})
        for cat, *xywh in boxes:
            doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": image_id,
                                       "category_id": cat, "bbox": xywh, "area": xywh[2] * xywh[3],
                                       "iscrowd": 0})
    path.write_text(json.dumps(doc))
    return str(path)


def test_cli_coco_json(train_net, tmp_path):
    images = tmp_path / "images"
    write_photos(images, ["astronaut", "coffee", "chelsea"])
    train = write_coco(tmp_path / "train.json", {"astronaut.jpg": [(1, 128, 64, 256, 384)],
                                                 "coffee.jpg": [(3, 120, 100, 240, 200)]})
    val = write_coco(tmp_path / "val.json", {"chelsea.jpg": []})
    config = str(ROOT / "configs" / "coco" / "yolov7-tiny.yaml")
    out = ["OUTPUT_DIR", str(tmp_path / "out")]
    args = train_net.parse_args(["--config-file", config, "--coco-json", train, str(images),
                                 "--coco-val-json", val, str(images), *out])
    cfg = train_net.setup(args)
    assert cfg.DATASETS.TRAIN == ("coco_json_train",) and cfg.DATASETS.TEST == ("coco_json_val",)
    assert cfg.MODEL.YOLOV7.NUM_CLASSES == 2
    dicts = by_stem(DatasetCatalog.get("coco_json_train"))
    assert [a["category_id"] for a in dicts["coffee"]["annotations"]] == [1]  # id 3: 2nd class
    np.testing.assert_allclose(dicts["astronaut"]["annotations"][0]["bbox"], [128, 64, 256, 384])
    assert len(DatasetCatalog.get("coco_json_val")) == 1
    assert MetadataCatalog.get("coco_json_val").json_file == val  # what COCOEvaluator reads
    assert MetadataCatalog.get("coco_json_train").thing_classes == ["person", "cup"]

    # Without validation json: no evaluation.
    args = train_net.parse_args(["--config-file", config, "--coco-json", train, str(images), *out])
    assert train_net.setup(args).DATASETS.TEST == ()

    other = write_coco(tmp_path / "other.json", {"chelsea.jpg": []}, categories=((1, "cat"),))
    args = train_net.parse_args(["--config-file", config, "--coco-json", train, str(images),
                                 "--coco-val-json", other, str(images), *out])
    with pytest.raises(ValueError, match="categories of .*other.json"):
        train_net.setup(args)
    args = train_net.parse_args(["--config-file", config, "--coco-val-json", val, str(images)])
    with pytest.raises(ValueError, match="--coco-val-json needs --coco-json"):
        train_net.setup(args)
    with pytest.raises(SystemExit):  # one dataset option at a time
        train_net.parse_args(["--config-file", config, "--coco-json", train, str(images),
                              "--yolo-data", "a.yaml"])
