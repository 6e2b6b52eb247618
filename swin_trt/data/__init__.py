"""Data: ImageFolder loading with the original's transforms, and the embedded digits dataset."""
from swin_trt.data.build import build_dataset, build_loader, build_mixup

__all__ = ["build_dataset", "build_loader", "build_mixup"]
