"""ImageFolder-style datasets that open an image only when it is read, report unreadable ones by path, and map class
folders to the model's classes by name when the model names them."""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from swin_trt.data.bad_images import BadImage, check_policy
from swin_trt.errors import UserError

_LOG = logging.getLogger("swin")
Sample = Tuple[str, int]
_SAID: Set[Tuple[str, bool]] = set()  # (folder, by name) already logged


def class_index(root: str, label_names: Sequence[str] = ()) -> Dict[str, int]:
    """The class number of each class folder of ``root``.

    By name when the model names its classes (MODEL.LABEL_NAMES) and every folder is one of those names (a fine-tuned
    model's ids are rarely in the sorted order of its class folders); otherwise by sorted folder order, as
    torchvision's ImageFolder (ImageNet's synset folders against the official models' readable names). Which of the
    two was used is logged once per folder.

    Raises:
        UserError: some folders are label names and some are not (a few of the others are named).
    """
    folders, by_order = find_classes(root)
    if not label_names:
        return by_order
    number = {name: i for i, name in enumerate(label_names)}
    unknown = [f for f in folders if f not in number]
    if unknown and len(unknown) < len(folders):
        raise UserError(f"class folders of {root} match only some of the model's {len(number)} label names: "
                        f"{', '.join(unknown[:3])}{' ...' if len(unknown) > 3 else ''} {'is' if len(unknown) == 1 else 'are'} "
                        "not among them: rename those folders to the model's class names (MODEL.LABEL_NAMES), or "
                        "name none of them so, to map by sorted order.")
    by_name = not unknown
    if (root, by_name) not in _SAID:
        _SAID.add((root, by_name))
        _LOG.info("%s: %d class folders mapped to the model's classes %s", root, len(folders),
                  "by name (its label names)" if by_name else "by sorted order (no folder is one of its label names)")
    return {f: number[f] for f in folders} if by_name else by_order


def list_images(root: str, label_names: Sequence[str] = ()) -> List[Sample]:
    """``(path, label)`` pairs of an ImageFolder tree in ImageFolder's order, without opening any image; labels as
    :func:`class_index` maps the folders.

    Raises:
        UserError: ``root`` is missing or none of its class folders holds an image.
    """
    if not os.path.isdir(root):
        raise UserError(f"image folder {root} does not exist: pass --data-path pointing at a folder with train/ and val/.")
    try:
        class_to_idx = class_index(root, label_names)
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
        label_names: the model's class names (MODEL.LABEL_NAMES), to map the folders by name (:func:`class_index`).
    """

    def __init__(self, root: str, transform: Optional[Callable] = None, on_bad_image: str = "fail",
                 label_names: Sequence[str] = ()) -> None:
        self.on_bad_image = check_policy(on_bad_image)
        self.label_names = tuple(label_names)
        if not os.path.isdir(root):
            raise UserError(f"image folder {root} does not exist: pass --data-path pointing at a folder with train/ and val/.")
        try:
            super().__init__(root, transform=transform)
        except FileNotFoundError as err:
            raise UserError(f"image folder {root} holds no images in class sub-folders ({err}).") from None

    def find_classes(self, directory: str) -> Tuple[List[str], Dict[str, int]]:
        """ImageFolder's hook: class numbers by :func:`class_index`."""
        class_to_idx = class_index(directory, self.label_names)
        return sorted(class_to_idx, key=class_to_idx.get), class_to_idx

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
