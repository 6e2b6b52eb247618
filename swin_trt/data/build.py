"""Datasets and loaders for training and evaluation, single-process or distributed."""
from __future__ import annotations

import os
from typing import Optional

import torch
import torch.distributed as dist
from timm.data import Mixup
from torch.utils.data import DistributedSampler, RandomSampler, SequentialSampler
from yacs.config import CfgNode

from swin_trt.data.bad_images import ImageLoader
from swin_trt.data.image_folder import CheckedImageFolder
from swin_trt.data.sharded_sampler import ShardedEvalSampler
from swin_trt.data.transforms import build_transform


def build_dataset(config: CfgNode, split: str) -> CheckedImageFolder:
    """``DATA.DATA_PATH/{split}`` as an ImageFolder with the split's transforms."""
    root = os.path.join(config.DATA.DATA_PATH, split)
    return CheckedImageFolder(root, build_transform(config, split == "train"), config.DATA.ON_BAD_IMAGE,
                              config.MODEL.LABEL_NAMES)


def build_loader(config: CfgNode, split: str, batch_size: Optional[int] = None, shuffle: Optional[bool] = None,
                 num_workers: Optional[int] = None, shard: bool = True) -> ImageLoader:
    """Loader over ``split`` ("train" or "val"); unreadable images are handled by DATA.ON_BAD_IMAGE when read.

    Under torch.distributed (and ``shard``), training uses a DistributedSampler
    (shuffled, padded) and evaluation a :class:`ShardedEvalSampler`, which gives
    every image to exactly one rank so reduced metrics count each image once.
    ``shard=False`` gives this process every image: for work only one rank does.
    """
    dataset = build_dataset(config, split)
    is_train = split == "train"
    shuffle = is_train if shuffle is None else shuffle
    distributed = shard and dist.is_available() and dist.is_initialized()
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=config.SEED) if is_train else ShardedEvalSampler(dataset)
    else:
        sampler = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
    workers = config.DATA.NUM_WORKERS if num_workers is None else num_workers
    batch_size = batch_size or config.DATA.BATCH_SIZE
    return ImageLoader(dataset, config.DATA.ON_BAD_IMAGE, sampler=sampler, batch_size=batch_size, num_workers=workers,
                       pin_memory=config.DATA.PIN_MEMORY and torch.cuda.is_available(),
                       drop_last=is_train and len(dataset) >= batch_size, persistent_workers=workers > 0)


def build_sample_loader(config: CfgNode, split: str, count: int, batch_size: Optional[int] = None) -> ImageLoader:
    """A seeded pick (SEED) of ``count`` images of ``split`` (all of them when it holds fewer), evaluation transform,
    in file order, sharded over ranks as :func:`build_loader`'s evaluation is; only the picked files are opened."""
    from swin_trt.data.image_folder import ImageList, list_images

    samples = list_images(os.path.join(config.DATA.DATA_PATH, split), config.MODEL.LABEL_NAMES)
    if count < len(samples):
        picked = sorted(torch.randperm(len(samples), generator=torch.Generator().manual_seed(config.SEED))[:count].tolist())
        samples = [samples[i] for i in picked]
    dataset = ImageList(samples, build_transform(config, is_train=False))
    distributed = dist.is_available() and dist.is_initialized()
    sampler = ShardedEvalSampler(dataset) if distributed else SequentialSampler(dataset)
    workers = config.DATA.NUM_WORKERS
    return ImageLoader(dataset, config.DATA.ON_BAD_IMAGE, sampler=sampler, batch_size=batch_size or config.DATA.BATCH_SIZE,
                       num_workers=workers, pin_memory=config.DATA.PIN_MEMORY and torch.cuda.is_available(),
                       persistent_workers=workers > 0)


def build_mixup(config: CfgNode) -> Optional[Mixup]:
    """timm's Mixup/CutMix with label smoothing, or None when both alphas are 0."""
    if config.AUG.MIXUP <= 0 and config.AUG.CUTMIX <= 0 and config.AUG.CUTMIX_MINMAX is None:
        return None
    return Mixup(mixup_alpha=config.AUG.MIXUP, cutmix_alpha=config.AUG.CUTMIX, cutmix_minmax=config.AUG.CUTMIX_MINMAX,
                 prob=config.AUG.MIXUP_PROB, switch_prob=config.AUG.MIXUP_SWITCH_PROB, mode=config.AUG.MIXUP_MODE,
                 label_smoothing=config.MODEL.LABEL_SMOOTHING, num_classes=config.MODEL.NUM_CLASSES)
