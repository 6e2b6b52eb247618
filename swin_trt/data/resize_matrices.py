"""The evaluation resize + centre crop as two matrix products, so a whole batch of differently sized images resizes at once.

Resizing is linear and separable: for an image ``X`` (H, W) the resized and
cropped image is ``Rh.T @ X @ Rw`` with ``Rh`` (H, size) and ``Rw`` (W, size).
The matrices are not derived by hand: each is torchvision's own resize
(``transforms.v2.functional.resize``, antialiased) applied to the identity, so
they reproduce data/fast_loader.py's :func:`resize_for_eval` in float
arithmetic. Matrices are cached per source shape (a photo collection has few
distinct ones). :class:`BatchResizer` pads a list of images into one batch and
zero-pads the matrices, so the padding never reaches the output.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
from torchvision.transforms.v2 import functional as F

from swin_trt.data.transforms import INTERPOLATION, NO_CROP, eval_resize_size
from swin_trt.errors import UserError


def _axis_matrix(length: int, resized: int, mode: F.InterpolationMode) -> torch.Tensor:
    """(length, resized): row i is the unit impulse at i resized along one axis, i.e. the resampling weights."""
    impulses = torch.eye(length, dtype=torch.float64).view(length, 1, 1, length)  # length, 1, 1, length
    return F.resize(impulses, [1, resized], interpolation=mode, antialias=True).view(length, resized)


def _crop_start(resized: int, size: int) -> int:
    return int(round((resized - size) / 2.0))  # transforms.v2.functional.center_crop's rounding


def eval_resize_matrices(height: int, width: int, size: int, crop_pct: float,
                         interpolation: str = "bicubic") -> Tuple[torch.Tensor, torch.Tensor]:
    """``(Rh (height, size), Rw (width, size))`` with ``Rh.T @ X @ Rw == resize_for_eval(X)`` up to rounding."""
    mode = INTERPOLATION[interpolation]
    if crop_pct < NO_CROP:
        out_h, out_w = F.resize(torch.empty(1, 1, height, width), [eval_resize_size(size, crop_pct)]).shape[-2:]
        if min(out_h, out_w) < size:
            raise ValueError(f"a {height}x{width} image resized to {out_h}x{out_w} is smaller than the {size} crop")
        top, left = _crop_start(out_h, size), _crop_start(out_w, size)
        rows = _axis_matrix(height, out_h, mode)[:, top:top + size]  # height, size
        cols = _axis_matrix(width, out_w, mode)[:, left:left + size]  # width, size
        return rows.float(), cols.float()
    return _axis_matrix(height, size, mode).float(), _axis_matrix(width, size, mode).float()


class BatchResizer:
    """Resize + crop a list of uint8 images (3, H_i, W_i) on one device into a float batch (B, 3, size, size) in [0, 255].

    Args:
        size, crop_pct, interpolation: the evaluation geometry (:func:`data.transforms.eval_crop_pct`,
            DATA.INTERPOLATION).
        device: where images, matrices and the result live.
    """

    def __init__(self, size: int, crop_pct: float, interpolation: str, device: torch.device) -> None:
        if interpolation not in INTERPOLATION:
            raise UserError(f"DATA.INTERPOLATION {interpolation!r} is not known: use bicubic or bilinear.")
        self.size, self.crop_pct, self.interpolation, self.device = size, crop_pct, interpolation, torch.device(device)
        self._cache: Dict[Tuple[int, int], Tuple[torch.Tensor, torch.Tensor]] = {}

    def matrices(self, height: int, width: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(Rh.T (size, height), Rw (width, size))`` on the device, made once per source shape."""
        key = (height, width)
        if key not in self._cache:
            rows, cols = eval_resize_matrices(height, width, self.size, self.crop_pct, self.interpolation)
            self._cache[key] = rows.T.contiguous().to(self.device), cols.to(self.device)
        return self._cache[key]

    def __call__(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        shapes: List[Tuple[int, int]] = [tuple(image.shape[-2:]) for image in images]
        height, width = max(h for h, _ in shapes), max(w for _, w in shapes)
        count, size = len(images), self.size
        padded = torch.empty((count, 3, height, width), dtype=torch.uint8, device=self.device)  # B, 3, Hmax, Wmax
        rows_t = torch.zeros((count, 1, size, height), device=self.device)  # B, 1, size, Hmax
        cols = torch.zeros((count, 1, width, size), device=self.device)  # B, 1, Wmax, size
        for i, (image, (h, w)) in enumerate(zip(images, shapes)):
            row_t, col = self.matrices(h, w)
            padded[i, :, :h, :w] = image
            rows_t[i, 0, :, :h] = row_t
            cols[i, 0, :w] = col
        # padding is never read: its rows and columns of the matrices are zero (and uint8 garbage is finite)
        out = rows_t @ (padded.float() @ cols)  # B, 3, size, size
        return out.clamp_(0, 255)
