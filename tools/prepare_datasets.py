#!/usr/bin/env python
"""Prepare the bundled real datasets of yolov7_d2 from package registries, and print their
sizes.

* deepforest: NEON aerial tree crowns from the PyPI wheel deepforest==2.1.0 (pip download),
  tiled to 416 px; registered as deepforest_trees_train / deepforest_trees_val, and
  deepforest_trees_extra (the edge strips the tiles leave and two small images).
* labelme_examples: 3 VOC photos, 12 polygon objects, from the Debian package
  labelme-examples (apt-get download); registered as labelme_examples.

Preparation is idempotent: a dataset whose manifest checksums match is left alone.
train_net.py, tools/lazyconfig_train_net.py and the other tools run this script for the
bundled datasets they use that are not prepared yet, so the main job needs no separate step;
run it to prepare ahead of time (e.g. before going offline), into another directory, or from
a .deb you downloaded. The package managers run here, never inside the yolov7_d2 package.
"""
import argparse
import glob
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
import yolov7_d2  # noqa: E402,F401  (applies the detectron2 compatibility shims)
from yolov7_d2.data.datasets import deepforest as df  # noqa: E402
from yolov7_d2.data.datasets import labelme as lm  # noqa: E402
from yolov7_d2.data.datasets.prepared import (  # noqa: E402
    ENV_VAR,
    Manifest,
    datasets_root,
    preparation_lock,
    sha256_of,
)

logger = logging.getLogger("prepare_datasets")

DATASETS = (df.NAME, lm.NAME)
HOW_TO_GET_LABELME = (
    "the labelme_examples dataset comes from the Debian package 'labelme-examples' "
    "(`apt-get update && apt-get download labelme-examples` on Debian/Ubuntu, or download "
    "the .deb from https://packages.debian.org/labelme-examples) and pass its path as "
    "deb=... (tools/prepare_datasets.py --labelme-deb PATH)")


def fetch_deepforest_wheel(download_dir: Path) -> Path:
    """The deepforest wheel in ``download_dir`` (downloaded with pip if absent), checked."""
    download_dir = Path(download_dir)
    found = sorted(glob.glob(str(download_dir / "deepforest-2.1.0-*.whl")))
    if not found or sha256_of(Path(found[0])) != df.WHEEL_SHA256:
        download_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "-q", df.REQUIREMENT, "-d", str(download_dir)]
        logger.info("downloading the %s wheel: %s", df.REQUIREMENT, " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(
                f"`{' '.join(cmd)}` failed (exit {proc.returncode}); the DeepForest data comes "
                f"from the PyPI wheel {df.REQUIREMENT} and needs access to PyPI or a pip "
                f"mirror. pip said:\n{proc.stderr[-2000:]}")
        found = sorted(glob.glob(str(download_dir / "deepforest-2.1.0-*.whl")))
        if not found:
            raise RuntimeError(f"pip reported success but no deepforest wheel is in {download_dir}")
    wheel = Path(found[0])
    digest = sha256_of(wheel)
    if digest != df.WHEEL_SHA256:
        raise RuntimeError(f"{wheel}: sha256 {digest} != expected {df.WHEEL_SHA256}; delete it "
                           "and try again, or check your package index")
    return wheel


def fetch_labelme_deb(download_dir: Path) -> Path:
    """``labelme-examples_*.deb`` in ``download_dir``, fetched with ``apt-get download``
    (after ``apt-get update`` if the first try fails)."""
    download_dir = Path(download_dir)
    found = sorted(download_dir.glob("labelme-examples_*.deb"))
    if found:
        return found[-1]
    if shutil.which("apt-get") is None:
        raise RuntimeError("apt-get is not available: " + HOW_TO_GET_LABELME)
    download_dir.mkdir(parents=True, exist_ok=True)

    def download():
        return subprocess.run(["apt-get", "download", lm.PACKAGE], cwd=download_dir,
                              capture_output=True, text=True)

    proc = download()
    if proc.returncode != 0:
        logger.info("apt-get download failed (%s); running apt-get update", proc.stderr.strip())
        update = subprocess.run(["apt-get", "update"], capture_output=True, text=True)
        proc = download() if update.returncode == 0 else update
    found = sorted(download_dir.glob("labelme-examples_*.deb"))
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"could not fetch {lm.PACKAGE} with apt-get "
                           f"({proc.stderr.strip()[-1000:]}); " + HOW_TO_GET_LABELME)
    return found[-1]


def _prepare_once(out_dir: Path, version: str, make, force: bool) -> dict:
    """The manifest of the prepared copy in ``out_dir``; ``make()`` (which writes it) runs
    under the directory's lock when there is no valid one, or with ``force``."""
    manifest = Manifest(out_dir, version)
    data = None if force else manifest.load_if_valid()
    if data is None:
        with preparation_lock(out_dir):
            # checked again: another process may have prepared it while this one waited
            data = None if force else manifest.load_if_valid()
            if data is None:
                data = make()
    return data


def prepare_deepforest(directory=None, force: bool = False) -> dict:
    """Make the tiled DeepForest dataset exist in ``directory`` (default
    ``<datasets root>/deepforest``). Returns {"root", "image_root", "train_json", "val_json",
    "counts"}."""
    out_dir = df.deepforest_dir(directory)
    data = _prepare_once(out_dir, df.PREP_VERSION, force=force, make=lambda: (
        df.write_deepforest_dataset(fetch_deepforest_wheel(out_dir / "_download"), out_dir)))
    return {"root": out_dir, "image_root": out_dir, "counts": data["counts"],
            **{f"{s}_json": out_dir / "annotations" / f"{s}.json" for s in df.SPLITS}}


def prepare_labelme_examples(directory=None, deb=None, force: bool = False) -> dict:
    """Make labelme_examples exist in ``directory`` (default ``<datasets
    root>/labelme_examples``), from ``deb`` or a .deb fetched with apt. Returns {"root",
    "image_root", "json", "counts", "classes"}."""
    out_dir = lm.labelme_dir(directory)
    data = _prepare_once(out_dir, lm.PREP_VERSION, force=force, make=lambda: (
        lm.write_labelme_dataset(deb or fetch_labelme_deb(out_dir / "_download"), out_dir)))
    return {"root": out_dir, "image_root": out_dir, "json": out_dir / "annotations.json",
            "counts": data["counts"], "classes": data["classes"]}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--root", type=Path, default=None,
        help=f"directory holding the prepared datasets, each in ROOT/NAME (default: ${ENV_VAR} "
             f"if set, else datasets/ in the checkout; now: {datasets_root()})")
    parser.add_argument(
        "--only", choices=DATASETS, action="append",
        help="prepare only this dataset (repeatable; default: all)")
    parser.add_argument(
        "--dir", type=Path, default=None,
        help="with one --only: prepare that dataset in DIR itself instead of ROOT/NAME (what "
             "register_deepforest(root=DIR) / register_labelme_examples(root=DIR) read)")
    parser.add_argument(
        "--force", action="store_true",
        help="prepare again even if a valid prepared copy exists (downloads are reused)")
    parser.add_argument(
        "--labelme-deb", type=Path, default=None,
        help="use this labelme-examples .deb instead of running apt-get download")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    args = parser.parse_args(argv)
    if args.dir and (not args.only or len(args.only) != 1):
        parser.error("--dir needs exactly one --only")
    if args.dir and args.root:
        parser.error("--dir and --root exclude each other")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    root = args.root or datasets_root()
    for name in args.only or DATASETS:
        directory = args.dir or root / name
        if name == df.NAME:
            info = prepare_deepforest(directory, force=args.force)
            for split, c in info["counts"].items():
                print(f"deepforest_trees_{split}: {c['images']} images, {c['boxes']} boxes "
                      f"({info[split + '_json']})")
        else:
            info = prepare_labelme_examples(directory, deb=args.labelme_deb, force=args.force)
            c = info["counts"]
            print(f"labelme_examples: {c['images']} images, {c['boxes']} objects, "
                  f"{len(info['classes'])} classes ({info['json']})")
    if args.root and os.environ.get(ENV_VAR) != str(args.root):
        print(f"note: set {ENV_VAR}={args.root} (or pass root=) so that register_* finds them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
