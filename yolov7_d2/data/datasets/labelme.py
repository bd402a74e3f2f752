"""``labelme_examples``: 3 real PASCAL VOC 2011 photos with 12 polygon-annotated objects
(person x6, bottle, chair, sofa, bus x2, car), from the COCO export shipped by the Debian
package ``labelme-examples`` (``usr/share/doc/labelme-examples/examples/instance_segmentation/
data_dataset_coco/``).

Preparation (:func:`prepare_labelme_examples`, idempotent): ``apt-get download
labelme-examples`` (``apt-get update`` first if apt has no package lists), the files read out
of the ``.deb`` (what ``dpkg-deb -x`` would extract; done in Python so that a .deb copied to a
non-Debian machine works too), then a cleaned json is written:

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
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Dict, List, Optional

from .common import (
    Manifest,
    datasets_root,
    preparation_lock,
    register_lazy_coco,
    sha256_of,
    write_json,
)

__all__ = ["PACKAGE", "labelme_dir", "fetch_labelme_deb", "read_deb_files",
           "clean_coco", "prepare_labelme_examples", "register_labelme_examples"]

logger = logging.getLogger(__name__)

PACKAGE = "labelme-examples"
#: sha256 of labelme-examples_5.1.1-1_all.deb (Debian bookworm) when this was written; apt
#: checks the archive signatures itself, so another version only logs a note.
KNOWN_DEB_SHA256 = {"acf0f5be435c8899098397eb9f0e46b4c1be080e0c1202f128609d6391179e23"}
COCO_DIR = "usr/share/doc/labelme-examples/examples/instance_segmentation/data_dataset_coco/"
BACKGROUND = "_background_"
NAME = "labelme_examples"
PREP_VERSION = "labelme-examples/v1"
HOW_TO_GET = (
    "the labelme_examples dataset comes from the Debian package 'labelme-examples' "
    "(`apt-get update && apt-get download labelme-examples` on Debian/Ubuntu, or download "
    "the .deb from https://packages.debian.org/labelme-examples) and pass its path as "
    "deb=... (tools/prepare_datasets.py --labelme-deb PATH)")


def labelme_dir(root: Optional[str | Path] = None) -> Path:
    """The dataset directory: ``root`` or ``<datasets_root()>/labelme_examples``."""
    return Path(root) if root else datasets_root() / NAME


def fetch_labelme_deb(download_dir: Path) -> Path:
    """``labelme-examples_*.deb`` in ``download_dir``, fetched with ``apt-get download``
    (after ``apt-get update`` if the first try fails)."""
    download_dir = Path(download_dir)
    found = sorted(download_dir.glob("labelme-examples_*.deb"))
    if found:
        return found[-1]
    if shutil.which("apt-get") is None:
        raise RuntimeError("apt-get is not available: " + HOW_TO_GET)
    download_dir.mkdir(parents=True, exist_ok=True)

    def download():
        return subprocess.run(["apt-get", "download", PACKAGE], cwd=download_dir,
                              capture_output=True, text=True)

    proc = download()
    if proc.returncode != 0:
        logger.info("apt-get download failed (%s); running apt-get update", proc.stderr.strip())
        update = subprocess.run(["apt-get", "update"], capture_output=True, text=True)
        proc = download() if update.returncode == 0 else update
    found = sorted(download_dir.glob("labelme-examples_*.deb"))
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"could not fetch {PACKAGE} with apt-get "
                           f"({proc.stderr.strip()[-1000:]}); " + HOW_TO_GET)
    return found[-1]


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


def prepare_labelme_examples(root: Optional[str | Path] = None, deb: Optional[str | Path] = None,
                             force: bool = False) -> Dict[str, object]:
    """Make the dataset exist under ``labelme_dir(root)`` (see the module doc), from ``deb``
    or a .deb fetched with apt. Returns {"root", "image_root", "json", "counts", "classes"}."""
    out_dir = labelme_dir(root)
    json_file = out_dir / "annotations.json"
    manifest = Manifest(out_dir, PREP_VERSION)
    data = None if force else manifest.load_if_valid()
    if data is None:
        with preparation_lock(out_dir):
            data = _prepare_locked(out_dir, manifest, deb, force)
    return {"root": out_dir, "image_root": out_dir, "json": json_file,
            "counts": data["counts"], "classes": data["classes"]}


def _prepare_locked(out_dir: Path, manifest: Manifest, deb, force: bool) -> dict:
    json_file = out_dir / "annotations.json"
    data = None if force else manifest.load_if_valid()  # another process may have finished
    if data is None:
        deb = Path(deb) if deb else fetch_labelme_deb(out_dir / "_download")
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
        data = manifest.write(written + [json_file.name], source=deb.name, source_sha256=digest,
                              counts=counts, classes=classes)
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
    The data is fetched and prepared when the dataset is first loaded. Returns [name]."""
    out_dir = labelme_dir(root)
    register_lazy_coco(NAME, out_dir / "annotations.json", out_dir, VOC_CLASSES,
                       prepare=lambda: prepare_labelme_examples(out_dir, deb))
    return [NAME]
