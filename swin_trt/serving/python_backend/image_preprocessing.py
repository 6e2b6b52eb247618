"""Encoded image bytes -> the normalised tensor a classifier takes, as its preprocessing contract says.

The same geometry and arithmetic as the evaluation transform (swin_trt/data/transforms.py, built from
torchvision): decode with Pillow and convert to RGB; with a crop (``crop_pct`` < 1) resize the short side to
``floor(size / crop_pct)`` (data/transforms.py's ``eval_resize_size``) and the long side in proportion (truncated), then cut the centre ``size`` x ``size``
(offsets rounded half to even, as Python's ``round``); without, resize to ``size`` x ``size``. An image already
of the target size is not resampled. Pixels become float32 / 255, then ``(x - mean) / std`` per channel in float32.
Only numpy and Pillow: this file runs inside Triton's Python backend too.
"""
from __future__ import annotations

import io
from typing import Mapping, Sequence, Tuple

import numpy as np
from PIL import Image

# the contract's interpolation -> Pillow filter; "random" (a training setting) evaluates bicubic
RESAMPLING = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
              "random": Image.Resampling.BICUBIC}


def resized_size(width: int, height: int, size: int, crop_pct: float) -> Tuple[int, int]:
    """(width, height) the image is resized to before the centre crop."""
    if crop_pct >= 1.0:
        return size, size
    short_target = int(size / crop_pct + 1e-6)  # as eval_resize_size: a ratio a hair under its integer is that integer
    if width <= height:
        return short_target, int(short_target * height / width)
    return int(short_target * width / height), short_target


def centre_box(width: int, height: int, size: int) -> Tuple[int, int, int, int]:
    """(left, top, right, bottom) of the centre ``size`` x ``size`` square."""
    left = int(round((width - size) / 2.0))
    top = int(round((height - size) / 2.0))
    return left, top, left + size, top + size


def preprocess_image(data: bytes, size: int, crop_pct: float, interpolation: str, mean: Sequence[float],
                     std: Sequence[float]) -> np.ndarray:
    """One encoded image (JPEG, PNG, ... anything Pillow reads) -> float32 array (3, size, size).

    Raises:
        ValueError: the bytes are not an image Pillow can decode.
    """
    try:
        with Image.open(io.BytesIO(data)) as opened:
            image = opened.convert("RGB")
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"not a decodable image ({err})") from None
    target = resized_size(image.width, image.height, size, crop_pct)
    if target != image.size:
        image = image.resize(target, RESAMPLING[interpolation])
    if crop_pct < 1.0:
        image = image.crop(centre_box(image.width, image.height, size))
    pixels = np.asarray(image, dtype=np.uint8).astype(np.float32) / np.float32(255)  # H, W, 3
    mean32 = np.asarray(mean, dtype=np.float32)
    std32 = np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(((pixels - mean32) / std32).transpose(2, 0, 1))  # 3, H, W


def preprocess_batch(images: Sequence[bytes], contract: Mapping) -> np.ndarray:
    """A batch of encoded images -> float32 (N, 3, H, W), with the fields of a preprocessing contract
    (``input_size``, ``crop_pct``, ``interpolation``, ``mean``, ``std``)."""
    size = int(contract["input_size"][1])
    return np.stack([preprocess_image(data, size, float(contract["crop_pct"]), contract["interpolation"],
                                      contract["mean"], contract["std"]) for data in images])  # N, 3, H, W
