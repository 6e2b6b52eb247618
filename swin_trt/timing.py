"""Throughput measurement: CUDA events around back-to-back calls on a GPU (median over repeats), wall clock on the CPU."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, List

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


def cpu_median_ms(run: Callable[[], Any], warmup: int, iters: int, max_seconds: float = 30.0) -> float:
    """Median wall-clock milliseconds of ``run()`` over ``iters`` calls, stopping after ``max_seconds``
    once 3 calls are timed (a CPU cell of Swin-T at batch 256 takes seconds per call)."""
    for _ in range(warmup):
        run()
    times: List[float] = []
    start = time.perf_counter()
    while len(times) < max(iters, 1):
        if len(times) >= 3 and time.perf_counter() - start > max_seconds:
            break
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)
