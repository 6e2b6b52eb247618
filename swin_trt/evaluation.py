"""Accuracy over a loader for any predictor (PyTorch model, ONNX Runtime session, TensorRT engine).

Nothing here talks to other ranks unless the caller asks by name: a metric
helper that hid a collective would hang (NCCL) or crash (gloo) the moment
only one rank evaluates, as rank 0 does when it checks the file it exported.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from swin_trt.distributed import all_reduce_sum, rank
from swin_trt.logs import progress
from swin_trt.models.constants import frozen_constants
from swin_trt.tables import metrics_dict


class AccuracyMeter:
    """Sums of correct top-1/top-5, cross-entropy and images seen by this process; per class too when the model
    names its classes.

    Args:
        label_names: the class names in logit order (MODEL.LABEL_NAMES); empty: no per-class counts.
    """

    def __init__(self, label_names: Sequence[str] = ()) -> None:
        self.sums = torch.zeros(4, dtype=torch.float64)  # top1, top5, loss, images
        self.label_names = list(label_names)
        self.per_class = torch.zeros(len(self.label_names), 2, dtype=torch.float64)  # images, top-1 correct

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        logits = logits.float().cpu()
        target = target.cpu()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        correct = top.eq(target[:, None])
        self.sums += torch.tensor([correct[:, :1].sum().item(), correct.sum().item(),
                                   F.cross_entropy(logits, target, reduction="sum").item(), len(target)],
                                  dtype=torch.float64)
        if self.label_names:
            self.per_class.index_add_(0, target, torch.stack([torch.ones(len(target), dtype=torch.float64),
                                                              correct[:, 0].double()], dim=1))

    def all_reduce(self) -> "AccuracyMeter":
        """Sum the counts over all ranks, in place; a collective: every rank must call it (no-op outside torchrun)."""
        self.sums = all_reduce_sum(self.sums)
        if self.label_names:
            self.per_class = all_reduce_sum(self.per_class)
        return self

    def result(self, seconds: float) -> Dict[str, Any]:
        """Metrics of the counts held now (this process's, unless :meth:`all_reduce` ran); with label names also
        ``classes``: ``{"class", "images", "acc1"}`` of every class that had images, in class order."""
        top1, top5, loss, n = self.sums.tolist()
        n = max(n, 1)
        extra = {"classes": self.class_rows()} if self.label_names else {}
        return metrics_dict(100.0 * top1 / n, 100.0 * top5 / n, loss / n, int(n), n / max(seconds, 1e-9), **extra)

    def class_rows(self) -> List[Dict[str, Any]]:
        return [{"class": name, "images": int(images), "acc1": 100.0 * correct / images}
                for name, (images, correct) in zip(self.label_names, self.per_class.tolist()) if images]


def evaluate(predict: Callable[[torch.Tensor], torch.Tensor], loader: DataLoader, desc: str = "eval",
             over_ranks: bool = False, label_names: Sequence[str] = ()) -> Dict[str, Any]:
    """Run ``predict(images) -> logits`` over ``loader``; returns the metrics dict.

    Args:
        predict: images -> logits.
        loader: labelled images (this rank's shard when ``over_ranks``).
        desc: progress-bar label.
        over_ranks: sum the counts over all ranks at the end, so the metrics cover every shard. A
            collective: every rank must call ``evaluate`` with ``over_ranks=True`` and its own shard.
        label_names: the model's class names: the metrics then hold each class's Acc@1 (``classes``).

    images/s counts the whole loop (data loading included), summed over ranks when ``over_ranks``.
    """
    meter = AccuracyMeter(label_names)
    start = time.perf_counter()
    for images, target in progress(loader, desc, rank()):
        meter.update(predict(images), target)
    seconds = time.perf_counter() - start
    if over_ranks:
        meter.all_reduce()
    return meter.result(seconds)


@torch.no_grad()
def evaluate_model(model: nn.Module, loader: DataLoader, device: torch.device, amp: bool = False,
                   desc: str = "eval", over_ranks: bool = False, label_names: Sequence[str] = ()) -> Dict[str, Any]:
    """Accuracy of a PyTorch model; AMP (FP16 autocast) only on CUDA; ``over_ranks`` and ``label_names`` as in
    :func:`evaluate`.

    Weight-only functions (Swin V2's logit scale and position bias) are computed once for the whole loop.
    """
    model.eval()
    use_amp = amp and device.type == "cuda"

    def predict(images: torch.Tensor) -> torch.Tensor:
        images = images.to(device, non_blocking=True)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
            return model(images)

    with frozen_constants(model):
        return evaluate(predict, loader, desc, over_ranks, label_names)
