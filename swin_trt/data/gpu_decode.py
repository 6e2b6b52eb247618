"""Evaluation images decoded on the GPU: workers only read files, nvJPEG decodes, one batched resize.

For machines whose CPUs cannot decode as fast as the engine consumes. Worker
processes read the files' bytes (cheap); the main process hands a whole batch
to ``torchvision.io.decode_jpeg(list, device="cuda")`` (nvJPEG's batched
decoder, which uses the GPU's hardware JPEG engines where it has them) and
resizes + crops the decoded images in one pair of batched matrix products
(data/resize_matrices.py), then normalises, on a side stream in a producer
thread that runs up to two batches ahead of the caller.
"""
from __future__ import annotations

import contextlib
import queue
import threading
from typing import Iterator, List, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_jpeg, read_file

from swin_trt.data.fast_loader import GpuPrefetcher, decode_rgb
from swin_trt.data.resize_matrices import BatchResizer
from swin_trt.data.workers import worker_processes


class EncodedDataset(Dataset):
    """``(path, label)`` samples -> ``(file bytes as a uint8 tensor, label, path)``: the workers only read."""

    def __init__(self, samples: Sequence[Tuple[str, int]]) -> None:
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int, str]:
        path, label = self.samples[index]
        return read_file(path), label, path


def _collate_encoded(batch: List[Tuple[torch.Tensor, int, str]]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, List[str]]:
    # one tensor per batch: hundreds of small shared tensors would exhaust the workers' file descriptors
    lengths = torch.tensor([len(b[0]) for b in batch])
    return torch.cat([b[0] for b in batch]), lengths, torch.tensor([b[1] for b in batch]), [b[2] for b in batch]


def build_encoded_loader(samples: Sequence[Tuple[str, int]], batch_size: int, num_workers: int,
                         prefetch_factor: int = 4) -> DataLoader:
    """Ordered loader of ``(concatenated file bytes, byte lengths, labels, paths)`` for :class:`GpuDecodePrefetcher`."""
    num_workers = worker_processes(num_workers)
    extra = {"prefetch_factor": prefetch_factor, "persistent_workers": True} if num_workers > 0 else {}
    return DataLoader(EncodedDataset(samples), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      collate_fn=_collate_encoded, **extra)


class GpuDecodePrefetcher(GpuPrefetcher):
    """Like :class:`GpuPrefetcher`, but JPEG decoding and resizing run on ``device``, one batch ahead.

    Files nvJPEG cannot decode (PNG, CMYK JPEG...) are decoded on the CPU instead. The resize is
    computed in float and clamped to [0, 255]; the CPU path rounds to uint8, so the two differ by rounding.

    Args:
        loader: from :func:`build_encoded_loader`.
        device: a CUDA device (the CPU works too, for tests).
        size, crop_pct, interpolation: evaluation geometry (see ``data.fast_loader.resize_for_eval``).
        mean, std, dtype: as for :class:`GpuPrefetcher`.
        background: decode in a producer thread, up to ``depth`` batches ahead (else one batch ahead, inline).
    """

    def __init__(self, loader: DataLoader, device: torch.device, size: int, crop_pct: float, interpolation: str,
                 mean: Sequence[float], std: Sequence[float], dtype: torch.dtype = torch.float32,
                 background: bool = True, depth: int = 2) -> None:
        super().__init__(loader, device, mean, std, dtype)
        self.resize = BatchResizer(size, crop_pct, interpolation, self.device)
        self.background, self.depth = background, depth

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        if not self.background:
            yield from super().__iter__()
            return
        # A producer thread decodes up to ``depth`` batches ahead. nvJPEG waits for its own stream, and while the
        # caller's model fills the GPU that wait would otherwise stall the caller's next launches too.
        ready: "queue.Queue" = queue.Queue(maxsize=self.depth)
        stop = threading.Event()

        def hand_over(item) -> bool:
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                side = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
                for batch in self.loader:
                    with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
                        images, target = self._prepare(batch)
                        done = torch.cuda.Event() if side is not None else None
                        if done is not None:
                            done.record(side)
                    if not hand_over((images, target, done)):
                        return
                hand_over(None)
            except BaseException as err:  # the caller re-raises it
                hand_over(err)

        thread = threading.Thread(target=produce, name="gpu-decode", daemon=True)
        thread.start()
        try:
            while True:
                item = ready.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                images, target, done = item
                if done is not None:
                    current = torch.cuda.current_stream(self.device)
                    current.wait_event(done)
                    images.record_stream(current)
                yield images, target
        finally:
            stop.set()

    def _decode(self, encoded: List[torch.Tensor], paths: List[str]) -> List[torch.Tensor]:
        try:
            return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError:  # a file nvJPEG does not take: one by one, falling back to the CPU
            images = []
            for data, path in zip(encoded, paths):
                try:
                    images.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device))
                except RuntimeError:
                    images.append(decode_rgb(path).to(self.device, non_blocking=True))
            return images

    def _prepare(self, batch) -> Tuple[torch.Tensor, torch.Tensor]:
        data, lengths, target, paths = batch
        encoded = list(torch.split(data, lengths.tolist()))  # one 1-D uint8 tensor per file
        images = self.resize(self._decode(encoded, paths))  # B, 3, size, size in [0, 255]
        return torch.addcmul(self.shift, images, self.scale).to(self.dtype), target
