"""The original repository's transforms, built from timm, and the evaluation geometry every loader shares.

Evaluation resizes the short side to ``IMG_SIZE / EVAL_CROP_PCT`` (256 for 224)
and centre-crops ``IMG_SIZE`` (TEST.CROP True), or resizes to ``IMG_SIZE``
square (TEST.CROP False). The PIL loader here, the uint8 loader
(data/fast_loader.py) and the GPU resize (data/resize_matrices.py) all take
the size from :func:`eval_resize_size`, and the exported files record it
(swin_trt/contract.py).
"""
from __future__ import annotations

from timm.data import create_transform
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from yacs.config import CfgNode

EVAL_CROP_PCT = 224 / 256  # the original's evaluation crop: the short side resized to IMG_SIZE / 0.875
# DATA.INTERPOLATION -> torchvision mode; "random" (training) evaluates bicubic, as the original
INTERPOLATION = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
                 "random": InterpolationMode.BICUBIC}


def eval_resize_size(size: int, crop: bool) -> int:
    """The short side evaluation resizes to before a ``size`` centre crop (``size`` itself without crop)."""
    return int(size / EVAL_CROP_PCT) if crop else size


def build_transform(config: CfgNode, is_train: bool) -> transforms.Compose:
    """Training: timm's ``create_transform`` with the original's augmentation defaults.
    Evaluation: resize by :func:`eval_resize_size`, centre crop, normalise."""
    size = config.DATA.IMG_SIZE
    if is_train:
        auto_augment = config.AUG.AUTO_AUGMENT if config.AUG.AUTO_AUGMENT not in ("", "none") else None
        t = create_transform(
            input_size=size, is_training=True, hflip=config.AUG.HFLIP, color_jitter=config.AUG.COLOR_JITTER or None,
            auto_augment=auto_augment, re_prob=config.AUG.REPROB, re_mode=config.AUG.REMODE,
            re_count=config.AUG.RECOUNT, interpolation=config.DATA.INTERPOLATION,
            mean=tuple(config.DATA.MEAN), std=tuple(config.DATA.STD))
        if size <= 32:
            # the original swaps RandomResizedCrop for a padded crop at tiny sizes
            t.transforms[0] = transforms.RandomCrop(size, padding=config.AUG.CROP_PADDING)
        return t
    interp = INTERPOLATION[config.DATA.INTERPOLATION]
    steps = []
    if config.TEST.CROP:
        steps += [transforms.Resize(eval_resize_size(size, True), interpolation=interp), transforms.CenterCrop(size)]
    else:
        steps += [transforms.Resize((size, size), interpolation=interp)]
    steps += [transforms.ToTensor(), transforms.Normalize(config.DATA.MEAN, config.DATA.STD)]
    return transforms.Compose(steps)
