"""Swin-MLP: Swin Transformer with window attention replaced by a per-head spatial MLP.

Same export-friendly rules as ``models/swin_transformer.py``: the token grid,
the padding for shifted windows and every reshape are static for the config.
Names follow the original repository so its checkpoints load.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp

from swin_trt.models.swin_transformer import SwinClassifier, window_partition, window_reverse


class SwinMLPBlock(nn.Module):
    """LN → (shifted-)window spatial MLP (grouped 1×1 conv over tokens, one group per head) → add → LN → MLP → add."""

    def __init__(self, dim: int, input_resolution: Tuple[int, int], num_heads: int, window_size: int = 7,
                 shift_size: int = 0, mlp_ratio: float = 4.0, drop: float = 0.0, drop_path: float = 0.0,
                 norm_layer: type = nn.LayerNorm) -> None:
        super().__init__()
        self.dim = dim
        self.input_resolution = tuple(input_resolution)
        self.num_heads = num_heads
        if min(self.input_resolution) <= window_size:
            window_size, shift_size = min(self.input_resolution), 0
        self.window_size = window_size
        self.shift_size = shift_size
        # left, right, top, bottom padding that turns the shifted grid into whole windows
        self.padding = (window_size - shift_size, shift_size, window_size - shift_size, shift_size)
        self.norm1 = norm_layer(dim)
        tokens = num_heads * window_size ** 2
        self.spatial_mlp = nn.Conv1d(tokens, tokens, kernel_size=1, groups=num_heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H*W, C) → (B, H*W, C)."""
        H, W = self.input_resolution
        C, nH, ws = self.dim, self.num_heads, self.window_size
        shortcut = x
        x = self.norm1(x).reshape(-1, H, W, C)  # B, H, W, C
        grid = (H, W)
        if self.shift_size:
            p_l, p_r, p_t, p_b = self.padding
            x = F.pad(x, [0, 0, p_l, p_r, p_t, p_b])  # B, H+ws, W+ws, C
            grid = (H + p_t + p_b, W + p_l + p_r)
        x = window_partition(x, grid, ws, C)  # B*nW, ws*ws, C
        x = x.reshape(-1, ws * ws, nH, C // nH).transpose(1, 2)  # B*nW, nH, ws*ws, C/nH
        x = self.spatial_mlp(x.reshape(-1, nH * ws * ws, C // nH))  # B*nW, nH*ws*ws, C/nH
        x = x.reshape(-1, nH, ws * ws, C // nH).transpose(1, 2).reshape(-1, ws * ws, C)  # B*nW, ws*ws, C
        x = window_reverse(x, grid, ws, C)  # B, H', W', C
        if self.shift_size:
            p_l, p_r, p_t, p_b = self.padding
            x = x[:, p_t:p_t + H, p_l:p_l + W, :]  # B, H, W, C
        x = shortcut + self.drop_path(x.reshape(-1, H * W, C))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SwinMLP(SwinClassifier):
    """Swin-MLP classifier (the original repository's ``SwinMLP``): the Swin skeleton with :class:`SwinMLPBlock` blocks.

    Args:
        num_heads: token-mixing groups per stage.
        mlp_ratio: MLP hidden width / channels.
        other arguments: see :class:`models.swin_transformer.SwinClassifier`.
    """

    def __init__(self, img_size: int = 224, patch_size: int = 4, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: int = 96, depths: Tuple[int, ...] = (2, 2, 6, 2), num_heads: Tuple[int, ...] = (3, 6, 12, 24),
                 window_size: int = 7, mlp_ratio: float = 4.0, drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 norm_layer: type = nn.LayerNorm, ape: bool = False, patch_norm: bool = True) -> None:
        def make_block(stage: int, dim: int, resolution: Tuple[int, int], shift: int, drop_path: float) -> nn.Module:
            return SwinMLPBlock(dim, resolution, num_heads[stage], window_size, shift, mlp_ratio, drop_rate, drop_path,
                                norm_layer)

        super().__init__(make_block, img_size, patch_size, in_chans, num_classes, embed_dim, depths, window_size,
                         drop_rate, drop_path_rate, norm_layer, ape, patch_norm)
