"""Swin models: our export-friendly implementations and their checkpoint loading."""
from swin_trt.models.build import build_model
from swin_trt.models.checkpoint import load_weights

__all__ = ["build_model", "load_weights"]
