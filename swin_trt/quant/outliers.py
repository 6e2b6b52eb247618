"""A model that fights back: channel outliers after LayerNorm, made by a function-preserving rescaling.

Trained Swin and ViT models have a few activation channels after LayerNorm 10 to 1000x wider than the rest
(RepQ-ViT, FQ-ViT): one per-tensor INT8 scale then leaves the other channels a handful of levels. The micro models
trained here on the digits have none, so they cannot show what INT8 costs a real checkpoint. This module gives them
such channels without changing the function the model computes (FP32 logits equal to rounding):

- **Swin V1** (pre-norm: ``x + attn(norm1(x))``, ``x + mlp(norm2(x))``): in every block, ``channels`` channels of
  ``norm1`` and ``norm2`` (weight and bias) are multiplied by ``factor`` and the matching input columns of
  ``attn.qkv`` and ``mlp.fc1`` divided by it. The inputs of qkv and fc1 carry the outliers.
- **Swin V2** (post-norm: ``x + norm1(attn(x))``): the LayerNorm outputs are added into the residual stream, which
  qkv and fc1 read, so the stream itself is rescaled: in every stage but the last, ``channels`` channels of the
  stage's input (the patch embedding's norm and position embedding, or the previous merging's norm), of every
  ``norm1``/``norm2`` and of the stream are multiplied by ``factor``, and every reader of the stream (qkv, fc1, the
  merging's reduction) divides its input columns by it. The last stage is left alone: its stream feeds the final
  LayerNorm, which no per-channel scale passes through. The inputs of qkv, fc1, the reduction and both residual
  quantizers carry the outliers.

This emulates the outliers reported for trained models; they are not a trained model's own outliers.
"""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn as nn

from swin_trt.models.swin_transformer_v2 import SwinTransformerV2


def _scale_norm(norm: nn.LayerNorm, channels: torch.Tensor, factor: float) -> None:
    norm.weight[channels] *= factor
    norm.bias[channels] *= factor


def _divide_columns(linear: nn.Linear, columns: torch.Tensor, factor: float) -> None:
    linear.weight[:, columns] /= factor


def pick_channels(width: int, channels: int, generator: torch.Generator) -> torch.Tensor:
    """``channels`` distinct channel indices of ``width``, seeded."""
    if not 0 < channels <= width:
        raise ValueError(f"channels must be in 1..{width}, not {channels}")
    return torch.randperm(width, generator=generator)[:channels].sort().values


@torch.no_grad()
def add_outlier_channels(model: nn.Module, factor: float = 200.0, channels: int = 4, seed: int = 0) -> Dict[str, List[int]]:
    """Rescale ``model`` (our Swin V1 or V2, plain weights) in place as the module docstring says.

    Returns:
        the channels made outliers, by stage (``"layers.0"``: [...]); the same channels in every block of a stage.
    """
    generator = torch.Generator().manual_seed(seed)
    picked: Dict[str, List[int]] = {}
    is_v2 = isinstance(model, SwinTransformerV2)
    stages = list(model.layers)[:-1] if is_v2 else list(model.layers)
    for index, layer in enumerate(stages):
        width = layer.blocks[0].norm1.normalized_shape[0]
        chosen = pick_channels(width, channels, generator)
        picked[f"layers.{index}"] = chosen.tolist()
        if is_v2:
            _rescale_v2_stream(model, index, chosen, factor)
            continue
        for block in layer.blocks:
            _scale_norm(block.norm1, chosen, factor)
            _divide_columns(block.attn.qkv, chosen, factor)
            _scale_norm(block.norm2, chosen, factor)
            _divide_columns(block.mlp.fc1, chosen, factor)
    return picked


def _rescale_v2_stream(model: nn.Module, index: int, chosen: torch.Tensor, factor: float) -> None:
    """Multiply channels ``chosen`` of stage ``index``'s residual stream by ``factor``; every reader divides."""
    layer = model.layers[index]
    if index == 0:
        if model.patch_embed.norm is not None:
            _scale_norm(model.patch_embed.norm, chosen, factor)
        else:
            model.patch_embed.proj.weight[chosen] *= factor
            model.patch_embed.proj.bias[chosen] *= factor
        if model.ape:
            model.absolute_pos_embed[..., chosen] *= factor
    else:
        _scale_norm(model.layers[index - 1].downsample.norm, chosen, factor)
    for block in layer.blocks:
        _scale_norm(block.norm1, chosen, factor)
        _scale_norm(block.norm2, chosen, factor)
        _divide_columns(block.attn.qkv, chosen, factor)
        _divide_columns(block.mlp.fc1, chosen, factor)
    width = layer.blocks[0].norm1.normalized_shape[0]
    merged = torch.cat([chosen + group * width for group in range(4)])  # the 2x2 neighbours, concatenated
    _divide_columns(layer.downsample.reduction, merged, factor)
