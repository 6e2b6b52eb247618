"""One training epoch: mixup, AMP, gradient clipping and accumulation, per-step learning rate, a log line every
PRINT_FREQ steps (as the original's ``train_one_epoch``)."""
from __future__ import annotations

import logging
import math
import time
from typing import Dict, Optional

import torch
import torch.nn as nn
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.utils import AverageMeter
from torch.utils.data import DataLoader
from yacs.config import CfgNode

from swin_trt.distributed import all_reduce_sum, rank
from swin_trt.logs import progress

_LOG = logging.getLogger("swin")


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
                    desc: str = "train") -> Dict[str, float]:
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
    for idx, (images, target) in enumerate(progress(loader, f"{desc} epoch {epoch + 1}", rank())):
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        if mixup is not None:
            images, target = mixup(images, target)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=scaler is not None):
            loss = criterion(model(images), target)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch + 1} step {idx + 1}: lower TRAIN.BASE_LR or check the data")
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
        loss_meter.update(loss.item(), images.shape[0])
        images_seen += images.shape[0]
        if rank() == 0 and ((idx + 1) % config.PRINT_FREQ == 0 or idx + 1 == steps):
            _LOG.info("%s epoch %d [%d/%d] loss %.4f (%.4f) lr %.2e %.0f images/s", desc, epoch + 1, idx + 1, steps,
                      loss_meter.val, loss_meter.avg, optimizer.param_groups[0]["lr"],
                      images_seen / (time.perf_counter() - start))
    seconds = time.perf_counter() - start
    loss_sum, n, rate = all_reduce_sum(torch.tensor([loss_meter.sum, loss_meter.count, images_seen / seconds],
                                                    dtype=torch.float64)).tolist()
    return {"loss": loss_sum / max(n, 1), "images_per_s": rate, "lr": optimizer.param_groups[0]["lr"]}
