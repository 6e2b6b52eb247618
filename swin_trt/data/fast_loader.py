"""Evaluation images at GPU speed: decode and resize in worker processes, normalise on the GPU.

Workers decode each file with libjpeg-turbo/libpng (``torchvision.io``) and
resize it as a uint8 tensor, the same steps as the evaluation transform in
data/transforms.py (resize the short side by 256/224, centre crop) but without
PIL and without converting to float on the CPU. Batches of uint8 images (a
quarter of the bytes of float32) come back in pinned memory;
:class:`GpuPrefetcher` copies the next batch to the GPU on a side CUDA stream
and normalises it there while the current batch is being computed.

:class:`data.gpu_decode.GpuDecodePrefetcher` is the alternative for machines whose
CPUs cannot keep up: workers only read the files, JPEGs are decoded with nvJPEG
and the whole batch is resized on the GPU at once.
"""
from __future__ import annotations

import logging
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2 import functional as F

from swin_trt.data.bad_images import BadImage, ImageLoader
from swin_trt.data.image_folder import list_images
from swin_trt.data.transforms import EVAL_CROP_PCT, INTERPOLATION, NO_CROP, eval_crop_pct, eval_resize_size
from swin_trt.errors import UserError

_LOG = logging.getLogger("swin")


def read_rgb(path: str) -> Union[torch.Tensor, BadImage]:
    """A file as a uint8 RGB tensor (3, H, W), or a :class:`BadImage` when it cannot be decoded.

    Formats torchvision cannot decode go through PIL.
    """
    try:
        return decode_image(read_file(path), mode=ImageReadMode.RGB)
    except RuntimeError:
        pass
    try:
        import numpy as np
        from PIL import Image

        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
        return torch.from_numpy(array.copy()).permute(2, 0, 1)  # 3, H, W
    except OSError as err:
        return BadImage(path, str(err) or type(err).__name__)


def decode_rgb(path: str) -> torch.Tensor:
    """:func:`read_rgb`, for callers in the main process.

    Raises:
        UserError: the file cannot be decoded, naming it.
    """
    image = read_rgb(path)
    if isinstance(image, BadImage):
        raise UserError(f"image {path} cannot be decoded ({image.reason}): remove or replace it.")
    return image


def resize_for_eval(image: torch.Tensor, size: int, crop_pct: float = EVAL_CROP_PCT,
                    interpolation: str = "bicubic") -> torch.Tensor:
    """Evaluation geometry on a uint8 image (3, H, W) -> (3, size, size).

    ``crop_pct`` below 1: short side to :func:`data.transforms.eval_resize_size` then a centre crop (TEST.CROP True);
    1.0: a plain resize to ``size`` x ``size``.
    """
    mode = INTERPOLATION[interpolation]
    if crop_pct < NO_CROP:
        image = F.resize(image, [eval_resize_size(size, crop_pct)], interpolation=mode, antialias=True)
        return F.center_crop(image, [size, size])  # 3, size, size
    return F.resize(image, [size, size], interpolation=mode, antialias=True)  # 3, size, size


class UInt8EvalDataset(Dataset):
    """``(path, label)`` samples -> ``(uint8 image (3, size, size), label)``; a :class:`BadImage` for an unreadable file.

    Args:
        samples: pairs as in ``ImageFolder.samples``.
        size: output side.
        crop_pct: the evaluation crop (see :func:`resize_for_eval`).
        interpolation: DATA.INTERPOLATION.
    """

    def __init__(self, samples: Sequence[Tuple[str, int]], size: int, crop_pct: float = EVAL_CROP_PCT,
                 interpolation: str = "bicubic") -> None:
        if interpolation not in INTERPOLATION:
            raise UserError(f"DATA.INTERPOLATION {interpolation!r} is not known: use bicubic or bilinear.")
        self.samples = list(samples)
        self.size, self.crop_pct, self.interpolation = size, crop_pct, interpolation

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Union[Tuple[torch.Tensor, int], BadImage]:
        path, label = self.samples[index]
        image = read_rgb(path)  # a BadImage is decided on in the main process by ImageLoader, not raised in a worker
        if isinstance(image, BadImage):
            return image
        return resize_for_eval(image, self.size, self.crop_pct, self.interpolation), label


def build_uint8_loader(samples: Sequence[Tuple[str, int]], size: int, batch_size: int, num_workers: int,
                       crop_pct: float = EVAL_CROP_PCT, interpolation: str = "bicubic", prefetch_factor: int = 4,
                       on_bad_image: str = "fail") -> ImageLoader:
    """Ordered loader of uint8 batches (B, 3, size, size), pinned when a GPU is present; DATA.ON_BAD_IMAGE applies."""
    dataset = UInt8EvalDataset(samples, size, crop_pct, interpolation)
    extra = {"prefetch_factor": prefetch_factor, "persistent_workers": True} if num_workers > 0 else {}
    return ImageLoader(dataset, on_bad_image, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                       pin_memory=torch.cuda.is_available(), drop_last=False, **extra)


def eval_samples(config) -> List[Tuple[str, int]]:
    """``(path, label)`` of DATA.DATA_PATH/val, listed without opening the images."""
    import os

    return list_images(os.path.join(config.DATA.DATA_PATH, "val"), config.MODEL.LABEL_NAMES)


def build_fast_eval_loader(config, batch_size: Optional[int] = None, num_workers: Optional[int] = None) -> ImageLoader:
    """The validation split of ``config`` (DATA.DATA_PATH/val) as a uint8 loader."""
    return build_uint8_loader(eval_samples(config), config.DATA.IMG_SIZE, batch_size or config.DATA.BATCH_SIZE,
                              config.DATA.NUM_WORKERS if num_workers is None else num_workers,
                              eval_crop_pct(config), config.DATA.INTERPOLATION, on_bad_image=config.DATA.ON_BAD_IMAGE)


class GpuPrefetcher:
    """Iterate a uint8 loader as normalised batches on ``device``, one batch ahead.

    Batch i+1 is copied (from pinned memory, ``non_blocking``) and normalised on a
    side stream while the caller computes on batch i; the caller's stream waits
    on an event before it sees a batch. On the CPU the same arithmetic runs inline.

    Args:
        loader: yields ``(uint8 images (B, 3, H, W), labels (B,))``.
        device: where the images go.
        mean, std: per-channel normalisation in [0, 1] units (DATA.MEAN, DATA.STD).
        dtype: dtype of the yielded images (the engine's or model's input dtype).
    """

    def __init__(self, loader: DataLoader, device: torch.device, mean: Sequence[float], std: Sequence[float],
                 dtype: torch.dtype = torch.float32) -> None:
        self.loader, self.device, self.dtype = loader, torch.device(device), dtype
        self.scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=self.device).view(1, 3, 1, 1)  # 1, 3, 1, 1
        self.shift = torch.tensor([-m / s for m, s in zip(mean, std)], device=self.device).view(1, 3, 1, 1)  # 1, 3, 1, 1

    def __len__(self) -> int:
        return len(self.loader)

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, images.to(self.device, non_blocking=True), self.scale).to(self.dtype)

    def _prepare(self, batch) -> Tuple[torch.Tensor, torch.Tensor]:
        """One loader batch -> (normalised images on the device, labels); runs on the side stream."""
        images, target = batch
        return self._normalise(images), target

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        if self.device.type != "cuda":
            for batch in self.loader:
                yield self._prepare(batch)
            return
        side = torch.cuda.Stream(self.device)
        batches = iter(self.loader)

        def start_next() -> Optional[Tuple[torch.Tensor, torch.Tensor, torch.cuda.Event]]:
            try:
                batch = next(batches)
            except StopIteration:
                return None
            with torch.cuda.stream(side):
                images, target = self._prepare(batch)
                ready = torch.cuda.Event()
                ready.record(side)
            return images, target, ready

        pending = start_next()
        while pending is not None:
            images, target, ready = pending
            current = torch.cuda.current_stream(self.device)
            current.wait_event(ready)
            images.record_stream(current)
            pending = start_next()
            yield images, target


def sample_list(root: str) -> List[Tuple[str, int]]:
    """``(path, label)`` pairs of an ImageFolder tree, without opening the images."""
    return list_images(root)
