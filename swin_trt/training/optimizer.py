"""The optimizer of TRAIN.OPTIMIZER.NAME (AdamW or SGD, as the original) over the original's parameter groups
(no weight decay on norms, biases and position tables)."""
from __future__ import annotations

import torch
import torch.nn as nn
from yacs.config import CfgNode

from swin_trt.errors import UserError


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


OPTIMIZERS = ("adamw", "sgd")


def build_optimizer(config: CfgNode, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """AdamW (eps, betas) or SGD (Nesterov momentum) over :func:`parameter_groups` at learning rate ``lr``.

    Raises:
        UserError: TRAIN.OPTIMIZER.NAME is neither.
    """
    o = config.TRAIN.OPTIMIZER
    groups = parameter_groups(model, config.TRAIN.WEIGHT_DECAY)
    name = o.NAME.lower()
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, eps=o.EPS, betas=tuple(o.BETAS))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=o.MOMENTUM, nesterov=True)
    raise UserError(f"TRAIN.OPTIMIZER.NAME {o.NAME!r} is not known: use one of {', '.join(OPTIMIZERS)}.")
