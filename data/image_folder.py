"""ImageFolder that reports unreadable images by path instead of crashing the loader."""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Optional, Tuple

from PIL import Image, UnidentifiedImageError
from torchvision.datasets import ImageFolder

from utils import UserError

_LOG = logging.getLogger("swin")


def verify_images(samples: list) -> Tuple[list, list]:
    """Split ``(path, label)`` pairs into readable and unreadable ones (header check, no full decode)."""
    good, bad = [], []
    for path, label in samples:
        try:
            with Image.open(path) as im:
                im.verify()
            good.append((path, label))
        except (OSError, UnidentifiedImageError, SyntaxError):
            bad.append(path)
    return good, bad


class CheckedImageFolder(ImageFolder):
    """``torchvision.datasets.ImageFolder`` with a policy for unreadable images.

    Args:
        root: folder with one sub-folder per class.
        transform: applied to each RGB PIL image.
        on_bad_image: ``fail`` stops with a :class:`UserError` naming the first bad
            file; ``skip`` logs every bad path and leaves them out.
    """

    def __init__(self, root: str, transform: Optional[Callable] = None, on_bad_image: str = "fail") -> None:
        if on_bad_image not in ("fail", "skip"):
            raise UserError(f"DATA.ON_BAD_IMAGE is {on_bad_image!r}: use 'fail' or 'skip'.")
        if not os.path.isdir(root):
            raise UserError(f"image folder {root} does not exist: pass --data-path pointing at a folder with train/ and val/.")
        try:
            super().__init__(root, transform=transform)
        except FileNotFoundError as err:
            raise UserError(f"image folder {root} holds no images in class sub-folders ({err}).") from None
        good, bad = verify_images(self.samples)
        if bad:
            if on_bad_image == "fail":
                raise UserError(f"image {bad[0]} cannot be read ({len(bad)} unreadable in {root}): remove it, or pass --opts DATA.ON_BAD_IMAGE skip.")
            for path in bad:
                _LOG.warning("skipping unreadable image %s", path)
        self.samples = self.imgs = good
        self.targets = [label for _, label in good]
        self.on_bad_image = on_bad_image

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        path, target = self.samples[index]
        try:
            with open(path, "rb") as f:
                image = Image.open(f).convert("RGB")
        except (OSError, UnidentifiedImageError) as err:
            # a file that passed the header check but fails to decode
            raise UserError(f"image {path} cannot be decoded ({err}): remove or replace it.") from None
        if self.transform is not None:
            image = self.transform(image)
        return image, target
