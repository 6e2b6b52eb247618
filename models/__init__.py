"""Swin models: our export-friendly implementations and their checkpoint loading."""
from models.build import build_model
from models.checkpoint import load_weights

__all__ = ["build_model", "load_weights"]
