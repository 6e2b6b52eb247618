"""Training checkpoints: one per epoch, written atomically; automatic resume from the newest."""
from __future__ import annotations

import glob
import os
import re
from typing import Any, Dict, Optional

import torch.nn as nn

from swin_trt.files import atomic_torch_save

_EPOCH_FILE = re.compile(r"ckpt_epoch_(\d+)\.pth$")
FINAL_NAME = "ckpt_final.pth"
CHECKPOINT_EXTRA = 1 << 20  # the config, buffers, quantizer ranges and the pickle's own bytes, generously
OPTIMIZER_STATES = {"adamw": 2, "sgd": 1}  # tensors the optimizer keeps per parameter (AdamW: two moments)


def checkpoint_bytes(config, with_optimizer: bool = True) -> int:
    """What a checkpoint of the config's model takes on disk, computed from the model (built on the meta device):
    its FP32 weights, and the optimizer's state per parameter when it is a training (or QAT) checkpoint."""
    from swin_trt.models.flops import parameter_bytes

    states = OPTIMIZER_STATES.get(config.TRAIN.OPTIMIZER.NAME, 2) if with_optimizer else 0
    return parameter_bytes(config) * (1 + states) + CHECKPOINT_EXTRA


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def save_training_checkpoint(output_dir: str, epoch: int, model: nn.Module, optimizer, scheduler,
                             scaler, config_dump: str, extra: Optional[Dict[str, Any]] = None) -> str:
    """``ckpt_epoch_{epoch}.pth`` with model, optimizer, scheduler, scaler, epoch and the config as YAML."""
    state = {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
             "lr_scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler is not None else {},
             "epoch": epoch, "config": config_dump}
    state.update(extra or {})
    path = os.path.join(output_dir, f"ckpt_epoch_{epoch}.pth")
    atomic_torch_save(state, path)
    return path


def latest_checkpoint(output_dir: str) -> Optional[str]:
    """Newest ``ckpt_epoch_N.pth`` in ``output_dir`` by N (temporary files are never matched)."""
    found = []
    for path in glob.glob(os.path.join(output_dir, "ckpt_epoch_*.pth")):
        match = _EPOCH_FILE.search(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def save_final(output_dir: str, model: nn.Module, config_dump: str) -> str:
    """``ckpt_final.pth`` in the official release layout: ``{"model": state_dict}`` (plus the config)."""
    path = os.path.join(output_dir, FINAL_NAME)
    atomic_torch_save({"model": unwrap(model).state_dict(), "config": config_dump}, path)
    return path
