"""Quantized checkpoints: ModelOpt state + weights (+ QAT training state) in one file, written atomically.

Layout (loads with ``torch.load(..., weights_only=True)``)::

    {"model": state_dict,                 # weights and quantizer amax buffers
     "modelopt_state": ...,               # mto.modelopt_state(model): which quantizers, their formats
     "quant": {"format", "calib_method", "sites"},
     "epoch": last finished QAT epoch (-1 after calibration only),
     "optimizer", "lr_scheduler", "scaler",   # QAT state, to resume
     "metrics": {...}, "config": YAML dump}

Restoring rebuilds the quantizers on a freshly built model with
``mto.restore_from_modelopt_state`` and then loads the state dict strictly.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional

import modelopt.torch.opt as mto
import torch.nn as nn

from swin_trt.checkpoint_file import load_checkpoint_file
from swin_trt.errors import UserError
from swin_trt.files import atomic_torch_save
from swin_trt.logs import third_party_output
from swin_trt.quant.quantize import enabled_quantizers, is_quantized, register_quant_modules
from swin_trt.training.checkpoints import unwrap

_LOG = logging.getLogger("swin")
STATE_KEY = "modelopt_state"


def is_quant_checkpoint(checkpoint: Any) -> bool:
    """True for a dict written by :func:`save_quant_checkpoint` (it holds a ModelOpt state)."""
    return isinstance(checkpoint, dict) and STATE_KEY in checkpoint


def save_quant_checkpoint(path: str, model: nn.Module, quant_info: Dict[str, Any], epoch: int = -1,
                          trainer_state: Optional[Dict[str, Any]] = None, metrics: Optional[Dict[str, Any]] = None,
                          config_dump: str = "") -> str:
    """Write the quantized ``model`` (DDP/compile wrappers are unwrapped) to ``path`` atomically.

    Args:
        path: destination .pth (its folder must exist).
        model: the quantized model.
        quant_info: format, calibration method and the like, kept for the reader.
        epoch: last finished QAT epoch; -1 for a calibrated-only (PTQ) model.
        trainer_state: optimizer/scheduler/scaler state from ``QATFineTuner.state_dict()``.
        metrics: evaluation results to keep with the weights.
        config_dump: the config as YAML.
    """
    model = unwrap(model)
    if not is_quantized(model):
        raise ValueError("save_quant_checkpoint needs a quantized model")
    state = {"model": model.state_dict(), STATE_KEY: mto.modelopt_state(model),
             "quant": {**quant_info, "sites": enabled_quantizers(model)}, "epoch": int(epoch),
             "metrics": metrics or {}, "config": config_dump}
    state.update(trainer_state or {})
    atomic_torch_save(state, path)
    _LOG.info("saved %s", path)
    return path


def load_quant_checkpoint(model: nn.Module, path: str) -> Dict[str, Any]:
    """Rebuild the quantizers of ``path`` on ``model`` (freshly built, plain) and load its weights.

    Returns:
        the checkpoint dict (for ``epoch``, ``quant`` and the QAT training state).

    Raises:
        UserError: the file is not a quantized checkpoint, or it does not fit this model/config.
    """
    checkpoint = load_checkpoint_file(path)
    if not is_quant_checkpoint(checkpoint):
        raise UserError(f"checkpoint {path} holds no quantization state (a plain weights file): "
                        "pass --quantize to calibrate it first, "
                        "or resume from a *_qat.pth / *_ptq.pth written by swin_quant_flow.py.")
    register_quant_modules()
    try:
        with third_party_output("modelopt"):
            mto.restore_from_modelopt_state(model, checkpoint[STATE_KEY])
    except Exception:  # ModelOpt raises ApplyModeError/KeyError/ValueError for a state of another model
        raise UserError(f"quantized checkpoint {path} does not fit this model/config (its quantizers sit on layers "
                        "this model does not have): pass the config it was made with.") from None
    try:
        model.load_state_dict(checkpoint["model"], strict=True)
    except RuntimeError as err:  # "Error(s) in loading state_dict ...:" then one line per problem
        lines = [line.strip() for line in str(err).splitlines()[1:] if line.strip()]
        reason = lines[0][:200] if lines else "weights do not match"
        raise UserError(f"quantized checkpoint {path} does not fit this model/config ({reason}): "
                        "pass the config it was made with.") from None
    return checkpoint
