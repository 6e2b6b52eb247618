"""One training epoch: mixup, AMP, gradient clipping and accumulation, per-step learning rate."""
from __future__ import annotations

import math
import time
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.utils import AverageMeter
from torch.utils.data import DataLoader
from tqdm import tqdm
from yacs.config import CfgNode

from distributed import all_reduce_sum, rank


def build_criterion(config: CfgNode, mixup: Optional[Mixup]) -> nn.Module:
    """Soft-target loss under mixup (which smooths labels itself), else label smoothing, else cross-entropy."""
    if mixup is not None:
        return SoftTargetCrossEntropy()
    if config.MODEL.LABEL_SMOOTHING > 0:
        return LabelSmoothingCrossEntropy(smoothing=config.MODEL.LABEL_SMOOTHING)
    return nn.CrossEntropyLoss()


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    scheduler, criterion: nn.Module, device: torch.device, epoch: int, config: CfgNode,
                    mixup: Optional[Mixup] = None, scaler: Optional[torch.amp.GradScaler] = None,
                    desc: str = "train", after_step: Optional[Callable[[int], None]] = None) -> Dict[str, float]:
    """Train ``model`` for one pass over ``loader``.

    Args:
        scheduler: timm scheduler stepped with ``step_update`` per optimizer step.
        scaler: GradScaler when training with FP16 AMP on CUDA, else None.

    Returns:
        mean loss (over ranks), images/s of this rank summed over ranks, and the last learning rate.
    """
    model.train()
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    accum = config.TRAIN.ACCUMULATION_STEPS
    steps = len(loader)
    loss_meter = AverageMeter()
    optimizer.zero_grad(set_to_none=True)
    start = time.perf_counter()
    images_seen = 0
    bar = tqdm(loader, desc=f"{desc} epoch {epoch}", disable=rank() != 0, leave=False)
    for idx, (images, target) in enumerate(bar):
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        if mixup is not None:
            images, target = mixup(images, target)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=scaler is not None):
            loss = criterion(model(images), target)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch} step {idx}: lower TRAIN.BASE_LR or check the data")
        if scaler is not None:
            scaler.scale(loss / accum).backward()
        else:
            (loss / accum).backward()
        if (idx + 1) % accum == 0 or idx + 1 == steps:
            if scaler is not None:
                scaler.unscale_(optimizer)
            if config.TRAIN.CLIP_GRAD > 0:
                nn.utils.clip_grad_norm_(model.parameters(), config.TRAIN.CLIP_GRAD)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step_update((epoch * steps + idx + 1) // accum)
            if after_step is not None:
                after_step(idx)
        loss_meter.update(loss.item(), images.shape[0])
        images_seen += images.shape[0]
        bar.set_postfix(loss=f"{loss_meter.avg:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    seconds = time.perf_counter() - start
    loss_sum, n, rate = all_reduce_sum(torch.tensor([loss_meter.sum, loss_meter.count, images_seen / seconds],
                                                    dtype=torch.float64)).tolist()
    return {"loss": loss_sum / max(n, 1), "images_per_s": rate, "lr": optimizer.param_groups[0]["lr"]}
