#!/usr/bin/env python
"""Prepare the real datasets that yolov7_d2 can fetch from package registries, and print
their sizes.

* deepforest: NEON aerial tree crowns from the PyPI wheel deepforest==2.1.0 (pip download),
  tiled to 416 px; registered as deepforest_trees_train / deepforest_trees_val.
* labelme_examples: 3 VOC photos, 12 polygon objects, from the Debian package
  labelme-examples (apt-get download); registered as labelme_examples.

Preparation is idempotent: a dataset whose manifest checksums match is left alone. Training
code does not need this script (registered datasets prepare themselves when first loaded);
it is for preparing ahead of time, e.g. before going offline.
"""
import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
# detectron2 0.6 decorates a few functions with @torch.jit.script at import time.
warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")

import yolov7_d2  # noqa: E402,F401  (applies the detectron2 compatibility shims)
from yolov7_d2.data.datasets import (  # noqa: E402
    ENV_VAR,
    datasets_root,
    prepare_deepforest,
    prepare_labelme_examples,
)

DATASETS = ("deepforest", "labelme_examples")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--root", type=Path, default=None,
        help=f"directory holding the prepared datasets (default: ${ENV_VAR} if set, else "
             f"datasets/ in the checkout; now: {datasets_root()})")
    parser.add_argument(
        "--only", choices=DATASETS, action="append",
        help="prepare only this dataset (repeatable; default: all)")
    parser.add_argument(
        "--force", action="store_true",
        help="prepare again even if a valid prepared copy exists (downloads are reused)")
    parser.add_argument(
        "--labelme-deb", type=Path, default=None,
        help="use this labelme-examples .deb instead of running apt-get download")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    root = args.root or datasets_root()
    for name in args.only or DATASETS:
        if name == "deepforest":
            info = prepare_deepforest(root / "deepforest", force=args.force)
            for split, c in info["counts"].items():
                print(f"deepforest_trees_{split}: {c['images']} tiles, {c['boxes']} boxes "
                      f"({info[split + '_json']})")
        else:
            info = prepare_labelme_examples(root / name, deb=args.labelme_deb, force=args.force)
            c = info["counts"]
            print(f"labelme_examples: {c['images']} images, {c['boxes']} objects, "
                  f"{len(info['classes'])} classes ({info['json']})")
    if args.root and os.environ.get(ENV_VAR) != str(args.root):
        print(f"note: set {ENV_VAR}={args.root} (or pass root=) so that register_* finds them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
