"""Swin Transformer V2 (Liu et al., 2022) on the Swin skeleton, export-friendly.

Only three pieces differ from V1 (``models/swin_transformer.py``), and only they are here:

- :class:`WindowAttentionV2`: scaled cosine attention, ``normalize(q) · normalize(k)ᵀ × exp(min(logit_scale,
  log 100))``, plus a continuous relative position bias, ``16 · sigmoid(cpb_mlp(log-spaced coordinates))``
  gathered per token pair. The coordinates are scaled by the window the checkpoint was pre-trained with
  (``PRETRAINED_WINDOW_SIZES``), so a model fine-tuned at a larger window reads the table it learned.
- :class:`SwinTransformerV2Block`: post-norm residuals, ``x + norm1(attn(x))`` and ``x + norm2(mlp(x))``.
- :class:`PatchMergingV2`: the norm after the reduction, over 2C channels.

The logit scale and the position bias are functions of the weights alone. Inside
:func:`swin_trt.models.constants.frozen_constants` (which the ONNX export enters) they are computed once and
traced as constants, so the exported graph holds neither the MLP nor the clamp. Module and parameter names follow
the original repository's ``swin_transformer_v2.py``, so its checkpoints load as published.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp

from swin_trt.models.swin_transformer import (PatchMerging, SwinClassifier, WindowAttentionBase, fit_window,
                                              merge_patches, relative_position_index, shifted_window_mask,
                                              shifted_window_pass)

LOGIT_SCALE_MAX = math.log(1.0 / 0.01)  # the logit scale is clamped to at most 100
BIAS_RANGE = 16.0  # the position bias is 16 · sigmoid(.), in (0, 16)
NORM_EPS = 1e-12  # F.normalize's floor under the L2 norm


def relative_coords_table(window_size: int, pretrained_window_size: int = 0) -> torch.Tensor:
    """Log-spaced relative coordinates the position-bias MLP reads, shape (1, 2*ws-1, 2*ws-1, 2).

    Coordinates run over -(ws-1) .. ws-1, are divided by (pretrained window - 1) (or (ws - 1) when the model was
    not fine-tuned from another window), scaled to [-8, 8] and mapped by sign(x)·log2(1+|x|)/log2(8).
    """
    span = torch.arange(-(window_size - 1), window_size, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(span, span, indexing="ij")).permute(1, 2, 0).unsqueeze(0)  # 1, 2ws-1, 2ws-1, 2
    reference = pretrained_window_size if pretrained_window_size > 0 else window_size
    table = table / max(reference - 1, 1) * 8
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)


def in_dtype_of(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` in ``like``'s dtype. Under FP16 autocast the norms and the FP32 constants would otherwise promote every
    attention tensor after them to FP32; in an FP32 export the dtypes agree and nothing is traced."""
    return t if t.dtype == like.dtype else t.to(like.dtype)


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """``x / max(‖x‖₂, eps)`` over the last dimension, as ``F.normalize``, without the Expand (and its Shape op) that
    ``F.normalize`` exports: one ReduceL2, a Clip and a broadcasting Div."""
    return x / in_dtype_of(torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(NORM_EPS), x)


class WindowAttentionV2(WindowAttentionBase):
    """Scaled cosine attention inside windows, with the continuous (MLP) relative position bias.

    Args:
        dim: channels.
        window_size: window side in tokens.
        num_heads: attention heads.
        num_windows: windows per image (static for the config).
        qkv_bias: learnable q and v biases (k has none, as in the original).
        attn_drop, proj_drop: dropout rates.
        pretrained_window_size: window the position-bias MLP was trained at (0: this one).
    """

    def __init__(self, dim: int, window_size: int, num_heads: int, num_windows: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, pretrained_window_size: int = 0) -> None:
        super().__init__(dim, window_size, num_heads, num_windows)
        self.pretrained_window_size = pretrained_window_size
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, 512, bias=True), nn.ReLU(inplace=True),
                                     nn.Linear(512, num_heads, bias=False))
        self.register_buffer("relative_coords_table", relative_coords_table(window_size, pretrained_window_size),
                             persistent=False)
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=False)
        # the bias of the qkv GEMM is (q_bias, 0, v_bias); qkv itself has none, so ModelOpt's QuantLinear sees the GEMM
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
            self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
        else:
            self.q_bias = self.v_bias = self.k_bias = None
        self.add_output_layers(attn_drop, proj_drop)  # q̂ and k̂ are quantized after the normalisation, in [-1, 1]
        self._frozen: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    def logit_scale_and_bias(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The per-head logit scale (nH, 1, 1) and the position bias (nH, N, N): functions of the weights only."""
        if self._frozen is not None:
            return self._frozen
        N = self.window_size[0] * self.window_size[1]
        scale = torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX).exp()  # nH, 1, 1
        table = self.cpb_mlp(self.relative_coords_table).reshape(-1, self.num_heads)  # (2ws-1)^2, nH
        bias = table[self.relative_position_index.reshape(-1)].reshape(N, N, -1).permute(2, 0, 1)  # nH, N, N
        return scale, BIAS_RANGE * torch.sigmoid(bias)

    def freeze_constants(self) -> None:
        """Compute the logit scale and the bias once; until :meth:`thaw_constants` they are plain constant tensors."""
        with torch.no_grad():
            self._frozen = tuple(t.detach().clone() for t in self.logit_scale_and_bias())

    def thaw_constants(self) -> None:
        self._frozen = None

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x: windows with shape (B*nW, N, C).
            mask: additive mask with shape (nW, N, N) or None.
        """
        N, C = self.window_size[0] * self.window_size[1], self.dim
        nH = self.num_heads
        qkv_bias = torch.cat((self.q_bias, self.k_bias, self.v_bias)) if self.q_bias is not None else None
        if type(self.qkv) is nn.Linear:  # one GEMM with its bias, as F.linear fuses it
            qkv = F.linear(x, self.qkv.weight, qkv_bias)  # B*nW, N, 3C
        else:  # ModelOpt's QuantLinear quantizes its input and weight in its own forward
            qkv = self.qkv(x) if qkv_bias is None else self.qkv(x) + qkv_bias  # B*nW, N, 3C
        qkv = qkv.reshape(-1, N, 3, nH, C // nH).permute(2, 0, 3, 1, 4)  # 3, B*nW, nH, N, hd
        q, k, v = qkv.unbind(0)  # B*nW, nH, N, hd
        q = self.q_bmm_quantizer(l2_normalize(q))
        k = self.k_bmm_quantizer(l2_normalize(k))
        scale, bias = self.logit_scale_and_bias()
        attn = q @ k.transpose(-2, -1)  # B*nW, nH, N, N
        if mask is None:
            attn = attn * in_dtype_of(scale, attn) + in_dtype_of(bias, attn)
        else:
            attn = attn.reshape(-1, self.num_windows, nH, N, N) * in_dtype_of(scale, attn)  # B, nW, nH, N, N
            attn = (attn + in_dtype_of(mask.unsqueeze(1) + bias, attn)).reshape(-1, nH, N, N)  # B*nW, nH, N, N
        return self.attend(attn, v)


class SwinTransformerV2Block(nn.Module):
    """(Shifted-)window cosine-attention block with post-norm residuals: x + LN(W-MSA(x)), then x + LN(MLP(x)).

    Args:
        dim: channels.
        input_resolution: token grid (H, W) of this stage.
        num_heads: attention heads.
        window_size: window side; shrunk to the grid when the grid is smaller.
        shift_size: cyclic shift (0 for regular windows).
        pretrained_window_size: window the position-bias MLP was trained at (0: this one).
    """

    def __init__(self, dim: int, input_resolution: Tuple[int, int], num_heads: int, window_size: int = 8,
                 shift_size: int = 0, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0, norm_layer: type = nn.LayerNorm,
                 pretrained_window_size: int = 0) -> None:
        super().__init__()
        self.dim = dim
        self.input_resolution = tuple(input_resolution)
        window_size, shift_size = fit_window(self.input_resolution, window_size, shift_size)
        self.window_size = window_size
        self.shift_size = shift_size
        H, W = self.input_resolution
        num_windows = (H // window_size) * (W // window_size)
        self.attn = WindowAttentionV2(dim, window_size, num_heads, num_windows, qkv_bias, attn_drop, drop,
                                      pretrained_window_size)
        self.norm1 = norm_layer(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)
        self.norm2 = norm_layer(dim)
        # quantizer slots on the shortcut inputs of the two residual adds
        self.attn_residual_quantizer: nn.Module = nn.Identity()
        self.mlp_residual_quantizer: nn.Module = nn.Identity()
        mask = shifted_window_mask(self.input_resolution, window_size, shift_size) if shift_size else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: tokens with shape (B, H*W, C); returns the same shape."""
        H, W = self.input_resolution
        C = self.dim
        attended = shifted_window_pass(x, self.attn, (H, W), self.window_size, self.shift_size, self.attn_mask, C)
        x = self.attn_residual_quantizer(x) + self.drop_path(self.norm1(attended))  # B, H*W, C
        return self.mlp_residual_quantizer(x) + self.drop_path(self.norm2(self.mlp(x)))  # B, H*W, C


class PatchMergingV2(PatchMerging):
    """Concatenate each 2×2 neighbourhood, project 4C → 2C, then normalise (over 2C): Swin V2's order."""

    def __init__(self, input_resolution: Tuple[int, int], dim: int, norm_layer: type = nn.LayerNorm) -> None:
        super().__init__(input_resolution, dim, norm_layer)
        self.norm = norm_layer(2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H*W, C) → (B, H/2*W/2, 2C)."""
        return self.norm(self.reduction(merge_patches(x, self.input_resolution, self.dim)))


class SwinTransformerV2(SwinClassifier):
    """Swin Transformer V2 classifier: the Swin skeleton with :class:`SwinTransformerV2Block` and :class:`PatchMergingV2`.

    Args:
        num_heads: attention heads per stage.
        mlp_ratio: MLP hidden width / channels.
        qkv_bias: learnable q and v biases.
        attn_drop_rate: dropout of the attention weights.
        pretrained_window_sizes: per stage, the window the checkpoint was pre-trained with (0: the same window).
        other arguments: see :class:`models.swin_transformer.SwinClassifier`.
    """

    def __init__(self, img_size: int = 256, patch_size: int = 4, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: int = 96, depths: Tuple[int, ...] = (2, 2, 6, 2), num_heads: Tuple[int, ...] = (3, 6, 12, 24),
                 window_size: int = 8, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1, norm_layer: type = nn.LayerNorm,
                 ape: bool = False, patch_norm: bool = True, pretrained_window_sizes: Sequence[int] = (0, 0, 0, 0)) -> None:
        if len(pretrained_window_sizes) != len(depths):
            raise ValueError(f"PRETRAINED_WINDOW_SIZES {list(pretrained_window_sizes)} needs one entry per stage "
                             f"({len(depths)})")

        def make_block(stage: int, dim: int, resolution: Tuple[int, int], shift: int, drop_path: float) -> nn.Module:
            return SwinTransformerV2Block(dim, resolution, num_heads[stage], window_size, shift, mlp_ratio, qkv_bias,
                                          drop_rate, attn_drop_rate, drop_path, norm_layer,
                                          pretrained_window_sizes[stage])

        super().__init__(make_block, img_size, patch_size, in_chans, num_classes, embed_dim, depths, window_size,
                         drop_rate, drop_path_rate, norm_layer, ape, patch_norm, make_merging=PatchMergingV2)
        self.mlp_ratio = mlp_ratio
        for layer in self.layers:
            for block in layer.blocks:  # post-norm residual branches start at zero, as the original initialises them
                for norm in (block.norm1, block.norm2):
                    nn.init.constant_(norm.weight, 0)
                    nn.init.constant_(norm.bias, 0)

    def no_weight_decay_keywords(self) -> set:
        return {"cpb_mlp", "logit_scale", "relative_position_bias_table"}
