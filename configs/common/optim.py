"""Official YOLOv7 optimisation as a LazyConfig: SGD (Nesterov) over three parameter groups
and the per-iteration warm-up + one-cycle schedule of ``yolov7_d2.engine``.

``lr_multiplier`` keeps detectron2's key name but is a whole torch scheduler
(:class:`YOLOv7LRScheduler`): besides the LR it warms up the momentum and gives the bias group
its own warm-up LR, which a plain LR multiplier cannot do. tools/lazyconfig_train_net.py sets
``optimizer.params.model`` and ``lr_multiplier.optimizer``.
"""
import torch

from yolov7_d2.engine import YOLOv7LRScheduler, nominal_weight_decay, yolov7_param_groups

from detectron2.config import LazyCall as L

optimizer = L(torch.optim.SGD)(
    params=L(yolov7_param_groups)(
        model=None,
        # Official: 5e-4 x (batch x accumulation steps) / nominal batch.
        weight_decay=L(nominal_weight_decay)(
            weight_decay=0.0005,
            batch_size="${dataloader.train.total_batch_size}",
            nominal_batch_size="${train.nominal_batch_size}",
        ),
    ),
    lr=0.01,
    momentum=0.937,
    nesterov=True,
)

lr_multiplier = L(YOLOv7LRScheduler)(
    optimizer=None,
    max_iter="${train.max_iter}",
    warmup_iters="${train.warmup_iters}",
    warmup_bias_lr=0.1,
    warmup_momentum=0.8,
    momentum="${optimizer.momentum}",
    # One-cycle cosine to lr x final_ratio (hyp lrf: 0.1 P5, 0.2 P6, 0.01 tiny).
    final_ratio=0.1,
    decay="cosine",
)
