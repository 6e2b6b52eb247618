"""AdamW with the original's parameter groups (no weight decay on norms, biases and position tables)."""
from __future__ import annotations

import torch
import torch.nn as nn
from yacs.config import CfgNode


def parameter_groups(model: nn.Module, weight_decay: float) -> list:
    """Two groups: decayed weights, and 1-d parameters / biases / names the model lists as no-decay."""
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    skip_keywords = set(getattr(model, "no_weight_decay_keywords", lambda: set())())
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim == 1 or name.endswith(".bias") or name in skip or any(k in name for k in skip_keywords):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(config: CfgNode, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """AdamW over :func:`parameter_groups` at learning rate ``lr``."""
    o = config.TRAIN.OPTIMIZER
    return torch.optim.AdamW(parameter_groups(model, config.TRAIN.WEIGHT_DECAY), lr=lr, eps=o.EPS,
                             betas=tuple(o.BETAS))
