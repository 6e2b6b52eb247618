"""Quantization-aware fine-tuning: a few epochs at a small learning rate, cosine to zero.

The quantizer ranges stay as calibrated (amax is a buffer, not learned); the
weights adapt to the rounding through the straight-through estimator. The
epoch itself is the training loop of main.py (``train_one_epoch``: AMP on
GPU, gradient clipping and accumulation, DDP through the ``runner``).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn as nn
from timm.scheduler import CosineLRScheduler
from torch.utils.data import DataLoader
from yacs.config import CfgNode

from swin_trt.data import build_mixup
from swin_trt.training.loop import build_criterion, train_one_epoch
from swin_trt.training.optimizer import build_optimizer

_LOG = logging.getLogger("swin")
EpochHook = Callable[[int, Dict[str, Any]], None]


def finetune_lr(config: CfgNode, world_size: int) -> float:
    """QUANT.FINETUNE_LR scaled linearly from a total batch of 512, as the training learning rates."""
    total_batch = config.DATA.BATCH_SIZE * world_size * config.TRAIN.ACCUMULATION_STEPS
    return config.QUANT.FINETUNE_LR * total_batch / 512.0


class QATFineTuner:
    """Optimizer (AdamW), cosine schedule without warm-up and AMP scaler for ``epochs`` epochs of QAT.

    Args:
        model: the quantized model (unwrapped; its parameters are optimized).
        runner: what runs the batches: ``model`` itself or its DDP wrapper.
        loader: training images.
        config: TRAIN (weight decay, clipping, accumulation), AUG (mixup), QUANT.FINETUNE_LR.
        device: where the batches go; AMP only on CUDA with AMP_ENABLE.
        world_size: processes, for the learning-rate scaling.
        epochs: total QAT epochs (the cosine spans all of them).
    """

    def __init__(self, model: nn.Module, runner: nn.Module, loader: DataLoader, config: CfgNode,
                 device: torch.device, world_size: int, epochs: int) -> None:
        self.model, self.runner, self.loader, self.config, self.device = model, runner, loader, config, device
        self.epochs = epochs
        steps = max(1, len(loader) // config.TRAIN.ACCUMULATION_STEPS)
        self.optimizer = build_optimizer(config, model, finetune_lr(config, world_size))
        self.scheduler = CosineLRScheduler(self.optimizer, t_initial=max(1, epochs * steps), lr_min=0.0,
                                           warmup_t=0, cycle_limit=1, t_in_epochs=False)
        self.scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and config.AMP_ENABLE else None
        self.mixup = build_mixup(config)
        self.criterion = build_criterion(config, self.mixup)

    def state_dict(self) -> Dict[str, Any]:
        """Optimizer, scheduler and scaler state, for a resumable checkpoint."""
        return {"optimizer": self.optimizer.state_dict(), "lr_scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else {}}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["lr_scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def run(self, start_epoch: int = 0, on_epoch_end: Optional[EpochHook] = None) -> List[Dict[str, Any]]:
        """Train epochs ``start_epoch .. epochs-1``; ``on_epoch_end(epoch, stats)`` after each (e.g. to save)."""
        history = []
        for epoch in range(start_epoch, self.epochs):
            stats = train_one_epoch(self.runner, self.loader, self.optimizer, self.scheduler, self.criterion,
                                    self.device, epoch, self.config, self.mixup, self.scaler, desc="qat")
            _LOG.info("QAT epoch %d/%d loss %.4f lr %.2e %.0f images/s", epoch + 1, self.epochs, stats["loss"],
                      stats["lr"], stats["images_per_s"])  # counted from 1 for the reader; checkpoints store 0-based
            history.append({"epoch": epoch, **stats})
            if on_epoch_end is not None:
                on_epoch_end(epoch, stats)
        self.model.eval()
        return history
