"""Training-loop settings of the YOLOv7 LazyConfigs (read by tools/lazyconfig_train_net.py).

Official COCO recipe: 300 epochs of train2017 (118,287 images) at 64 images per optimizer step
(1849 iterations per epoch), warm-up of 3 epochs, EMA of the weights (evaluated and saved).
"""
train = dict(
    output_dir="./output",
    # A checkpoint to start from (official ones: tools/convert_official_weights.py).
    init_checkpoint="",
    max_iter=554475,  # 300 epochs
    warmup_iters=5547,  # 3 epochs
    # Gradients are accumulated to this many images per optimizer step (after the warm-up).
    nominal_batch_size=64,
    # decay(u) = decay x (1 - exp(-u / tau)) after u optimizer steps.
    ema=dict(enabled=True, decay=0.9999, tau=2000.0),
    # Official --multi-scale: each batch resized to 0.5-1.5x the training size.
    multi_scale=False,
    amp=dict(enabled=False),
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=18490, max_to_keep=100),  # every 10 epochs
    eval_period=18490,
    log_period=20,
    device="cuda",
    seed=-1,
)
