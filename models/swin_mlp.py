"""Swin-MLP: Swin Transformer with window attention replaced by a per-head spatial MLP.

Same export-friendly rules as ``models/swin_transformer.py``: the token grid,
the padding for shifted windows and every reshape are static for the config.
Names follow the original repository so its checkpoints load.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_

from models.swin_transformer import PatchEmbed, PatchMerging, window_partition, window_reverse


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


class BasicLayer(nn.Module):
    """One Swin-MLP stage: blocks alternating regular and shifted windows, then an optional PatchMerging."""

    def __init__(self, dim: int, input_resolution: Tuple[int, int], depth: int, num_heads: int, window_size: int,
                 mlp_ratio: float, drop: float, drop_path: List[float], norm_layer: type,
                 downsample: Optional[type]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([
            SwinMLPBlock(dim, input_resolution, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2,
                         mlp_ratio, drop, drop_path[i], norm_layer) for i in range(depth)])
        self.downsample = downsample(input_resolution, dim=dim, norm_layer=norm_layer) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class SwinMLP(nn.Module):
    """Swin-MLP classifier (the original repository's ``SwinMLP``)."""

    def __init__(self, img_size: int = 224, patch_size: int = 4, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: int = 96, depths: Tuple[int, ...] = (2, 2, 6, 2), num_heads: Tuple[int, ...] = (3, 6, 12, 24),
                 window_size: int = 7, mlp_ratio: float = 4.0, drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 norm_layer: type = nn.LayerNorm, ape: bool = False, patch_norm: bool = True) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_layers = len(depths)
        self.ape = ape
        self.img_size = img_size
        self.in_chans = in_chans
        self.num_features = int(embed_dim * 2 ** (self.num_layers - 1))
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, norm_layer if patch_norm else None)
        grid = self.patch_embed.patches_resolution
        if ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, embed_dim))
            trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(p=drop_rate)
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths))]
        self.layers = nn.ModuleList([
            BasicLayer(int(embed_dim * 2 ** i), (grid[0] // 2 ** i, grid[1] // 2 ** i), depths[i], num_heads[i],
                       window_size, mlp_ratio, drop_rate, dpr[sum(depths[:i]):sum(depths[:i + 1])], norm_layer,
                       PatchMerging if i < self.num_layers - 1 else None)
            for i in range(self.num_layers)])
        self.norm = norm_layer(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Conv1d)):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def no_weight_decay(self) -> set:
        return {"absolute_pos_embed"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # B, L, C
        if self.ape:
            x = x + self.absolute_pos_embed
        x = self.pos_drop(x)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x).mean(dim=1)  # B, C

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))
