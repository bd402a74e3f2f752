"""``labelme_examples``: 3 real PASCAL VOC 2011 photos with 12 polygon-annotated objects
(person x6, bottle, chair, sofa, bus x2, car), from the COCO export shipped by the Debian
package ``labelme-examples`` (``usr/share/doc/labelme-examples/examples/instance_segmentation/
data_dataset_coco/``).

Preparation: ``tools/prepare_datasets.py`` fetches the package (``apt-get download
labelme-examples``, ``apt-get update`` first if apt has no package lists; or a .deb given as
``--labelme-deb``) and calls :func:`write_labelme_dataset`; train_net.py and the
tools run it for the registered dataset on first use. :func:`write_labelme_dataset` reads the files
out of the ``.deb`` (what ``dpkg-deb -x`` would extract; done in Python so that a .deb copied
to a non-Debian machine works too), then writes a cleaned json:

* the ``_background_`` category (id 0, used by no annotation) is removed: the 20 VOC classes
  remain, ids 1..20, which detectron2 maps to contiguous 0..19;
* image and annotation ids are renumbered from 1: the export starts both at 0, and
  pycocotools' COCOeval records matches by annotation id with 0 meaning "unmatched", so a
  ground truth with id 0 could never be matched. No image is dropped.
"""
from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path
from typing import Dict, List, Optional

from .common import register_lazy_coco
from .prepared import BundledDataset, Manifest, datasets_root, sha256_of, write_json

__all__ = ["PACKAGE", "NAME", "PREP_VERSION", "labelme_dir", "read_deb_files", "clean_coco",
           "write_labelme_dataset", "register_labelme_examples"]

logger = logging.getLogger(__name__)

PACKAGE = "labelme-examples"
#: sha256 of labelme-examples_5.1.1-1_all.deb (Debian bookworm) when this was written; apt
#: checks the archive signatures itself, so another version only logs a note.
KNOWN_DEB_SHA256 = {"acf0f5be435c8899098397eb9f0e46b4c1be080e0c1202f128609d6391179e23"}
COCO_DIR = "usr/share/doc/labelme-examples/examples/instance_segmentation/data_dataset_coco/"
BACKGROUND = "_background_"
NAME = "labelme_examples"
PREP_VERSION = "labelme-examples/v1"


def labelme_dir(root: Optional[str | Path] = None) -> Path:
    """The dataset directory: ``root`` or ``<datasets_root()>/labelme_examples``."""
    return Path(root) if root else datasets_root() / NAME


def read_deb_files(deb: Path, prefix: str) -> Dict[str, bytes]:
    """Files of the .deb's data archive under ``prefix`` (relative to it) -> their bytes.

    A .deb is an ``ar`` archive whose ``data.tar.*`` member holds the files."""
    raw = Path(deb).read_bytes()
    if not raw.startswith(b"!<arch>\n"):
        raise RuntimeError(f"{deb} is not a Debian package (no ar header)")
    pos, data = 8, None
    while pos + 60 <= len(raw):
        header = raw[pos:pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        if name.startswith("data.tar"):
            data = raw[pos + 60:pos + 60 + size]
            break
        pos += 60 + size + (size % 2)
    if data is None:
        raise RuntimeError(f"{deb} has no data.tar member")
    files = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        for member in tar:
            path = member.name[2:] if member.name.startswith("./") else member.name
            if member.isfile() and path.startswith(prefix):
                files[path[len(prefix):]] = tar.extractfile(member).read()
    return files


def clean_coco(coco: dict) -> dict:
    """The export without the ``_background_`` category (and any annotation of it), with
    image and annotation ids renumbered from 1 in their original order."""
    background = {c["id"] for c in coco["categories"] if c["name"] == BACKGROUND}
    image_ids = {img["id"]: i + 1 for i, img in enumerate(coco["images"])}
    annotations = [a for a in coco["annotations"] if a["category_id"] not in background]
    if len(annotations) != len(coco["annotations"]):
        logger.warning("%d annotation(s) of %s dropped",
                       len(coco["annotations"]) - len(annotations), BACKGROUND)
    return {
        "info": coco.get("info", {}),
        "licenses": coco.get("licenses", []),
        "images": [{**img, "id": image_ids[img["id"]]} for img in coco["images"]],
        "annotations": [{**a, "id": i + 1, "image_id": image_ids[a["image_id"]]}
                        for i, a in enumerate(annotations)],
        "categories": [c for c in coco["categories"] if c["id"] not in background],
    }


def write_labelme_dataset(deb: Path, out_dir: Path) -> dict:
    """The cleaned dataset of the ``labelme-examples`` package file ``deb`` written into
    ``out_dir``, its manifest last. Returns the manifest."""
    deb, out_dir = Path(deb), Path(out_dir)
    json_file = out_dir / "annotations.json"
    digest = sha256_of(deb)
    if digest not in KNOWN_DEB_SHA256:
        logger.info("%s: sha256 %s is not the version this was written for; using it",
                    deb, digest)
    files = read_deb_files(deb, COCO_DIR)
    if "annotations.json" not in files:
        raise RuntimeError(f"{deb} has no {COCO_DIR}annotations.json")
    coco = clean_coco(json.loads(files["annotations.json"]))
    written = []
    for img in coco["images"]:
        if img["file_name"] not in files:
            raise RuntimeError(f"{deb}: image {img['file_name']} of the json is missing")
        (out_dir / img["file_name"]).parent.mkdir(parents=True, exist_ok=True)
        (out_dir / img["file_name"]).write_bytes(files[img["file_name"]])
        written.append(img["file_name"])
    write_json(json_file, coco)
    counts = {"images": len(coco["images"]), "boxes": len(coco["annotations"])}
    classes = [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
    data = Manifest(out_dir, PREP_VERSION).write(
        written + [json_file.name], source=deb.name, source_sha256=digest, counts=counts,
        classes=classes)
    logger.info("labelme_examples prepared in %s: %s", out_dir, counts)
    return data


#: The categories of the export after cleaning, in id order (PASCAL VOC).
VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "potted plant", "sheep", "sofa",
    "train", "tv/monitor",
]


def register_labelme_examples(root: Optional[str | Path] = None,
                              deb: Optional[str | Path] = None) -> List[str]:
    """Register ``labelme_examples`` (20 VOC classes, 3 images, 12 objects with polygons).
    Nothing is fetched: ``tools/prepare_datasets.py`` prepares it in ``labelme_dir(root)``,
    from the .deb ``deb`` if given (train_net.py and the tools run it on first use;
    see :class:`~.prepared.BundledDataset`). Returns [name]."""
    out_dir = labelme_dir(root)
    extra_args = ("--labelme-deb", str(deb)) if deb else ()
    register_lazy_coco(NAME, out_dir / "annotations.json", out_dir, VOC_CLASSES,
                       BundledDataset(NAME, out_dir, PREP_VERSION, extra_args))
    return [NAME]
