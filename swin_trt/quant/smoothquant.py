"""SmoothQuant folded into LayerNorm: per-channel activation range moved into the weights, no node added.

For a Linear whose input is a LayerNorm's output, ``y = W · (γ ⊙ x̂ + β)``, any per-channel ``s > 0`` gives the same
function with ``γ' = γ / s``, ``β' = β / s`` and ``W' = W · diag(s)``. SmoothQuant (Xiao et al., 2023) picks
``s_c = max|X_c|^α / max|W_{:,c}|^(1-α)``: with α near 1 the activation's outlier channels are divided down to the
rest and the weight, quantized per output channel, takes them. Folded into the LayerNorm and the weight, the exported
graph is the same graph with other numbers: no extra Mul, the same INT8 GEMMs (ModelOpt's own SmoothQuant keeps a
``pre_quant_scale`` Mul in front of the GEMM instead).

Where it applies: Swin V1's pre-norm blocks (``norm1`` → ``attn.qkv``, ``norm2`` → ``mlp.fc1``) and its PatchMerging
(``norm`` → ``reduction``). Swin V2 has no such pair: its blocks are post-norm (qkv and fc1 read the residual stream,
a sum no single LayerNorm produces) and its PatchMerging normalises after the reduction. A Mul in front of those GEMMs
would be a new FP16 tensor per site in the precision plan, and the stream's outliers would still reach the residual
quantizers; so V2's sites are left alone, and the flow says so (V2's remedies are FP8, kept modules and AutoQuantize).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, List, Tuple

import torch
import torch.nn as nn

from swin_trt.models.swin_transformer import PatchMerging, SwinTransformerBlock
from swin_trt.models.swin_transformer_v2 import PatchMergingV2

_LOG = logging.getLogger("swin")
Pair = Tuple[str, nn.LayerNorm, str, nn.Linear]


def smoothing_pairs(model: nn.Module) -> List[Pair]:
    """(norm name, norm, linear name, linear) for every LayerNorm that feeds a Linear directly (Swin V1 only)."""
    pairs: List[Pair] = []
    for name, module in model.named_modules():
        if isinstance(module, SwinTransformerBlock):
            pairs += [(f"{name}.norm1", module.norm1, f"{name}.attn.qkv", module.attn.qkv),
                      (f"{name}.norm2", module.norm2, f"{name}.mlp.fc1", module.mlp.fc1)]
        elif isinstance(module, PatchMerging) and not isinstance(module, PatchMergingV2):  # V2: norm after reduction
            pairs.append((f"{name}.norm", module.norm, f"{name}.reduction", module.reduction))
    return pairs


@torch.no_grad()
def input_ranges(model: nn.Module, linears: List[nn.Linear], images: Iterable, device: torch.device) -> List[torch.Tensor]:
    """Per-input-channel max |x| of each Linear over the calibration images (the FP32 model)."""
    ranges = [torch.zeros(linear.in_features, device=device) for linear in linears]

    def hook(index: int):
        def record(module: nn.Module, args: Tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(dim=0)  # tokens, C -> C
            ranges[index] = torch.maximum(ranges[index], x.float())
        return record

    handles = [linear.register_forward_pre_hook(hook(i)) for i, linear in enumerate(linears)]
    try:
        for batch, _ in images:
            model(batch.to(device, non_blocking=True))
    finally:
        for handle in handles:
            handle.remove()
    return ranges


@torch.no_grad()
def smooth(model: nn.Module, images: Iterable, alpha: float, device: torch.device) -> List[Dict[str, Any]]:
    """Fold SmoothQuant's scales into every LayerNorm → Linear pair of ``model`` (plain weights, on ``device``).

    Returns:
        a row per pair: ``norm``, ``linear``, ``max_input_range`` before and after, ``max_scale``; empty for Swin V2
        (no such pair; see the module docstring).
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], not {alpha}")
    pairs = smoothing_pairs(model)
    if not pairs:
        _LOG.warning("QUANT.SMOOTH_ALPHA %.2f: this model has no LayerNorm that feeds a Linear (Swin V2 is post-norm "
                     "and normalises after PatchMerging's reduction): nothing is smoothed", alpha)
        return []
    model.eval()
    ranges = input_ranges(model, [p[3] for p in pairs], images, device)
    report = []
    for (norm_name, norm, linear_name, linear), activation in zip(pairs, ranges):
        weight = linear.weight.abs().amax(dim=0).float().clamp(min=1e-5)  # per input channel
        scale = (activation.clamp(min=1e-5).pow(alpha) / weight.pow(1.0 - alpha)).clamp(min=1e-5)
        norm.weight.div_(scale.to(norm.weight.dtype))
        norm.bias.div_(scale.to(norm.bias.dtype))
        linear.weight.mul_(scale.to(linear.weight.dtype)[None, :])
        report.append({"norm": norm_name, "linear": linear_name, "max_input_range": float(activation.max()),
                       "max_input_range_smoothed": float((activation / scale).max()), "max_scale": float(scale.max())})
    _LOG.info("SmoothQuant (alpha %.2f) folded into %d LayerNorm -> Linear pairs; widest input range %.3g -> %.3g",
              alpha, len(report), max(r["max_input_range"] for r in report),
              max(r["max_input_range_smoothed"] for r in report))
    return report
