"""The original repository's transforms, built from timm."""
from __future__ import annotations

from timm.data import create_transform
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from yacs.config import CfgNode

_INTERP = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
           "random": InterpolationMode.BICUBIC}


def build_transform(config: CfgNode, is_train: bool) -> transforms.Compose:
    """Training: timm's ``create_transform`` with the original's augmentation defaults.
    Evaluation: resize by the crop ratio 256/224 (bicubic), centre crop, normalise."""
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
    interp = _INTERP[config.DATA.INTERPOLATION]
    steps = []
    if config.TEST.CROP:
        steps += [transforms.Resize(int(size / (224 / 256)), interpolation=interp), transforms.CenterCrop(size)]
    else:
        steps += [transforms.Resize((size, size), interpolation=interp)]
    steps += [transforms.ToTensor(), transforms.Normalize(config.DATA.MEAN, config.DATA.STD)]
    return transforms.Compose(steps)
