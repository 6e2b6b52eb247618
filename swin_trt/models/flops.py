"""Multiply-accumulates of our models, counted as the original repository's models count their own FLOPs.

The original (microsoft/Swin-Transformer) gives each of its modules a ``flops()`` method and publishes the sum,
in G, as the "FLOPs" of its model tables. Those sums are multiply-accumulates of the matrix products plus one
per normalised element, and nothing else. This module walks our modules instead, dispatching on their type, and
adds the same terms:

- patch embedding: the strided convolution (one MAC per weight per output position), plus its LayerNorm;
- each block: norm1 and norm2 (one per normalised element), the windowed token mixing and the MLP (its two
  Linear layers per token);
- window attention, per window of N tokens: the qkv and proj Linear layers per token, ``q·kᵀ`` and ``attn·v``
  (``heads × N × N × head_dim`` each); Swin V2's cosine normalisation, logit scale and position-bias MLP are
  not counted (the original does not count them; the last two are constants of the weights);
- Swin-MLP's spatial MLP: ``dim × N × N`` per window, over the padded grid of whole windows in shifted blocks;
- PatchMerging: the 4C → 2C reduction per output token, plus its LayerNorm (over 4C before it in V1, over 2C
  after it in V2);
- the final norm and pooling as the original's single term ``num_features × H × W // 2**num_layers`` (H × W the
  patch grid), and the head's Linear. Biases, activations, softmax and residual adds are not counted.

The counts need the module structure only: :func:`build_structure` builds a config's model on the meta device
(no storage, no initialisation), and nothing is run.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple, Type

import torch
import torch.nn as nn
from yacs.config import CfgNode

from swin_trt.models.build import build_model
from swin_trt.models.swin_mlp import SwinMLPBlock
from swin_trt.models.swin_transformer import (BasicLayer, PatchEmbed, PatchMerging, SwinClassifier,
                                              SwinTransformerBlock, WindowAttention)
from swin_trt.models.swin_transformer_v2 import PatchMergingV2, SwinTransformerV2Block, WindowAttentionV2

MacCounter = Callable[[nn.Module], float]
_COUNTERS: Dict[Type[nn.Module], MacCounter] = {}


def _counts(*types: Type[nn.Module]) -> Callable[[MacCounter], MacCounter]:
    """Register the decorated function as the MAC counter of ``types`` (and of their subclasses without one)."""
    def register(fn: MacCounter) -> MacCounter:
        for t in types:
            _COUNTERS[t] = fn
        return fn

    return register


def count_macs(module: nn.Module) -> float:
    """Multiply-accumulates of one forward pass of one image through ``module``, as the original counts them.

    The counter registered for the most specific class in the module's MRO is used; a module without one counts
    as the sum of its children (so dropouts, identities and activations count zero).

    Args:
        module: one of our models, or any of its parts that carries its own token grid (a stage, a block, a
            PatchMerging, the patch embedding).

    Returns:
        the count (a float: the original's window counts are divisions).
    """
    for cls in type(module).__mro__:
        counter = _COUNTERS.get(cls)
        if counter is not None:
            return counter(module)
    return sum(count_macs(child) for child in module.children())


def count_gmacs(model: nn.Module) -> float:
    """:func:`count_macs` of ``model`` in G (1e9), the unit of the original's "FLOPs" column."""
    return count_macs(model) / 1e9


def _linear_macs(linear: nn.Linear) -> int:
    """MACs of ``linear`` per token (the bias is not counted)."""
    return linear.in_features * linear.out_features


def _norm_macs(norm: Optional[nn.Module], tokens: int) -> int:
    """One MAC per normalised element: ``tokens`` × the norm's width (0 without a norm)."""
    if norm is None or isinstance(norm, nn.Identity):
        return 0
    width = 1
    for side in norm.normalized_shape:
        width *= side
    return tokens * width


def _mlp_macs(mlp: nn.Module, tokens: int) -> int:
    """The block MLP (timm's ``Mlp``: fc1, activation, fc2) over ``tokens`` tokens."""
    return tokens * (_linear_macs(mlp.fc1) + _linear_macs(mlp.fc2))


@_counts(PatchEmbed)
def _patch_embed(embed: PatchEmbed) -> float:
    tokens = embed.num_patches
    conv = embed.proj
    kernel = conv.kernel_size[0] * conv.kernel_size[1]
    return tokens * conv.out_channels * (conv.in_channels // conv.groups) * kernel + _norm_macs(embed.norm, tokens)


@_counts(WindowAttention, WindowAttentionV2)
def _window_attention(attn: nn.Module) -> float:
    """MACs for one window: qkv and proj per token, then ``q·kᵀ`` and ``attn·v`` per head."""
    n = attn.window_size[0] * attn.window_size[1]
    head_dim = attn.dim // attn.num_heads
    projections = n * (_linear_macs(attn.qkv) + _linear_macs(attn.proj))
    matmuls = 2 * attn.num_heads * n * n * head_dim
    return projections + matmuls


@_counts(SwinTransformerBlock, SwinTransformerV2Block)
def _attention_block(block: nn.Module) -> float:
    height, width = block.input_resolution
    tokens = height * width
    windows = tokens / block.window_size / block.window_size
    return (_norm_macs(block.norm1, tokens) + windows * count_macs(block.attn) + _mlp_macs(block.mlp, tokens)
            + _norm_macs(block.norm2, tokens))


def _padded_windows(block: SwinMLPBlock) -> float:
    """Windows the spatial MLP runs over: the grid's, or in a shifted block the padded grid's ((H/ws+1)(W/ws+1))."""
    height, width = block.input_resolution
    if block.shift_size:
        pad_left, pad_right, pad_top, pad_bottom = block.padding
        height, width = height + pad_top + pad_bottom, width + pad_left + pad_right
    return height * width / block.window_size / block.window_size


@_counts(SwinMLPBlock)
def _mlp_block(block: SwinMLPBlock) -> float:
    height, width = block.input_resolution
    tokens = height * width
    conv = block.spatial_mlp  # grouped 1x1 conv over the nH*N token rows, applied to C/nH columns per window
    per_window = conv.out_channels * (conv.in_channels // conv.groups) * (block.dim // block.num_heads)
    return (_norm_macs(block.norm1, tokens) + _padded_windows(block) * per_window + _mlp_macs(block.mlp, tokens)
            + _norm_macs(block.norm2, tokens))


@_counts(PatchMerging)
def _patch_merging(merge: PatchMerging) -> float:
    """V1: LayerNorm over 4C, then the reduction, both on the H/2 × W/2 merged tokens."""
    height, width = merge.input_resolution
    tokens = (height // 2) * (width // 2)
    return _norm_macs(merge.norm, tokens) + tokens * _linear_macs(merge.reduction)


@_counts(PatchMergingV2)
def _patch_merging_v2(merge: PatchMergingV2) -> float:
    """V2: the reduction, then LayerNorm over 2C (the original counts it as H·W·C // 2: the same number)."""
    height, width = merge.input_resolution
    tokens = (height // 2) * (width // 2)
    return tokens * _linear_macs(merge.reduction) + _norm_macs(merge.norm, tokens)


@_counts(BasicLayer)
def _stage(layer: BasicLayer) -> float:
    macs = sum(count_macs(block) for block in layer.blocks)
    return macs + (count_macs(layer.downsample) if layer.downsample is not None else 0)


@_counts(SwinClassifier)
def _classifier(model: SwinClassifier) -> float:
    height, width = model.patch_embed.patches_resolution
    # the original's term for the final norm and the pooling, kept as it writes it (÷ 2**num_layers of the patch grid)
    norm_and_pool = model.num_features * height * width // 2 ** model.num_layers
    head = _linear_macs(model.head) if isinstance(model.head, nn.Linear) else 0
    return (count_macs(model.patch_embed) + sum(count_macs(layer) for layer in model.layers) + norm_and_pool
            + head)


def parameter_bytes(config: CfgNode) -> int:
    """Bytes of the config's FP32 parameters (a checkpoint holds them once; AdamW's state twice more)."""
    return sum(p.numel() * p.element_size() for p in build_structure(config).parameters())


def build_structure(config: CfgNode) -> nn.Module:
    """The config's model on the meta device: every module and parameter shape, no storage and no initialisation.

    Enough for :func:`count_macs` and for counting parameters, in a fraction of a second even for Swin-L.
    """
    with torch.device("meta"):
        return build_model(config)


def count_params(model: nn.Module) -> int:
    """Parameters of ``model``, as the original's ``n_parameters`` (every parameter, trainable or not)."""
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class Published:
    """A model's figures as the original repository's model table prints them: ``#params`` ("28M") and ``FLOPs``
    ("5.9G"), with the name it gives the model."""

    name: str
    params: str
    flops: str

    @staticmethod
    def _value_and_digits(text: str, unit: str) -> Tuple[float, int]:
        match = re.fullmatch(r"(\d+(?:\.(\d+))?)" + unit, text.strip())
        if match is None:
            raise ValueError(f"{text!r} is not a number followed by {unit}")
        return float(match.group(1)), len(match.group(2) or "")

    def params_agree(self, params: int) -> bool:
        """Whether ``params`` rounds, in millions, to the published figure at its precision."""
        value, digits = self._value_and_digits(self.params, "M")
        return round(params / 1e6, digits) == value

    def flops_agree(self, gmacs: float) -> bool:
        """Whether ``gmacs`` rounds to the published G figure at its precision."""
        value, digits = self._value_and_digits(self.flops, "G")
        return round(gmacs, digits) == value


# The original's figures for its ImageNet-1K models (the "1K model" of each row: trained on ImageNet-1K, or
# pre-trained on ImageNet-22K and fine-tuned on it), keyed by our config name. Source: microsoft/Swin-Transformer,
# MODELHUB.md and README.md at commit f82860bfb5225915aca09c3227159ee9e1df874d (their Swin-V1, Swin-V2 and Swin MLP
# tables, which agree; MODELHUB.md has the same figures at 2cb103f2de145ff43bb9f6fc2ae8800c24ad04c6). #params
# counts the 1000-class head. One figure is cut rather than rounded: Swin-L 384's 103.952G is published as 103.9G.
PUBLISHED_IMAGENET_1K: Dict[str, Published] = {
    "swin_tiny_patch4_window7_224": Published("Swin-T", "28M", "4.5G"),
    "swin_small_patch4_window7_224": Published("Swin-S", "50M", "8.7G"),
    "swin_base_patch4_window7_224": Published("Swin-B", "88M", "15.4G"),
    "swin_base_patch4_window12_384": Published("Swin-B", "88M", "47.1G"),
    "swin_large_patch4_window7_224": Published("Swin-L (22K→1K)", "197M", "34.5G"),
    "swin_large_patch4_window12_384": Published("Swin-L (22K→1K)", "197M", "103.9G"),
    "swinv2_tiny_patch4_window8_256": Published("SwinV2-T", "28M", "5.9G"),
    "swinv2_small_patch4_window8_256": Published("SwinV2-S", "50M", "11.5G"),
    "swinv2_base_patch4_window8_256": Published("SwinV2-B", "88M", "20.3G"),
    "swinv2_tiny_patch4_window16_256": Published("SwinV2-T", "28M", "6.6G"),
    "swinv2_small_patch4_window16_256": Published("SwinV2-S", "50M", "12.6G"),
    "swinv2_base_patch4_window16_256": Published("SwinV2-B", "88M", "21.8G"),
    "swinv2_base_patch4_window12to16_192to256_22kto1k_ft": Published("SwinV2-B* (22K→1K)", "88M", "21.8G"),
    "swinv2_base_patch4_window12to24_192to384_22kto1k_ft": Published("SwinV2-B* (22K→1K)", "88M", "54.7G"),
    "swinv2_large_patch4_window12to16_192to256_22kto1k_ft": Published("SwinV2-L* (22K→1K)", "197M", "47.5G"),
    "swinv2_large_patch4_window12to24_192to384_22kto1k_ft": Published("SwinV2-L* (22K→1K)", "197M", "115.4G"),
    "swin_mlp_tiny_c24_patch4_window8_256": Published("SwinMLP-T/C24", "20M", "4.0G"),
}
