"""Calibration: activation ranges (amax) from training images, the same on every rank.

Every process calibrates on the same images: a seeded subset of ``train/``
with the evaluation transform (no random augmentation), not sharded over
ranks. The ranges are then all-reduced with MAX, so all ranks hold identical
quantizers whatever the order of floating-point sums on each device.

``max`` runs through ModelOpt's own algorithm; ``histogram`` (the amax of
least KL divergence, "entropy") and ``percentile`` collect histograms and
load the ranges here, since ModelOpt's histogram path through
``mtq.quantize`` fails on CPU. Entropy is a Python loop over 2048 bins: it
takes seconds per quantizer (minutes for Swin-T's 124 activation
quantizers); ModelOpt 0.47's ``mse`` histogram method passes its arguments
to the fake-quant function in the wrong order, so it is not offered.
Weights always take their per-channel max.
"""
from __future__ import annotations

import hashlib
import logging
import os
import warnings
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
import torch.nn as nn
from modelopt.torch.quantization.calib import HistogramCalibrator
from modelopt.torch.quantization.nn import TensorQuantizer
from torch.utils.data import DataLoader
from yacs.config import CfgNode

from swin_trt.data.bad_images import ImageLoader
from swin_trt.data.image_folder import ImageList, list_images
from swin_trt.data.transforms import build_transform
from swin_trt.distributed import is_distributed, rank
from swin_trt.errors import UserError
from swin_trt.logs import progress
from swin_trt.quant.auto import explicit_quant_config
from swin_trt.quant.quantize import quantize_model
from swin_trt.quant.smoothquant import smooth

_LOG = logging.getLogger("swin")
# QUANT.CALIB_METHOD -> HistogramCalibrator.compute_amax method
HISTOGRAM_METHODS = {"histogram": "entropy", "percentile": "percentile"}


def build_calib_loader(config: CfgNode, num_batches: int, batch_size: int) -> DataLoader:
    """``num_batches`` batches of a seeded random pick from the file list of ``DATA.DATA_PATH/train`` (eval transform).

    Only the picked files are ever opened; an unreadable one is handled by DATA.ON_BAD_IMAGE when read.

    Raises:
        UserError: ``num_batches`` < 1, or no training images.
    """
    if num_batches < 1:
        raise UserError(f"--num-calib-batch is {num_batches}: calibration needs at least one batch of training images.")
    root = os.path.join(config.DATA.DATA_PATH, "train")
    if os.path.isdir(root) and not any(files for _, _, files in os.walk(root)):
        raise UserError(f"calibration set {root} is empty: put training images in its class sub-folders "
                        "or point --data-path at another dataset.")
    samples = list_images(root, config.MODEL.LABEL_NAMES)
    generator = torch.Generator().manual_seed(config.SEED)
    picked = torch.randperm(len(samples), generator=generator)[:num_batches * batch_size].tolist()
    dataset = ImageList([samples[i] for i in picked], build_transform(config, is_train=False))
    return ImageLoader(dataset, config.DATA.ON_BAD_IMAGE, batch_size=batch_size, shuffle=False,
                       num_workers=config.DATA.NUM_WORKERS,
                       pin_memory=config.DATA.PIN_MEMORY and torch.cuda.is_available())


def _run_images(model: nn.Module, loader: DataLoader, device: torch.device) -> int:
    """Forward every calibration batch in FP32; returns the number of images seen."""
    seen = 0
    with torch.no_grad():
        for images, _ in progress(loader, "calibrate", rank()):
            model(images.to(device, non_blocking=True))
            seen += images.shape[0]
    return seen


def _calibrate_histograms(model: nn.Module, loader: DataLoader, device: torch.device, method: str,
                          percentile: float) -> int:
    """Collect statistics with every enabled quantizer's calibrator, then load amax by ``method``."""
    quantizers = [m for m in model.modules() if isinstance(m, TensorQuantizer) and m.is_enabled]
    for q in quantizers:
        q.disable_quant()
        q.enable_calib()
    seen = _run_images(model, loader, device)
    for q in quantizers:
        if isinstance(q._calibrator, HistogramCalibrator):
            kwargs = {"percentile": percentile} if method == "percentile" else {}
            q.load_calib_amax(method, **kwargs)
        else:
            q.load_calib_amax()
        q.enable_quant()
        q.disable_calib()
    return seen


def sync_amax(model: nn.Module) -> None:
    """All-reduce every quantizer's amax with MAX over ranks (no-op outside torch.distributed)."""
    if not is_distributed():
        return
    for m in model.modules():
        amax = getattr(m, "_amax", None) if isinstance(m, TensorQuantizer) else None
        if amax is not None:
            dist.all_reduce(amax, op=dist.ReduceOp.MAX)


def amax_digests_over_ranks(model: nn.Module) -> List[str]:
    """SHA-256 of every quantizer's amax (module order, float32 bytes), one per rank (``[own]`` outside torch.distributed).

    Raises:
        RuntimeError: the ranks hold different ranges (they must not after :func:`sync_amax`).
    """
    digest = hashlib.sha256()
    for name, amax in amax_state(model).items():
        digest.update(name.encode())
        digest.update(amax.float().numpy().tobytes())
    digests = [digest.hexdigest()]
    if is_distributed():
        digests = [None] * dist.get_world_size()
        dist.all_gather_object(digests, digest.hexdigest())
    if len(set(digests)) != 1:
        raise RuntimeError(f"calibration ranges differ between ranks (amax digests {digests})")
    return digests


def calibrate(model: nn.Module, loader: DataLoader, config: CfgNode, device: torch.device,
              module_formats: Optional[Dict[str, str]] = None) -> nn.Module:
    """Quantize ``model`` (on ``device``) in place and calibrate it on ``loader``.

    Args:
        model: plain-weight model, already on ``device``.
        loader: calibration images (:func:`build_calib_loader`).
        config: QUANT.FORMAT, CALIB_METHOD, PERCENTILE, DISABLED, KEEP_HIGH_PRECISION, SMOOTH_ALPHA (the
            smoothing is folded into the plain weights first: quant/smoothquant.py).
        module_formats: for QUANT.FORMAT auto, the format of each Linear (quant/auto.py's search).

    Returns:
        the quantized, calibrated model in eval mode.

    Raises:
        UserError: the loader holds no images.
    """
    if len(loader) == 0:
        raise UserError("the calibration set is empty: point --data-path at a folder whose train/ holds images.")
    model.eval()
    method = config.QUANT.CALIB_METHOD
    seen = 0

    def forward_loop(m: nn.Module) -> None:
        nonlocal seen
        seen = _run_images(m, loader, device)

    entries = explicit_quant_config(config, module_formats) if module_formats is not None else None
    if config.QUANT.SMOOTH_ALPHA > 0:  # function-preserving, on the plain model, before its ranges are taken
        smooth(model, loader, config.QUANT.SMOOTH_ALPHA, device)
    with warnings.catch_warnings():
        # our model is data-parallel only: ModelOpt's default parallel state (whole world) is the right one
        warnings.filterwarnings("ignore", message="Distributed training is initialized but no parallel_state")
        if method == "max":
            quantize_model(model, config, forward_loop, entries)
        else:
            quantize_model(model, config, site_entries=entries)
            model.to(device)  # quantizers created after the move
            seen = _calibrate_histograms(model, loader, device, HISTOGRAM_METHODS[method], config.QUANT.PERCENTILE)
    sync_amax(model)
    _LOG.info("calibrated %s quantizers (%s) on %d training images", config.QUANT.FORMAT, method, seen)
    return model.eval()


def amax_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    """Every quantizer's amax by module name (CPU copies), to compare calibrations."""
    return {name: m._amax.detach().cpu().clone() for name, m in model.named_modules()
            if isinstance(m, TensorQuantizer) and getattr(m, "_amax", None) is not None}
