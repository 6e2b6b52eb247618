"""GPU throughput measurement: CUDA events, warm-up, median over repeats."""
from __future__ import annotations

import statistics
from typing import Callable

import torch


def cuda_images_per_s(step: Callable[[], object], batch: int, warmup: int = 10, iters: int = 30, repeats: int = 5) -> float:
    """Median images/s of ``step()`` (one batch of ``batch`` images) timed with CUDA events."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    rates = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            step()
        end.record()
        torch.cuda.synchronize()
        rates.append(batch * iters / (start.elapsed_time(end) / 1000.0))
    return statistics.median(rates)
