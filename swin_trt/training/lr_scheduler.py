"""Warm-up + cosine learning rate from timm, stepped per iteration; learning rates scaled by the total batch."""
from __future__ import annotations

from typing import Tuple

import torch
from timm.scheduler import CosineLRScheduler
from yacs.config import CfgNode


def scaled_learning_rates(config: CfgNode, world_size: int) -> Tuple[float, float, float]:
    """(base, warm-up, minimum) learning rates scaled linearly from a total batch of 512, as the original."""
    scale = config.DATA.BATCH_SIZE * world_size * config.TRAIN.ACCUMULATION_STEPS / 512.0
    return config.TRAIN.BASE_LR * scale, config.TRAIN.WARMUP_LR * scale, config.TRAIN.MIN_LR * scale


def build_scheduler(config: CfgNode, optimizer: torch.optim.Optimizer, steps_per_epoch: int,
                    warmup_lr: float, min_lr: float) -> CosineLRScheduler:
    """Cosine decay over all steps after a linear warm-up; call ``step_update(global_step)`` each step."""
    steps = max(1, config.TRAIN.EPOCHS * steps_per_epoch)
    warmup = config.TRAIN.WARMUP_EPOCHS * steps_per_epoch
    return CosineLRScheduler(optimizer, t_initial=max(1, steps - warmup), lr_min=min_lr, warmup_lr_init=warmup_lr,
                             warmup_t=warmup, cycle_limit=1, t_in_epochs=False, warmup_prefix=True)
