#!/usr/bin/env python
"""This project against the official YOLOv7 code at the same work, side by side in one
process: same weights (the official random initialisation, converted), same inputs, same
threads, official and ours interleaved, medians. Prints a markdown table (ratio = ours /
official time: lower is better; for the data pipeline, ours / official images per second:
higher is better) under a header with the machine, CPU flags, versions, threads and date.

Examples:
    python tools/benchmark.py                          # official column from sas-yolov7
    python tools/benchmark.py --official ~/yolov7      # ... or from a checkout of the official repo
    python tools/benchmark.py --rows forward loss --repeats 3

The official code (GPL) is imported, never copied: from ``--official DIR`` (a checkout, its
``models`` and ``utils`` packages) or the installed ``sas-yolov7``; without either, the
official column is left empty. Rows (``--rows``):

* forward: fused deploy model at 640 (official ``Model.fuse()``, ours
  ``reparameterize``), yolov7-tiny b1, yolov7 b1, yolov7-tiny b8; ours also with
  ``MODEL.YOLOV7.CHANNELS_LAST``. Then each side's arithmetic rate (the model's GFLOPs in
  the official count, 2 x multiply-accumulates, over its time) next to the rate of one
  large convolution alone: how far the forward is from what this CPU's convolutions reach.
* e2e: 640x480 photos end to end at detect.py's thresholds (0.25, IoU 0.45), one and a
  batch of 8: official letterbox, forward of the fused model, ``non_max_suppression``,
  ``scale_coords``; ours :class:`~yolov7_d2.predictor.YOLOv7Predictor` with its defaults
  (deploy form, NHWC; ``predict_batch`` for 8) in float32 and, on a CPU with native
  bfloat16, also under its default bfloat16 autocast (``TEST.YOLOV7.AMP``; the official code
  runs float32 on any CPU and float16 on CUDA); then one photo through the default
  predictor compiled (``TEST.YOLOV7.COMPILE``), its first call (the compilation) timed apart.
* onnx: our raw-head ONNX export (``tools/export_onnx.py``) run by onnxruntime on the
  forward row's inputs, and end to end on the photo through
  :class:`~yolov7_d2.export.onnx_predictor.ONNXPredictor`; needs the ``onnx`` extra.
* loss: assignment, loss and backward of yolov7's lead head (``ComputeLossOTA`` against
  :class:`~yolov7_d2.modeling.loss.YOLOv7Loss`), batch 8 at 640, random maps, 10 / 30 / 100 /
  300 random boxes per image; then the dense images mosaic makes of dense datasets, batch 2
  with 1,000 / 3,000 boxes per image (2 runs each), with the peak memory each side adds
  (resident set, sampled every 5 ms). The official matching is quadratic in memory: a row
  where it would need more than 80% of the available memory says so instead of running it.
* train: one training step of yolov7-tiny, batch 8 at 640 (forward, loss, backward, SGD).
* data: training samples per second of one process with the official tiny hyp (mosaic,
  mixup 0.05, HSV, flips, scale 0.5): ``LoadImagesAndLabels(augment=True)`` against
  :class:`~yolov7_d2.data.YOLOv7MosaicMapper` on the same YOLO-format copy of the tree tiles,
  with box labels and with polygon labels (a 16-point ellipse in each box; both sides then
  warp the outlines and re-fit the boxes, and paste-in has outlines to cut); each decoding
  every image at each use (both sides' default) and with decoded images cached in memory
  (official ``cache_images``, our ``INPUT.YOLOV7.CACHE_IMAGES``; by default ours caches a
  training set whose copies fit a quarter of the available memory, as these 21 tiles);
  then box labels on the tiles enlarged 5x as JPEG photos (2080 x 2080), decoded at each use
  (ours decodes them at 1/4 of their size, ``INPUT.YOLOV7.REDUCED_JPEG_DECODE``).
"""
import argparse
import contextlib
import ctypes
import datetime
import importlib
import io
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import yolov7_d2  # noqa: E402,F401  (compat shims, registrations)
from yolov7_d2.config import load_config  # noqa: E402
from yolov7_d2.convert import official_to_yolov7, read_official_checkpoint  # noqa: E402
from yolov7_d2.modeling import reparameterize  # noqa: E402
from yolov7_d2.modeling.flops import count_gflops  # noqa: E402
from yolov7_d2.utils.amp import inference_autocast_dtype  # noqa: E402
from yolov7_d2.utils.cpu import cpu_model_and_flags  # noqa: E402
from yolov7_d2.utils.memory import available_memory_bytes  # noqa: E402

from detectron2.modeling import build_model  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ROWS = ("forward", "e2e", "onnx", "loss", "train", "data")
SIZE = 640
#: The models of the e2e rows.
E2E_MODELS = ("yolov7-tiny", "yolov7")
#: The data rows' large photos: the tree tiles enlarged this many times, as JPEGs.
PHOTO_ENLARGEMENT = 5
#: (GT boxes per image, batch) of the loss rows; above 300 the dense rows (2 runs each).
LOSS_DENSITIES = ((10, 8), (30, 8), (100, 8), (300, 8), (1000, 2), (3000, 2))


def official_modules(location: str):
    """The official ``models.yolo``, ``utils.general``, ``utils.loss``, ``utils.datasets``
    and the directory of its cfg / hyp files, or None ("none", or "auto" without sas-yolov7).
    Raises ImportError, naming the code and what is missing, where it cannot be imported."""
    if location == "none":
        return None
    if location != "auto":
        base = Path(location).expanduser().resolve()
        if not (base / "models" / "yolo.py").is_file():
            raise ImportError(f"{base} is not a checkout of the official yolov7 repository "
                              "(it has no models/yolo.py)")
        sys.path.insert(0, str(base))
        prefix = ""
    else:
        try:
            import sas_yolov7
        except ImportError:
            return None
        prefix, base = "sas_yolov7.", Path(sas_yolov7.__file__).resolve().parent
    names = ("models.yolo", "utils.general", "utils.loss", "utils.datasets")
    try:
        modules = {n.split(".")[1]: importlib.import_module(prefix + n) for n in names}
    except ImportError as e:
        fix = ("install what it imports" if prefix
               else f"pip install -r {base / 'requirements.txt'}")
        raise ImportError(f"the official code ({base}) cannot be imported: {e}; {fix}, or "
                          "pass --official none") from e
    if prefix:
        # sas-yolov7 took tqdm out of LoadImagesAndLabels.cache_labels but still sets the
        # progress bar's text on the plain zip it iterates: give it a zip that takes one.
        modules["datasets"].zip = ZipWithProgressText
    return SimpleNamespace(**modules, cfg=base / "cfg" / "training", hyp=base / "data")


class ZipWithProgressText:
    """``zip`` with the ``desc`` attribute and ``close()`` of a tqdm progress bar."""

    def __init__(self, *iterables):
        self._zip, self.desc = zip(*iterables), ""

    def __iter__(self):
        return iter(self._zip)

    def close(self):
        pass


def machine_header(threads: int) -> str:
    import detectron2

    model, flags = cpu_model_and_flags()
    return (f"{datetime.date.today()}, {model}, {os.cpu_count()} cores, CPU flags: "
            f"{' '.join(flags)}; "
            f"torch {torch.__version__}, detectron2 {detectron2.__version__}, "
            f"{threads} torch thread(s)")


def interleaved(official, ours, repeats: int, warmup: int = 1):
    """Median seconds of ``official()`` and ``ours()`` run alternately (None: not run)."""
    for _ in range(warmup):
        official and official()
        ours()
    times = {"official": [], "ours": []}
    for _ in range(repeats):
        for key, fn in (("official", official), ("ours", ours)):
            if fn is not None:
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)
    return tuple(statistics.median(times[k]) if times[k] else None for k in times)


class Pair:
    """The official model of a scale (official init, seeded) and ours with its weights."""

    def __init__(self, off, name: str, *opts):
        self.cfg = load_config(str(ROOT / "configs" / "coco" / f"{name}.yaml"),
                               ["MODEL.DEVICE", "cpu", *opts])
        torch.manual_seed(0)
        self.ours = build_model(self.cfg)
        self.official = None
        if off is not None:
            self.official = off.yolo.Model(str(off.cfg / f"{name}.yaml"), ch=3, nc=80)
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "official.pt")
                torch.save(self.official.state_dict(), path)
                self.weights = official_to_yolov7(read_official_checkpoint(path), self.ours)
            self.ours.load_state_dict(self.weights)


def official_fused(model):
    """The official ``Model.fuse()`` in eval mode, its progress prints kept out of the table."""
    with contextlib.redirect_stdout(io.StringIO()):
        return model.eval().fuse()


def forward_rows(off, repeats):
    """Each model's forward in NCHW and channels_last, then the arithmetic rate of the
    official (NCHW) and our channels_last forward; last, the rate of one large convolution
    alone, as high as this CPU's convolutions go: the headroom the forward rows have."""
    rows = []
    for name, batch in (("yolov7-tiny", 1), ("yolov7", 1), ("yolov7-tiny", 8)):
        pair = Pair(off, name, "MODEL.YOLOV7.CHANNELS_LAST", "False")
        x = torch.rand(batch, 3, SIZE, SIZE)
        official = None
        if pair.official is not None:
            with torch.no_grad():  # the official weights come from an EMA: no grad
                fused = official_fused(pair.official)
            official = lambda: fused(x)  # noqa: E731
        ours = reparameterize(pair.ours.eval())
        gflop = count_gflops(ours, SIZE) * batch
        with torch.inference_mode():
            t_off, t_ours = interleaved(official, lambda: ours.forward_raw(x), repeats)
            ours.to(memory_format=torch.channels_last)
            ours.channels_last = True
            _, t_nhwc = interleaved(None, lambda: ours.forward_raw(x), repeats)
        rows.append((f"forward, fused deploy model, {SIZE}, {name} b{batch}, NCHW", t_off, t_ours))
        rows.append((f"same, channels_last (the default), {name} b{batch}", t_off, t_nhwc))
        rows.append((f"arithmetic rate of official NCHW and our channels_last, {name} "
                     f"b{batch} ({gflop:,.1f} GFLOP)", t_off and gflop / t_off,
                     gflop / t_nhwc, "GFLOP/s"))
    channels, side = PEAK_CONV_CHANNELS, PEAK_CONV_SIDE
    rows.append((f"one convolution alone, 3x3, {channels} -> {channels} channels, {side} x "
                 f"{side}, NHWC: the rate this CPU's convolutions reach", None,
                 peak_convolution_gflops(repeats), "GFLOP/s"))
    return rows


#: The convolution of the peak row: 3x3, this many channels in and out, on a square map of
#: this side, batch 1, NHWC, as in the middle of yolov7's backbone (large enough to keep
#: every core's vector units busy).
PEAK_CONV_CHANNELS, PEAK_CONV_SIDE = 256, 80


def peak_convolution_gflops(repeats: int) -> float:
    """GFLOP/s (2 x MACs) of the peak row's convolution (:data:`PEAK_CONV_CHANNELS`,
    :data:`PEAK_CONV_SIDE`), float32."""
    channels, side = PEAK_CONV_CHANNELS, PEAK_CONV_SIDE
    x = torch.rand(1, channels, side, side).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1).eval()
    conv.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        _, seconds = interleaved(None, lambda: conv(x), max(repeats, 5))
    return 2 * channels * channels * 9 * side * side / seconds / 1e9


def photo_640x480() -> np.ndarray:
    """A real photo (skimage's astronaut if installed, else a smooth random image), BGR."""
    try:
        import cv2
        from skimage import data

        return cv2.resize(data.astronaut()[:, :, ::-1], (640, 480))
    except ImportError:
        rng = np.random.default_rng(0)
        return (rng.random((480, 640, 3)) * 255).astype(np.uint8)


def official_detect(off, fused):
    """detect.py on a list of BGR photos of one size, as one batch: letterbox, forward of the
    fused model, ``non_max_suppression`` (0.25, IoU 0.45), ``scale_coords``."""
    general, letterbox = off.general, off.datasets.letterbox

    def detect(images):
        batch = np.stack([letterbox(im, SIZE, stride=32)[0][:, :, ::-1].transpose(2, 0, 1)
                          for im in images])
        x = torch.from_numpy(np.ascontiguousarray(batch)).float() / 255.0
        with torch.no_grad():
            pred = fused(x)[0]
        dets = general.non_max_suppression(pred, 0.25, 0.45)
        for det, im in zip(dets, images):
            det[:, :4] = general.scale_coords(x.shape[2:], det[:, :4], im.shape)
        return dets
    return detect


def e2e_rows(off, repeats):
    from yolov7_d2.predictor import YOLOv7Predictor

    image = photo_640x480()
    native_bf16 = inference_autocast_dtype("cpu") is not None
    rows = []
    for name in E2E_MODELS:
        pair = Pair(off, name, "MODEL.YOLOV7.CONF_THRESH_TEST", "0.25",
                    "MODEL.YOLOV7.NMS_THRESH_TEST", "0.45")
        predictors = {}
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.pth")
            torch.save({"model": pair.ours.state_dict()}, path)
            # float32, bfloat16 where native (the default there), the default compiled
            for amp, compile_ in {(False, False), (native_bf16, False), (native_bf16, True)}:
                cfg = pair.cfg.clone()
                cfg.MODEL.WEIGHTS, cfg.TEST.YOLOV7.AMP = path, amp
                cfg.TEST.YOLOV7.COMPILE = compile_
                predictors[amp, compile_] = YOLOv7Predictor(cfg)
        detect = None
        if pair.official is not None:
            with torch.no_grad():
                detect = official_detect(off, official_fused(pair.official))
        for batch in (1, 8):
            images = [image] * batch
            t_off, t_ours = interleaved(
                detect and (lambda: detect(images)),
                lambda: predictors[False, False].predict_batch(images), repeats)
            label = f"end to end, 640x480 photos, detect.py thresholds, {name} b{batch}"
            rows.append((label + (", float32" if native_bf16 else ""), t_off, t_ours))
            if batch == 1:
                t_off_photo = t_off
            if native_bf16:
                _, t_bf16 = interleaved(
                    None, lambda: predictors[True, False].predict_batch(images), repeats)
                rows.append((f"same, bfloat16 autocast (the default on this CPU), {name} "
                             f"b{batch}", t_off, t_bf16))
        # One photo through the compiled predictor, after its compilation (timed apart).
        compiled = predictors[native_bf16, True]
        start = time.perf_counter()
        compiled.predict_batch([image])
        compile_seconds = time.perf_counter() - start
        _, t_compiled = interleaved(None, lambda: compiled.predict_batch([image]), repeats)
        rows.append((f"end to end, one 640x480 photo, {name}, the default with "
                     f"TEST.YOLOV7.COMPILE (its first photo: {compile_seconds:.0f} s)",
                     t_off_photo, t_compiled))
    return rows


def onnx_rows(off, repeats):
    """onnxruntime on our raw export: the forward row's inputs, then the photo end to end
    (exported at 480 x 640, the size official detect.py's letterbox gives the photo)."""
    from yolov7_d2.export.onnx import export_onnx
    from yolov7_d2.export.onnx_predictor import ONNXPredictor, create_session

    image = photo_640x480()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, batch in (("yolov7-tiny", 1), ("yolov7", 1), ("yolov7-tiny", 8)):
            pair = Pair(off, name, "MODEL.YOLOV7.CONF_THRESH_TEST", "0.25",
                        "MODEL.YOLOV7.NMS_THRESH_TEST", "0.45")
            path = os.path.join(tmp, f"{name}-b{batch}.onnx")
            export_onnx(pair.ours.eval(), path, image_size=SIZE, batch_size=batch)
            session = create_session(path)
            x = torch.rand(batch, 3, SIZE, SIZE)
            feed = {session.get_inputs()[0].name: x.numpy()}
            official = None
            if pair.official is not None:
                with torch.no_grad():
                    fused = official_fused(pair.official)
                official = lambda: fused(x)  # noqa: E731
            with torch.inference_mode():
                t_off, t_ours = interleaved(official, lambda: session.run(None, feed), repeats)
            rows.append((f"forward through onnxruntime (raw heads), {SIZE}, {name} b{batch}",
                         t_off, t_ours))
            if batch == 1:  # exported at the photo's size, as detect.py's letterbox makes it
                photo_path = os.path.join(tmp, f"{name}-photo.onnx")
                export_onnx(pair.ours.eval(), photo_path, image_size=image.shape[:2])
                predictor = ONNXPredictor(photo_path, pair.cfg)
                detect = None
                if pair.official is not None:
                    detect = official_detect(off, fused)
                t_off, t_ours = interleaved(detect and (lambda: detect([image])),
                                            lambda: predictor(image), repeats)
                rows.append((f"end to end through onnxruntime, one 640x480 photo, {name}",
                             t_off, t_ours))
    return rows


def random_boxes(num, generator):
    """(num, 4) xyxy boxes inside a SIZE x SIZE image, sides 8 to 128 px at 640 (scaled with
    SIZE)."""
    wh = (torch.rand(num, 2, generator=generator) * 120 + 8) * SIZE / 640
    xy = torch.rand(num, 2, generator=generator) * (SIZE - wh)
    return torch.cat([xy, xy + wh], 1)


def official_compute_loss(off, model, hyp_file: str):
    """The official ``ComputeLossOTA`` of ``model`` with the hyper-parameters of ``hyp_file``
    (what official train.py sets on the model before building it)."""
    import yaml

    with open(off.hyp / hyp_file) as f:
        model.hyp = yaml.safe_load(f)
    model.gr = 1.0
    return off.loss.ComputeLossOTA(model)


def official_targets(boxes, classes) -> torch.Tensor:
    """(M, 6) rows [image, class, cx, cy, w, h], normalised by SIZE, as the official data
    loader gives them, from per-image xyxy pixel boxes and classes."""
    return torch.cat([torch.cat([torch.full((len(b), 1), float(i)), c[:, None].float(),
                                 (b[:, :2] + b[:, 2:]) / 2 / SIZE, (b[:, 2:] - b[:, :2]) / SIZE], 1)
                      for i, (b, c) in enumerate(zip(boxes, classes))])


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc ``malloc_trim``; nothing
    elsewhere), so that memory freed by earlier work is not reused unseen by :class:`PeakMemory`."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """The most resident memory (MB) a block adds above its start, sampled every 5 ms from
    /proc/self/statm (None where there is no /proc). The C heap's free pages are returned to
    the system first (:func:`release_free_memory`)."""

    PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20 if hasattr(os, "sysconf") else 0

    def __init__(self):
        self.peak_mb = None

    @staticmethod
    def resident_mb():
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * PeakMemory.PAGE_MB
        except OSError:
            return None

    def __enter__(self):
        release_free_memory()
        self.start = self.resident_mb()
        self.highest, self.running = self.start, True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running and self.start is not None:
            self.highest = max(self.highest, self.resident_mb())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        if self.start is not None:
            self.peak_mb = max(self.highest, self.resident_mb()) - self.start


def official_matching_gb(official_loss, maps, targets, num_classes: int = 80) -> float:
    """The memory (GB) the official ``build_targets`` needs for its costliest image: its
    SimOTA holds about 14 float tensors of (GT, candidates, classes) at once (6.2 GB measured
    at 300 GT per image, batch 2, 640), so it is quadratic in the GT count."""
    indices, _ = official_loss.find_3_positive(maps, targets)
    per_image = []
    for i in range(maps[0].shape[0]):
        gt = int((targets[:, 0] == i).sum())
        candidates = sum(int((level[0] == i).sum()) for level in indices)
        per_image.append(gt * candidates)
    return 14 * max(per_image) * num_classes * 4 / 1e9


def available_gb() -> float:
    """The memory available now in GB (infinite where it is unknown)."""
    available = available_memory_bytes()
    return float("inf") if available is None else available / 1e9


def loss_rows(off, repeats):
    """10 to 300 boxes per image at batch 8, then 1,000 and 3,000 at batch 2 (2 runs), with
    the peak memory of one more run of each side (all but 30 boxes)."""
    pair = Pair(off, "yolov7")
    ours_loss, anchors, strides = pair.ours.loss, pair.ours.anchors, pair.ours.strides
    official_loss = None
    if pair.official is not None:
        official_loss = official_compute_loss(off, pair.official, "hyp.scratch.p5.yaml")
    rows = []
    for num, batch in LOSS_DENSITIES:
        g = torch.Generator().manual_seed(num)
        maps = [torch.randn(batch, 3, SIZE // s, SIZE // s, 85, generator=g) for s in strides]
        boxes = [random_boxes(num, g) for _ in range(batch)]
        classes = [torch.randint(80, (num,), generator=g) for _ in range(batch)]
        images = torch.zeros(batch, 3, SIZE, SIZE)

        def ours():
            p = [m.clone().requires_grad_() for m in maps]
            with EventStorage():
                sum(ours_loss(p, None, boxes, classes, anchors, strides).values()).backward()

        official, label_note = None, ""
        if official_loss is not None:
            targets = official_targets(boxes, classes)
            need = official_matching_gb(official_loss, maps, targets)
            if need > 0.8 * available_gb():  # it would be killed for memory, or swap
                label_note = f" (official not run: it needs about {need:,.0f} GB)"
            else:
                def official():
                    p = [m.clone().requires_grad_() for m in maps]
                    official_loss(p, targets, images)[0].backward()

        dense = num > 300
        t_off, t_ours = interleaved(official, ours, min(repeats, 2) if dense else repeats)
        label = (f"assignment + loss + backward, yolov7 b{batch} {SIZE}, {num} GT per image"
                 f"{label_note}")
        rows.append((label, t_off, t_ours))
        if num != 30:
            peaks = []
            for fn in (official, ours):
                with PeakMemory() as memory:
                    fn and fn()
                peaks.append(memory.peak_mb if fn else None)
            rows.append((f"same, peak memory added ({num} GT)", *peaks, "MB"))
    return rows


def train_rows(off, repeats):
    pair = Pair(off, "yolov7-tiny", "MODEL.YOLOV7.CHANNELS_LAST", "False")
    g = torch.Generator().manual_seed(0)
    images = torch.randint(256, (8, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    boxes = [random_boxes(20, g) for _ in range(8)]
    classes = [torch.randint(80, (20,), generator=g) for _ in range(8)]
    inputs = []
    for image, b, c in zip(images, boxes, classes):
        instances = Instances((SIZE, SIZE))
        instances.gt_boxes, instances.gt_classes = Boxes(b), c
        inputs.append({"image": image.float(), "instances": instances})
    official = None
    if pair.official is not None:
        model = pair.official.train()
        compute_loss = official_compute_loss(off, model, "hyp.scratch.tiny.yaml")
        sgd = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True)
        x = images.float() / 255.0
        targets = official_targets(boxes, classes)

        def official():
            loss, _ = compute_loss(model(x), targets, x)
            loss.backward()
            sgd.step()
            sgd.zero_grad()

    rows = []
    for label, channels_last in ((", NCHW", False), (", channels_last (the default)", True)):
        ours_model = pair.ours.train()
        if channels_last:
            ours_model.to(memory_format=torch.channels_last)
            ours_model.channels_last = True
        opt = torch.optim.SGD(ours_model.parameters(), lr=1e-4, momentum=0.9, nesterov=True)

        def ours():
            with EventStorage():
                sum(ours_model(inputs).values()).backward()
            opt.step()
            opt.zero_grad()

        t_off, t_ours = interleaved(official if not channels_last else None, ours, repeats)
        if channels_last:
            t_off = rows[0][1]
        rows.append((f"train step yolov7-tiny b8 {SIZE}{label}", t_off, t_ours))
    return rows


def yolo_copy_of_trees(directory: Path, polygons: bool = False, enlarge: int = 1) -> Path:
    """The training tree tiles as a YOLO dataset (images/, labels/, data.yaml) in directory;
    ``polygons``: each box as the 16-point ellipse inscribed in it (YOLO segment labels);
    ``enlarge`` > 1: each tile enlarged that many times (bicubic) and saved as a JPEG
    (quality 90), as large photos."""
    from yolov7_d2.data import register_deepforest
    from yolov7_d2.engine import prepare_bundled_datasets

    from detectron2.data import DatasetCatalog

    names = register_deepforest()
    prepare_bundled_datasets(names[:1])
    (directory / "images").mkdir(parents=True)
    (directory / "labels").mkdir()
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)  # the polygons' vertices
    for d in DatasetCatalog.get(names[0]):
        stem = Path(d["file_name"]).stem
        if enlarge > 1:
            photo = cv2.resize(cv2.imread(d["file_name"]), None, fx=enlarge, fy=enlarge,
                               interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(directory / "images" / f"{stem}.jpg"), photo,
                        [cv2.IMWRITE_JPEG_QUALITY, 90])
        else:
            shutil.copy(d["file_name"], directory / "images" / Path(d["file_name"]).name)
        w, h = d["width"], d["height"]
        lines = []
        for x, y, bw, bh in (a["bbox"] for a in d["annotations"]):
            cx, cy = (x + bw / 2) / w, (y + bh / 2) / h
            if not polygons:
                lines.append(f"0 {cx:.6f} {cy:.6f} {bw / w:.6f} {bh / h:.6f}")
                continue
            xs = cx + np.cos(angles) * bw / w / 2
            ys = cy + np.sin(angles) * bh / h / 2
            lines.append("0 " + " ".join(f"{px:.6f} {py:.6f}" for px, py in zip(xs, ys)))
        (directory / "labels" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    (directory / "data.yaml").write_text(
        f"path: {directory}\ntrain: images\nval: images\nnames: ['tree']\n")
    return directory


def data_rows(off, repeats, samples: int = 40):
    """Images per second of the training pipeline (mosaic, perspective, HSV, mixup, paste-in,
    flips) on the tree tiles, box and polygon labels, decoding every image at each use (both
    sides' default) and with decoded images cached in memory (official ``--cache-images``,
    our ``INPUT.YOLOV7.CACHE_IMAGES``); ``samples`` per run, 3 times as many cached (runs of
    a second or so: the official paste-in's cost varies from sample to sample)."""
    import yaml

    from yolov7_d2.data import YOLOv7MosaicMapper
    from yolov7_d2.data.datasets import register_yolo_dataset

    from detectron2.data import DatasetCatalog

    hyp = None
    if off is not None:
        with open(off.hyp / "hyp.scratch.tiny.yaml") as f:
            hyp = yaml.safe_load(f)
    rows = []
    settings = [(kind, cache, 1) for kind, cache in itertools.product(("box", "polygon"),
                                                                      (False, True))]
    settings.append(("box", False, PHOTO_ENLARGEMENT))
    for kind, cache, enlarge in settings:
        count = 3 * samples if cache else samples
        cfg = load_config(str(ROOT / "configs" / "coco" / "yolov7-tiny.yaml"),
                          ["MODEL.DEVICE", "cpu", "SEED", "0",
                           "INPUT.YOLOV7.CACHE_IMAGES", str(cache),
                           "INPUT.YOLOV7.CACHE_IMAGES_MEMORY_FRACTION", "0.0"])
        with tempfile.TemporaryDirectory() as tmp:
            data = yolo_copy_of_trees(Path(tmp) / "trees", polygons=kind == "polygon",
                                      enlarge=enlarge)
            train_name = register_yolo_dataset(data / "data.yaml",
                                               name_prefix=f"bench_{kind}_{cache}")["train"]
            dicts = DatasetCatalog.get(train_name)
            mapper = YOLOv7MosaicMapper(cfg, is_train=True, dataset_dicts=dicts)
            official = None
            if off is not None:
                # Our config's training size (640), whatever --size gives the model rows.
                dataset = off.datasets.LoadImagesAndLabels(
                    str(data / "images"), mapper.image_size, 8, augment=True, hyp=hyp,
                    stride=32)
                # What its cache_images=True does (sas-yolov7's own progress bar breaks it).
                if cache:
                    n = len(dataset)
                    dataset.img_hw0, dataset.img_hw = [None] * n, [None] * n
                    for i in range(n):
                        dataset.imgs[i], dataset.img_hw0[i], dataset.img_hw[i] = (
                            off.datasets.load_image(dataset, i))

                def official():
                    for i in range(count):
                        dataset[i % len(dataset)]

            def ours():
                for i in range(count):
                    mapper(dicts[i % len(dicts)])

            t_off, t_ours = interleaved(official, ours, repeats)
        # images per second: higher is better, so the ratio is ours / official rate
        label = "images cached in memory" if cache else "decoded at each use"
        if enlarge > 1:
            side = 416 * enlarge
            label = f"{side} x {side} JPEG photos, {label}"
        rows.append((f"training data pipeline, images/s, one process, official hyp tiny: "
                     f"{kind} labels, {label}", count / t_off if t_off else None,
                     count / t_ours, "rate"))
    return rows


def table_row(label: str, official, ours, unit: str) -> str:
    """A markdown row of seconds ("s"), images per second ("rate"), arithmetic rate
    ("GFLOP/s") or megabytes ("MB"); None: not measured."""
    def text(value):
        if value is None:
            return ""
        return {"s": f"{value * 1000:,.0f} ms", "rate": f"{value:.1f}/s",
                "GFLOP/s": f"{value:,.0f} GFLOP/s", "MB": f"{value:,.0f} MB"}[unit]

    ratio = ""
    if official and ours is not None:
        ratio = {"rate": f"{ours / official:.2f}x the throughput",
                 "GFLOP/s": f"{ours / official:.2f}x the rate"}.get(unit,
                                                                  f"{ours / official:.2f}")
    return f"| {label} | {text(official)} | {text(ours)} | {ratio} |"


def main(argv=None) -> int:
    global SIZE
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", default="auto", metavar="DIR",
                        help="a checkout of the official yolov7 repository; 'auto' (default): "
                             "the installed sas-yolov7; 'none': our column only")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS),
                        help="which rows to run (default: all)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed runs of each side after one warm-up (default: 5)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads (default: torch's choice, %(default)s here)")
    parser.add_argument("--size", type=int, default=SIZE,
                        help="square input side of the forward, loss and train rows "
                             "(default: %(default)s, as official)")
    args = parser.parse_args(argv)
    SIZE = args.size
    torch.set_num_threads(args.threads)
    try:
        off = official_modules(args.official)
    except ImportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    builders = {"forward": forward_rows, "e2e": e2e_rows, "onnx": onnx_rows,
                "loss": loss_rows, "train": train_rows, "data": data_rows}
    print(machine_header(args.threads))
    print("official: " + ("not found (ours only)" if off is None else str(off.cfg.parents[1])))
    print(f"medians of {args.repeats} interleaved runs\n")
    print("| work | official | ours | ratio |\n|---|---|---|---|")
    for row in args.rows:
        for label, t_off, t_ours, *unit in builders[row](off, args.repeats):
            print(table_row(label, t_off, t_ours, unit[0] if unit else "s"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
