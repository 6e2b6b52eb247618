"""Accuracy over a loader for any predictor (PyTorch model, ONNX Runtime session, TensorRT engine)."""
from __future__ import annotations

import time
from typing import Callable, Dict

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from distributed import all_reduce_sum, rank
from utils import metrics_dict


class AccuracyMeter:
    """Sums of correct top-1/top-5, cross-entropy and images; reduced over ranks at the end."""

    def __init__(self) -> None:
        self.sums = torch.zeros(4, dtype=torch.float64)  # top1, top5, loss, images

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        logits = logits.float().cpu()
        target = target.cpu()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        correct = top.eq(target[:, None])
        self.sums += torch.tensor([correct[:, :1].sum().item(), correct.sum().item(),
                                   F.cross_entropy(logits, target, reduction="sum").item(), len(target)],
                                  dtype=torch.float64)

    def result(self, seconds: float) -> Dict[str, float]:
        top1, top5, loss, n = all_reduce_sum(self.sums).tolist()
        n = max(n, 1)
        return metrics_dict(100.0 * top1 / n, 100.0 * top5 / n, loss / n, int(n), n / max(seconds, 1e-9))


def evaluate(predict: Callable[[torch.Tensor], torch.Tensor], loader: DataLoader, desc: str = "eval") -> Dict[str, float]:
    """Run ``predict(images) -> logits`` over ``loader``; returns the metrics dict.

    images/s counts the whole loop (data loading included), summed over ranks.
    """
    meter = AccuracyMeter()
    start = time.perf_counter()
    for images, target in tqdm(loader, desc=desc, disable=rank() != 0, leave=False):
        meter.update(predict(images), target)
    return meter.result(time.perf_counter() - start)


@torch.no_grad()
def evaluate_model(model: nn.Module, loader: DataLoader, device: torch.device, amp: bool = False,
                   desc: str = "eval") -> Dict[str, float]:
    """Accuracy of a PyTorch model; AMP (FP16 autocast) only on CUDA."""
    model.eval()
    use_amp = amp and device.type == "cuda"

    def predict(images: torch.Tensor) -> torch.Tensor:
        images = images.to(device, non_blocking=True)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
            return model(images)

    return evaluate(predict, loader, desc)
