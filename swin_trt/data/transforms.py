"""The original repository's transforms, built from timm, and the evaluation geometry every loader shares.

Evaluation resizes the short side to ``floor(IMG_SIZE / crop_pct)`` (256 for 224 at the original's 0.875, 248 at
timm's 0.9) and centre-crops ``IMG_SIZE`` (TEST.CROP True, crop_pct TEST.CROP_PCT), or resizes to ``IMG_SIZE`` square
(TEST.CROP False: crop_pct 1.0, as transformers' image processor for Swin does). The PIL loader here, the uint8
loader (data/fast_loader.py) and the GPU resize (data/resize_matrices.py) all take the size from
:func:`eval_resize_size`, and the exported files record ``crop_pct`` (swin_trt/contract.py).
"""
from __future__ import annotations

import math

from timm.data import create_transform
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from yacs.config import CfgNode

EVAL_CROP_PCT = 224 / 256  # the original's evaluation crop: the short side resized to IMG_SIZE / 0.875
NO_CROP = 1.0  # crop_pct of a plain resize to IMG_SIZE x IMG_SIZE
# DATA.INTERPOLATION -> torchvision mode; "random" (training) evaluates bicubic, as the original
INTERPOLATION = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
                 "random": InterpolationMode.BICUBIC}


def eval_crop_pct(config: CfgNode) -> float:
    """The evaluation crop of ``config``: TEST.CROP_PCT with TEST.CROP, else :data:`NO_CROP`."""
    return float(config.TEST.CROP_PCT) if config.TEST.CROP else NO_CROP


def eval_resize_size(size: int, crop_pct: float) -> int:
    """The short side evaluation resizes to before a ``size`` centre crop: ``floor(size / crop_pct)``, as timm's
    ``create_transform`` (and the original's ``int(256 / 224 * size)`` at 0.875); ``size`` itself without a crop."""
    # the 1e-6 keeps a ratio such as 224 / 256 that floating point puts a hair under its integer on that integer
    return size if crop_pct >= NO_CROP else math.floor(size / crop_pct + 1e-6)


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
    crop_pct = eval_crop_pct(config)
    if crop_pct < NO_CROP:
        steps += [transforms.Resize(eval_resize_size(size, crop_pct), interpolation=interp), transforms.CenterCrop(size)]
    else:
        steps += [transforms.Resize((size, size), interpolation=interp)]
    steps += [transforms.ToTensor(), transforms.Normalize(config.DATA.MEAN, config.DATA.STD)]
    return transforms.Compose(steps)
