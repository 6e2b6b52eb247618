"""ImageFolder-style datasets that open an image only when it is read, and report unreadable ones by path."""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from swin_trt.data.bad_images import BadImage, check_policy
from swin_trt.errors import UserError

_LOG = logging.getLogger("swin")
Sample = Tuple[str, int]


def list_images(root: str) -> List[Sample]:
    """``(path, label)`` pairs of an ImageFolder tree in ImageFolder's order, without opening any image.

    Raises:
        UserError: ``root`` is missing or none of its class folders holds an image.
    """
    if not os.path.isdir(root):
        raise UserError(f"image folder {root} does not exist: pass --data-path pointing at a folder with train/ and val/.")
    try:
        _, class_to_idx = find_classes(root)
        return make_dataset(root, class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as err:
        raise UserError(f"image folder {root} holds no images in class sub-folders ({err}).") from None


def read_sample(path: str, label: int, transform: Optional[Callable]) -> Union[Tuple[Any, int], BadImage]:
    """``(transform(RGB image), label)``, or a :class:`BadImage` when the file cannot be decoded."""
    try:
        with open(path, "rb") as f:
            image = Image.open(f).convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        # the formats' own errors for a file that is not (or no longer, or only partly) an image
        return BadImage(path, str(err) or type(err).__name__)
    return (transform(image) if transform is not None else image), label


class CheckedImageFolder(ImageFolder):
    """``torchvision.datasets.ImageFolder`` whose unreadable images come back as :class:`BadImage`.

    Construction only lists the files. Load it with :class:`data.bad_images.ImageLoader`, which applies
    ``on_bad_image`` (kept here as the dataset's policy).

    Args:
        root: folder with one sub-folder per class.
        transform: applied to each RGB PIL image.
        on_bad_image: ``fail`` or ``skip`` (see :class:`data.bad_images.ImageLoader`).
    """

    def __init__(self, root: str, transform: Optional[Callable] = None, on_bad_image: str = "fail") -> None:
        self.on_bad_image = check_policy(on_bad_image)
        if not os.path.isdir(root):
            raise UserError(f"image folder {root} does not exist: pass --data-path pointing at a folder with train/ and val/.")
        try:
            super().__init__(root, transform=transform)
        except FileNotFoundError as err:
            raise UserError(f"image folder {root} holds no images in class sub-folders ({err}).") from None

    def __getitem__(self, index: int) -> Union[Tuple[Any, int], BadImage]:
        path, target = self.samples[index]
        return read_sample(path, target, self.transform)


class ImageList(Dataset):
    """Given ``(path, label)`` samples (e.g. a random pick for calibration), read as :class:`CheckedImageFolder` does."""

    def __init__(self, samples: Sequence[Sample], transform: Optional[Callable] = None) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Union[Tuple[Any, int], BadImage]:
        path, target = self.samples[index]
        return read_sample(path, target, self.transform)
