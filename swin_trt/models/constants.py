"""Weight-only functions of a model (Swin V2's logit scale and position bias) as constants, for export and inference.

A module that computes something from its weights alone on every forward offers ``freeze_constants()`` and
``thaw_constants()``. Inside :func:`frozen_constants` those values are plain tensors computed once: a traced export
records them as initializers instead of the computation, and an inference loop skips it. Training never freezes.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch.nn as nn


@contextlib.contextmanager
def frozen_constants(model: nn.Module) -> Iterator[nn.Module]:
    """Within: every weight-only function of ``model`` is a constant tensor (computed on entry, dropped on exit)."""
    modules = [m for m in model.modules() if hasattr(m, "freeze_constants")]
    for module in modules:
        module.freeze_constants()
    try:
        yield model
    finally:
        for module in modules:
            module.thaw_constants()
