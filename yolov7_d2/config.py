"""Config keys of the YOLOv7 plugin."""
from detectron2.config import CfgNode as CN

__all__ = ["add_yolov7_config", "load_config", "keys_set_by"]


def add_yolov7_config(cfg: CN) -> None:
    """Add the ``cfg.MODEL.YOLOV7`` subtree (and YOLO input defaults) to a detectron2 config."""
    cfg.MODEL.YOLOV7 = CN()
    yolo = cfg.MODEL.YOLOV7
    # Official scale whose architecture table row is built: yolov7-tiny, yolov7, yolov7x,
    # yolov7-w6, yolov7-e6, yolov7-d6 or yolov7-e6e.
    yolo.ARCH = "yolov7"
    # Registered BACKBONE_REGISTRY builder of the bottom-up part under the PAN neck.
    yolo.BOTTOM_UP = "build_elan_backbone"
    # Bottom-up outputs fed to the neck, finest first; empty: "c3".."c5" ("c6" for P6 scales).
    yolo.IN_FEATURES = []
    # Scales every channel width as the official width_multiple (ceil to a multiple of 8).
    yolo.WIDTH_MULTIPLE = 1.0
    # Number of object classes (80 for COCO).
    yolo.NUM_CLASSES = 80
    # Anchors per level, stride 8 first, as flat (w, h) pixel pairs; empty: the official
    # anchors of ARCH. Checkpoints carry their anchors, which replace these when loaded.
    yolo.ANCHORS = []
    # Build the auxiliary head where ARCH has one (P6 scales); it only serves training.
    yolo.AUX_HEAD = True
    # Deploy form: plain Detect head without implicit knowledge and without auxiliary head.
    yolo.DEPLOY = False
    # Build the re-parameterized (fused) structure, to load checkpoints written by
    # tools/reparameterize.py: BN folded, RepConv merged, implicit folded, no aux head.
    yolo.REPARAMETERIZED = False
    # BatchNorm kind: "BN" (each process normalises over its own images), "SyncBN" (torch's
    # SyncBatchNorm over all processes' images, CUDA only: the official --sync-bn) or
    # "naiveSyncBN" (detectron2's NaiveSyncBatchNorm, any device). eps 1e-3, momentum 0.03.
    yolo.NORM = "BN"
    # NHWC memory layout for weights and activations: identical outputs, faster convolutions
    # on CPU (oneDNN: a yolov7-tiny training step about 1.2x faster) and on tensor-core GPUs.
    yolo.CHANNELS_LAST = True
    # Training from MODEL.WEIGHTS of another class count (e.g. official COCO weights): also
    # start the classes named alike in the checkpoint and the training dataset from the
    # checkpoint's rows (the others always start from the official prior); see finetune.py.
    yolo.KEEP_SHARED_CLASSES = False
    # The ELAN backbone and detectron2's ResNet honour MODEL.BACKBONE.FREEZE_AT (1: freeze the
    # stem, k: the stem and the first k - 1 stages; official --freeze counts layers). Its
    # detectron2 default, 2, assumes ImageNet weights; YOLO trains every layer by default.
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    # At training start, measure the best possible recall of the anchors on the training boxes
    # and warn (with the numbers) below this; 0 disables the check.
    yolo.ANCHOR_CHECK_MIN_BPR = 0.98
    # Below that recall, compute anchors for the training boxes (k-means + evolution) and use
    # them if their recall is higher, as official autoanchor; they are saved with the
    # checkpoints. False: only warn (official --noautoanchor).
    yolo.AUTOANCHOR = True
    # Inference: candidates need objectness and score above this (official test.py: 0.001).
    yolo.CONF_THRESH_TEST = 0.001
    # Inference: IoU threshold of the class-wise NMS (official test.py: 0.65).
    yolo.NMS_THRESH_TEST = 0.65
    # Inference: above 0, each box the NMS keeps becomes the score-weighted mean of the
    # candidates of its class overlapping it by more than this IoU (official merge NMS, which
    # is off there); 0: off.
    yolo.MERGE_IOU_TEST = 0.0
    # Inference: highest-scoring candidates kept before NMS (official max_nms).
    yolo.MAX_NMS_CANDIDATES_TEST = 30000
    # Inference: report a box once per class above the threshold (official evaluation).
    yolo.MULTI_LABEL_TEST = True

    # Loss and label assignment (official hyp.scratch.*.yaml and train.py).
    yolo.LOSS = CN()
    # Gains as in the hyp files; the loss rescales them as train.py does: box *= 3 / levels,
    # cls *= classes / 80 * 3 / levels, obj *= (image size / 640)^2 * 3 / levels.
    yolo.LOSS.BOX_GAIN = 0.05
    yolo.LOSS.CLS_GAIN = 0.3
    yolo.LOSS.OBJ_GAIN = 0.7
    # Per-level objectness weights, stride 8 first; empty: official [4, 1, 0.4] or
    # [4, 1, 0.25, 0.06].
    yolo.LOSS.BALANCE = []
    # Candidate (target, anchor) pairs need max(w/anchor_w, anchor_w/w, h/..., ...) below this.
    yolo.LOSS.ANCHOR_T = 4.0
    # Class label smoothing epsilon (targets 1 - eps/2 and eps/2).
    yolo.LOSS.LABEL_SMOOTHING = 0.0
    # Weight of the auxiliary (coarse) head terms (P6 scales).
    yolo.LOSS.AUX_WEIGHT = 0.25
    # SimOTA: IoUs summed per ground truth for its dynamic k (official: 10 P5, 20 with aux).
    yolo.LOSS.TOPK = 0
    # Ground truths per chunk in the cost matrices; bounds memory in dense scenes.
    yolo.LOSS.GT_CHUNK = 256

    # Training data augmentation (official hyp.scratch.*.yaml), YOLOv7MosaicMapper.
    cfg.INPUT.YOLOV7 = CN()
    aug = cfg.INPUT.YOLOV7
    # Square training canvas size (pixels); the long side of each image is resized to it.
    aug.IMAGE_SIZE = 640
    # Probability of a mosaic; of those, the share of 9-image mosaics (else 4-image).
    aug.MOSAIC_PROB = 1.0
    aug.MOSAIC9_PROB = 0.2
    # Probability of mixing a second mosaic in (ratio ~ Beta(8, 8)).
    aug.MIXUP_PROB = 0.15
    # Probability of pasting object crops from other images (official paste_in).
    aug.PASTE_IN_PROB = 0.15
    # Random perspective: rotation (deg), translation (fraction), scale gain, shear (deg),
    # perspective.
    aug.DEGREES = 0.0
    aug.TRANSLATE = 0.2
    aug.SCALE = 0.9
    aug.SHEAR = 0.0
    aug.PERSPECTIVE = 0.0
    # HSV gains (fractions).
    aug.HSV_H = 0.015
    aug.HSV_S = 0.7
    aug.HSV_V = 0.4
    # Flip probabilities.
    aug.FLIP_LR = 0.5
    aug.FLIP_UD = 0.0
    # Swap x and y with this probability (not official). With FLIP_LR and FLIP_UD at 0.5 it
    # makes all 8 right-angle rotations / reflections equally likely: for overhead imagery.
    aug.TRANSPOSE = 0.0
    # Box filter after augmentation: min width/height (px), max aspect ratio, min area kept
    # (fraction).
    aug.BOX_MIN_SIZE = 2.0
    aug.BOX_MAX_ASPECT = 20.0
    aug.BOX_MIN_AREA_RATIO = 0.1
    # Turn mosaic/mixup/paste-in off for the last N iterations ("close mosaic"); 0 = never.
    aug.CLOSE_MOSAIC_ITERS = 0
    # Side of the square window cut from each mosaic (0 or >= IMAGE_SIZE: IMAGE_SIZE; not
    # official): objects keep the IMAGE_SIZE scale, a sample has fewer pixels. Plain
    # (close-mosaic) samples stay IMAGE_SIZE.
    aug.MOSAIC_CROP_SIZE = 0
    # Official --multi-scale: each batch resized by a random factor so its long side is in
    # [0.5, 1.5] x IMAGE_SIZE, rounded to the model stride.
    aug.MULTI_SCALE = False
    # Keep every training image, decoded and resized, in memory (official --cache-images):
    # each file is decoded once per process (each data-loader worker holds its own copy).
    aug.CACHE_IMAGES = False
    # With CACHE_IMAGES False, cache them anyway when the copies of all data-loading processes
    # need at most this fraction of the memory available at start (0: never). Decoding is
    # most of the pipeline's time: a mosaic decodes 4 to 9 images per sample.
    aug.CACHE_IMAGES_MEMORY_FRACTION = 0.25
    # Decode a training JPEG 2, 4 or 8 times or more larger than IMAGE_SIZE at 1/2, 1/4 or
    # 1/8 of its size (libjpeg's DCT scaling; not official, which decodes it whole): 2-3x
    # faster for large photos, and a low-pass filter before the bilinear shrink.
    aug.REDUCED_JPEG_DECODE = True

    # Research backbones: any timm model as the bottom-up part (MODEL.YOLOV7.BOTTOM_UP:
    # "build_timm_backbone").
    cfg.MODEL.TIMM = CN()
    # timm model name, e.g. "convnext_tiny", "pvt_v2_b0", "swin_tiny_patch4_window7_224".
    cfg.MODEL.TIMM.NAME = "convnext_tiny"
    # timm feature indices to expose (features_only out_indices); empty: the last three.
    cfg.MODEL.TIMM.OUT_INDICES = []
    # Load timm's pretrained weights (needs the weights in the local cache: no hub access here).
    cfg.MODEL.TIMM.PRETRAINED = False
    # A local timm weights file to load (timm's "file" overlay), with or without PRETRAINED.
    # (A timm state dict given as MODEL.WEIGHTS also loads into the backbone.)
    cfg.MODEL.TIMM.PRETRAINED_FILE = ""

    # Dataset files in YOLO / VOC formats.
    cfg.DATASETS.YOLOV7 = CN()
    # A malformed label file or line: "error" (raise naming file and line) or "skip" (log it).
    cfg.DATASETS.YOLOV7.ON_BAD_LABEL = "error"
    # Decode every DATASETS.TRAIN and DATASETS.TEST image once before the first step (cached).
    cfg.DATASETS.YOLOV7.VALIDATE_IMAGES = True
    # A missing, corrupt or truncated image: "skip" (warn naming it) or "error" (list them all).
    cfg.DATASETS.YOLOV7.ON_BAD_IMAGE = "skip"
    # Json cache of those checks, keyed by path, size and mtime; "" = OUTPUT_DIR/image_checks.json.
    cfg.DATASETS.YOLOV7.IMAGE_CHECK_CACHE = ""

    # Evaluation extras.
    cfg.TEST.YOLOV7 = CN()
    # COCO metric implementation: "pycocotools" or "faster_coco_eval" (same numbers, faster).
    cfg.TEST.YOLOV7.EVAL_BACKEND = "pycocotools"
    # Official test.py geometry: each image centred in the letterbox shape of its official
    # aspect-ratio batch (RECT_BATCH_SIZE images, half a stride of grey around), area
    # interpolation when shrinking. False: long side resized (bilinear), padded bottom / right
    # to the stride only.
    cfg.TEST.YOLOV7.LETTERBOX = True
    cfg.TEST.YOLOV7.RECT_BATCH_SIZE = 32
    # Test-time flips, any of "lr", "ud", "transpose": inference also runs every combination
    # (up to 8 views, as many times the inference cost) and merges them before NMS, as the
    # official augmented inference merges its views. (): none (official test.py default).
    cfg.TEST.YOLOV7.FLIPS = ()
    # Test-time scales beyond the image's own, which always runs: inference also runs every
    # flip view at each (the input resized, padded to the stride) and merges them before NMS.
    # Official augmented inference: (0.83, 0.67). (): none (official test.py default).
    cfg.TEST.YOLOV7.SCALES = ()
    # Inference (evaluation, predictor, demo) under autocast where the device computes the
    # reduced precision natively: float16 on CUDA (official test.py / detect.py run half),
    # bfloat16 on CPUs with AVX512-BF16 or AMX (about half the float32 time), float32 on
    # other CPUs. Decoding and NMS run in float32. False: float32 everywhere.
    cfg.TEST.YOLOV7.AMP = True
    # YOLOv7Predictor (demo.py) runs backbone and head through torch.compile, weights frozen
    # into the graph. Each new input size compiles first (25-55 s on 2 cores), then a photo
    # takes 0.86-0.99x the eager time (README): for a long video or many images of one size.
    # On the CPU it needs a C++ compiler (g++).
    cfg.TEST.YOLOV7.COMPILE = False
    # Write results csv, PR / F1 curves, confusion matrix and prediction images into OUTPUT_DIR.
    cfg.TEST.YOLOV7.ARTIFACTS = True
    # Validation images drawn with their predictions per evaluation, and augmented training
    # samples drawn at the start of training.
    cfg.TEST.YOLOV7.NUM_VIS_IMAGES = 8
    # Evaluate every this many epochs (SOLVER.YOLOV7.EPOCHS); 0: TEST.EVAL_PERIOD.
    cfg.TEST.YOLOV7.EVAL_PERIOD_EPOCHS = 0
    # Evaluation metric that picks model_best.pth (higher is better); "": no best model.
    cfg.TEST.YOLOV7.BEST_METRIC = "bbox/AP"
    # Stop training after this many evaluations without a better BEST_METRIC; 0: never.
    cfg.TEST.YOLOV7.EARLY_STOP_PATIENCE = 0

    # Optimisation (official train.py); the base LR, momentum, weight decay and MAX_ITER are the
    # usual SOLVER keys.
    cfg.SOLVER.YOLOV7 = CN()
    sol = cfg.SOLVER.YOLOV7
    # Gradients are accumulated to this many images per optimizer step; weight decay is
    # scaled by (batch * accumulation / nominal batch).
    sol.NOMINAL_BATCH_SIZE = 64
    # SGD with Nesterov momentum (official default).
    sol.NESTEROV = True
    # "SGD" (official), "Adam" (official --adam: betas (MOMENTUM, 0.999), decay in the
    # gradient) or "AdamW" (decoupled decay). Adam's BASE_LR is ~10x smaller than SGD's.
    sol.OPTIMIZER = "SGD"
    # Warm-up: bias LR falls from this to the scheduled LR, momentum rises from WARMUP_MOMENTUM.
    sol.WARMUP_BIAS_LR = 0.1
    sol.WARMUP_MOMENTUM = 0.8
    # LR decay after warm-up: "cosine" (official one_cycle) or "linear", to
    # BASE_LR * FINAL_LR_RATIO.
    sol.LR_DECAY = "cosine"
    sol.FINAL_LR_RATIO = 0.1
    # Model EMA: decay(u) = EMA_DECAY * (1 - exp(-u / EMA_TAU)), u = optimizer steps; 0 disables.
    sol.EMA_DECAY = 0.9999
    sol.EMA_TAU = 2000.0
    # Schedule in epochs of the training set (official --epochs), turned into iterations at
    # start by train_net.py from the number of training images and SOLVER.IMS_PER_BATCH
    # (yolov7_d2/engine/epochs.py); an iteration key (SOLVER.MAX_ITER, SOLVER.WARMUP_ITERS,
    # SOLVER.CHECKPOINT_PERIOD, TEST.EVAL_PERIOD) set in a config file or option is kept.
    # 0: SOLVER.MAX_ITER and the other iteration keys as they are.
    sol.EPOCHS = 0
    # Warm-up of max(WARMUP_EPOCHS epochs, MIN_WARMUP_ITERS iterations), as official.
    sol.WARMUP_EPOCHS = 3.0
    sol.MIN_WARMUP_ITERS = 1000
    # Checkpoint every this many epochs; 0: SOLVER.CHECKPOINT_PERIOD.
    sol.CHECKPOINT_PERIOD_EPOCHS = 0
    # Train for as many iterations as fit this many minutes of wall time (evaluations
    # included), measured on this machine at start; the schedule is stretched to them
    # (yolov7_d2/engine/time_budget.py). 0: SOLVER.MAX_ITER as it is.
    sol.TIME_BUDGET_MINUTES = 0.0


def load_config(config_file: str = "", opts=()) -> CN:
    """A detectron2 config with the YOLOv7 keys, merged from ``config_file`` (with its
    ``_BASE_`` files) and ``opts`` ("KEY VALUE" pairs). A missing or unparsable file, a
    missing base, an unknown key or a value of the wrong type raises
    :class:`~yolov7_d2.config_checks.ConfigError` naming it (with close matches of an unknown
    key); :func:`~yolov7_d2.config_checks.check_config` checks the values."""
    from detectron2.config import get_cfg

    from .config_checks import merge_config

    cfg = get_cfg()
    add_yolov7_config(cfg)
    merge_config(cfg, config_file, opts)
    return cfg


def keys_set_by(config_file: str = "", opts=()) -> set:
    """Dotted names of the keys that ``config_file`` (with its ``_BASE_`` files) or the
    "KEY VALUE" ``opts`` set, whatever their values: what a user chose, as opposed to the
    defaults of detectron2 and :func:`add_yolov7_config`."""
    from detectron2.config import CfgNode

    keys = {str(k) for k in list(opts)[0::2]}
    if config_file:
        pending = [("", CfgNode.load_yaml_with_base(config_file, allow_unsafe=True))]
        while pending:
            prefix, node = pending.pop()
            for key, value in node.items():
                if isinstance(value, dict):
                    pending.append((f"{prefix}{key}.", value))
                else:
                    keys.add(prefix + key)
    return keys
