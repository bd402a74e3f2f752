"""Training-loop settings of the YOLOv7 LazyConfigs (read by tools/lazyconfig_train_net.py).

Official recipe: 300 epochs at 64 images per optimizer step, warm-up max(3 epochs, 1000
iterations), EMA of the weights (evaluated and saved). The epochs become iterations at start,
from the size of the training set (COCO train2017, 118,287 images: 1849 iterations an epoch).
"""
train = dict(
    output_dir="./output",
    # A checkpoint to start from (official ones: tools/convert_official_weights.py).
    init_checkpoint="",
    epochs=300,
    warmup_epochs=3.0,
    min_warmup_iters=1000,  # warm-up: max(warmup_epochs, min_warmup_iters iterations)
    checkpoint_period_epochs=10,
    eval_period_epochs=10,
    # Iterations; None: from the epoch values above, a number (here or as an override) wins.
    max_iter=None,
    warmup_iters=None,
    # Gradients are accumulated to this many images per optimizer step (after the warm-up).
    nominal_batch_size=64,
    # decay(u) = decay x (1 - exp(-u / tau)) after u optimizer steps.
    ema=dict(enabled=True, decay=0.9999, tau=2000.0),
    # Official --multi-scale: each batch resized to 0.5-1.5x the training size.
    multi_scale=False,
    # At start, the best possible recall of the anchors on the training boxes; below min_bpr,
    # computed anchors replace them (autoanchor) or a warning says so (min_bpr 0: no check).
    anchor_check=dict(min_bpr=0.98, autoanchor=True),
    # labels.png and train_batch.jpg in output_dir/artifacts/train at start.
    artifacts=True,
    # Mixed precision as official train.py on CUDA (see SOLVER.AMP.ENABLED in
    # configs/coco/Base-YOLOv7.yaml); on the CPU bfloat16 only where native.
    amp=dict(enabled=True),
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=None, max_to_keep=100),
    eval_period=None,
    # model_best.pth by this evaluation metric (higher is better; "": none), and early stopping
    # after early_stop_patience evaluations without a better one (0: never).
    best_metric="bbox/AP",
    early_stop_patience=0,
    log_period=20,
    device="cuda",
    seed=-1,
)
