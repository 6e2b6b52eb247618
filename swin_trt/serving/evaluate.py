"""Accuracy and throughput of a served classifier over an image folder, with N requests in flight.

An ensemble gets each image's file bytes as they are on disk (the server decodes and preprocesses them); a
classifier gets the tensors of the project's own evaluation loader. Each of ``concurrency`` threads holds its
own client; the main thread reads the next batch while the requests are out, and keeps at most
``concurrency`` of them in flight. Results are taken in order, so the counts do not depend on timing.
"""
from __future__ import annotations

import collections
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from yacs.config import CfgNode

from swin_trt.data import build_loader
from swin_trt.data.image_folder import list_images
from swin_trt.errors import UserError
from swin_trt.evaluation import AccuracyMeter
from swin_trt.logs import progress
from swin_trt.serving.client import ServedClassifier

Batch = Tuple[np.ndarray, np.ndarray]  # request payload, labels


def encoded_batches(folder: str, batch_size: int, max_images: Optional[int] = None,
                    label_names: Sequence[str] = ()) -> Iterator[Batch]:
    """(N, 1) arrays of file bytes and their labels, over an ImageFolder tree in its order (labels by name where the
    model names its classes: ``data.image_folder.class_index``)."""
    samples = list_images(folder, label_names)[:max_images]
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        payload = np.empty((len(chunk), 1), dtype=object)  # N, 1
        for row, (path, _) in enumerate(chunk):
            with open(path, "rb") as f:
                payload[row, 0] = f.read()
        yield payload, np.array([label for _, label in chunk], dtype=np.int64)


def tensor_batches(config: CfgNode, batch_size: int, num_workers: Optional[int] = None,
                   max_images: Optional[int] = None) -> Iterator[Batch]:
    """(N, C, H, W) float32 images of the evaluation loader and their labels."""
    sent = 0
    for images, labels in build_loader(config, "val", batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                       shard=False):
        if max_images is not None:
            images, labels = images[:max_images - sent], labels[:max_images - sent]
        if len(labels) == 0:
            return
        sent += len(labels)
        yield images.numpy(), labels.numpy()


class _Clients:
    """One client per worker thread, all closed at the end."""

    def __init__(self, served: ServedClassifier) -> None:
        self.served = served
        self.local = threading.local()
        self.made: List[Any] = []
        self.lock = threading.Lock()

    def infer(self, payload: np.ndarray) -> Tuple[np.ndarray, float]:
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = self.served.new_client()
            with self.lock:
                self.made.append(client)
        start = time.perf_counter()
        logits = self.served.infer(client, payload)
        return logits, time.perf_counter() - start

    def close(self) -> None:
        for client in self.made:
            client.close()


def evaluate_served(served: ServedClassifier, config: CfgNode, batch_size: int = 1, concurrency: int = 1,
                    num_workers: Optional[int] = None, max_images: Optional[int] = None) -> Dict[str, Any]:
    """Metrics dict of ``served`` on DATA.DATA_PATH/val: acc1, acc5, loss, images, images_per_s, and the requests'
    latency (``latency_p50_ms``, ``latency_p99_ms``: from sending a request to having its logits).

    Raises:
        UserError: the model does not fit the config, a batch above its max_batch_size, or the server failed a
            request.
    """
    served.check_config(config)
    if batch_size > served.max_batch_size:
        raise UserError(f"--batch-size {batch_size} is above max_batch_size {served.max_batch_size} of model "
                        f"{served.model} at {served.url}: pass at most {served.max_batch_size}.")
    folder = os.path.join(config.DATA.DATA_PATH, "val")
    batches = encoded_batches(folder, batch_size, max_images, config.MODEL.LABEL_NAMES) if served.takes_images else \
        tensor_batches(config, batch_size, num_workers, max_images)
    meter, latencies = AccuracyMeter(), []
    clients = _Clients(served)
    pending: collections.deque = collections.deque()

    def collect(item: Tuple[Future, np.ndarray]) -> None:
        future, labels = item
        logits, seconds = future.result()
        meter.update(torch.from_numpy(np.array(logits, dtype=np.float32)), torch.from_numpy(labels))  # a writable copy
        latencies.append(seconds)

    start = time.perf_counter()
    try:
        with ThreadPoolExecutor(concurrency, thread_name_prefix="triton") as pool:
            try:
                for payload, labels in progress(batches, f"triton {served.model}"):
                    pending.append((pool.submit(clients.infer, payload), labels))
                    if len(pending) >= concurrency:
                        collect(pending.popleft())
                while pending:
                    collect(pending.popleft())
            finally:
                for future, _ in pending:
                    future.cancel()
    finally:
        clients.close()
    seconds = time.perf_counter() - start
    metrics = meter.result(seconds)
    latency_ms = np.asarray(latencies) * 1e3
    metrics.update(model=served.model, url=served.url, protocol=served.protocol, inputs="images" if served.takes_images
                   else "tensors", batch_size=batch_size, concurrency=concurrency, requests=len(latencies),
                   latency_p50_ms=float(np.percentile(latency_ms, 50)) if len(latency_ms) else 0.0,
                   latency_p99_ms=float(np.percentile(latency_ms, 99)) if len(latency_ms) else 0.0)
    return metrics
