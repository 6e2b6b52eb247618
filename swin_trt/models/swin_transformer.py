"""Swin Transformer, written so that its ONNX graph has no shape arithmetic.

Everything that is static for a config (token grid per stage, number of
windows, shifted-window attention mask, relative position index) is computed
once in ``__init__`` from the config; the forward pass only ever reshapes with
``-1`` in the batch position. Module and parameter names follow the original
repository, so its checkpoints load as published.

Quantizer slots (``nn.Identity`` until ``quant/`` replaces them) sit at the
inputs of the two attention matmuls and of the residual adds: places where
ModelOpt puts no quantizer by itself. Which ones are switched on is decided by
the table in ``quant/placement.py``, not here.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from timm.layers import DropPath, Mlp, trunc_normal_


def window_partition(x: torch.Tensor, resolution: Tuple[int, int], window_size: int, channels: int) -> torch.Tensor:
    """Split a token grid into windows.

    Args:
        x: tokens with shape (B, H*W, C) or (B, H, W, C).
        resolution: (H, W), static for the config.
        window_size: window side in tokens.
        channels: C, static for the config (never read from the tensor, so no Shape op is exported).

    Returns:
        windows with shape (B*nW, window_size*window_size, C).
    """
    H, W = resolution
    C = channels
    x = x.reshape(-1, H // window_size, window_size, W // window_size, window_size, C)  # B, H/ws, ws, W/ws, ws, C
    x = x.permute(0, 1, 3, 2, 4, 5)  # B, H/ws, W/ws, ws, ws, C
    return x.reshape(-1, window_size * window_size, C)  # B*nW, ws*ws, C


def window_reverse(windows: torch.Tensor, resolution: Tuple[int, int], window_size: int, channels: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`.

    Args:
        windows: shape (B*nW, window_size*window_size, C).
        resolution: (H, W) of the token grid.
        channels: C, static for the config.

    Returns:
        tokens with shape (B, H, W, C).
    """
    H, W = resolution
    C = channels
    x = windows.reshape(-1, H // window_size, W // window_size, window_size, window_size, C)  # B, H/ws, W/ws, ws, ws, C
    x = x.permute(0, 1, 3, 2, 4, 5)  # B, H/ws, ws, W/ws, ws, C
    return x.reshape(-1, H, W, C)  # B, H, W, C


def relative_position_index(window_size: int) -> torch.Tensor:
    """Index into the (2*ws-1)**2 bias table for each pair of tokens of a window, shape (ws*ws, ws*ws)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))  # 2, ws, ws
    coords = coords.flatten(1)  # 2, ws*ws
    rel = coords[:, :, None] - coords[:, None, :]  # 2, N, N
    rel = rel.permute(1, 2, 0) + (window_size - 1)  # N, N, 2
    return rel[:, :, 0] * (2 * window_size - 1) + rel[:, :, 1]  # N, N


def shifted_window_mask(resolution: Tuple[int, int], window_size: int, shift_size: int) -> torch.Tensor:
    """Additive attention mask for shifted windows, shape (nW, ws*ws, ws*ws): 0 inside a region, -100 across."""
    H, W = resolution
    img_mask = torch.zeros(1, H, W, 1)
    cnt = 0
    spans = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    for h in spans:
        for w in spans:
            img_mask[:, h, w, :] = cnt
            cnt += 1
    mask_windows = window_partition(img_mask, resolution, window_size, 1).squeeze(-1)  # nW, N
    mask = mask_windows[:, None, :] - mask_windows[:, :, None]  # nW, N, N
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class WindowAttentionBase(nn.Module):
    """What the window attentions of Swin V1 and V2 share: their shape, the softmax·v half with the quantizer slots of
    both matmuls, and the output projection. Subclasses compute the logits.

    Args:
        dim: channels.
        window_size: window side in tokens.
        num_heads: attention heads.
        num_windows: windows per image (static for the config).
    """

    def __init__(self, dim: int, window_size: int, num_heads: int, num_windows: int) -> None:
        super().__init__()
        self.dim = dim
        self.window_size = (window_size, window_size)
        self.num_heads = num_heads
        self.num_windows = num_windows

    def add_output_layers(self, attn_drop: float, proj_drop: float) -> None:
        """Dropouts, softmax, output projection and the quantizer slots at the inputs of q·kᵀ and attn·v (called by
        the subclass after its qkv, so modules keep the original's order)."""
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(self.dim, self.dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.softmax = nn.Softmax(dim=-1)
        self.q_bmm_quantizer: nn.Module = nn.Identity()
        self.k_bmm_quantizer: nn.Module = nn.Identity()
        self.attn_bmm_quantizer: nn.Module = nn.Identity()
        self.v_bmm_quantizer: nn.Module = nn.Identity()

    def attend(self, attn: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """softmax(logits) · v, projected.

        Args:
            attn: logits with shape (B*nW, nH, N, N), bias and mask added.
            v: values with shape (B*nW, nH, N, hd).

        Returns:
            windows with shape (B*nW, N, C).
        """
        N, C = self.window_size[0] * self.window_size[1], self.dim
        attn = self.attn_drop(self.softmax(attn))
        x = self.attn_bmm_quantizer(attn) @ self.v_bmm_quantizer(v)  # B*nW, nH, N, hd
        x = x.transpose(1, 2).reshape(-1, N, C)  # B*nW, N, C
        return self.proj_drop(self.proj(x))


class WindowAttention(WindowAttentionBase):
    """Multi-head self-attention inside windows, with relative position bias.

    Args:
        dim: channels.
        window_size: window side in tokens.
        num_heads: attention heads.
        num_windows: windows per image (static for the config).
        qkv_bias: bias in the qkv projection.
        qk_scale: attention scale; None means head_dim ** -0.5.
        attn_drop, proj_drop: dropout rates.
    """

    def __init__(self, dim: int, window_size: int, num_heads: int, num_windows: int, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__(dim, window_size, num_heads, num_windows)
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.add_output_layers(attn_drop, proj_drop)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self) -> torch.Tensor:
        """Bias per head, shape (nH, N, N); a constant once exported."""
        N = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]  # N*N, nH
        return bias.reshape(N, N, -1).permute(2, 0, 1)  # nH, N, N

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x: windows with shape (B*nW, N, C).
            mask: additive mask with shape (nW, N, N) or None.
        """
        N, C = self.window_size[0] * self.window_size[1], self.dim
        nH = self.num_heads
        qkv = self.qkv(x).reshape(-1, N, 3, nH, C // nH).permute(2, 0, 3, 1, 4)  # 3, B*nW, nH, N, hd
        q, k, v = qkv.unbind(0)  # B*nW, nH, N, hd
        q = self.q_bmm_quantizer(q * self.scale)
        k = self.k_bmm_quantizer(k)
        attn = q @ k.transpose(-2, -1)  # B*nW, nH, N, N
        bias = self.relative_position_bias()  # nH, N, N
        if mask is None:
            attn = attn + bias
        else:
            attn = attn.reshape(-1, self.num_windows, nH, N, N) + (mask.unsqueeze(1) + bias)  # B, nW, nH, N, N
            attn = attn.reshape(-1, nH, N, N)  # B*nW, nH, N, N
        return self.attend(attn, v)


def fit_window(resolution: Tuple[int, int], window_size: int, shift_size: int) -> Tuple[int, int]:
    """(window, shift) of a block on a ``resolution`` grid: a grid that fits in one window takes no partition and no
    shift (as the original); otherwise the grid must split into whole windows.

    Raises:
        ValueError: the shift is not in [0, window) or the grid is not a whole number of windows.
    """
    if min(resolution) <= window_size:
        window_size, shift_size = min(resolution), 0
    if not 0 <= shift_size < window_size:
        raise ValueError(f"shift_size {shift_size} must be in [0, window_size {window_size})")
    if resolution[0] % window_size or resolution[1] % window_size:
        raise ValueError(f"token grid {tuple(resolution)} is not divisible by window size {window_size}")
    return window_size, shift_size


def shifted_window_pass(x: torch.Tensor, attn: nn.Module, resolution: Tuple[int, int], window_size: int,
                        shift_size: int, mask: Optional[torch.Tensor], channels: int) -> torch.Tensor:
    """Tokens through (shifted-)window attention: roll, partition, ``attn``, reverse, roll back.

    Args:
        x: tokens with shape (B, H*W, C).
        attn: the window attention, called as ``attn(windows, mask=mask)``.
        resolution, window_size, shift_size, channels: static for the block.
        mask: the shifted-window mask (nW, N, N) or None.

    Returns:
        tokens with shape (B, H*W, C).
    """
    H, W = resolution
    C = channels
    if shift_size:
        x = torch.roll(x.reshape(-1, H, W, C), shifts=(-shift_size, -shift_size), dims=(1, 2))  # B, H, W, C
    x = window_partition(x, (H, W), window_size, C)  # B*nW, ws*ws, C
    x = attn(x, mask=mask)  # B*nW, ws*ws, C
    x = window_reverse(x, (H, W), window_size, C)  # B, H, W, C
    if shift_size:
        x = torch.roll(x, shifts=(shift_size, shift_size), dims=(1, 2))  # B, H, W, C
    return x.reshape(-1, H * W, C)  # B, H*W, C


class SwinTransformerBlock(nn.Module):
    """(Shifted-)window attention block: LN → W-MSA → add → LN → MLP → add.

    Args:
        dim: channels.
        input_resolution: token grid (H, W) of this stage.
        num_heads: attention heads.
        window_size: window side; shrunk to the grid when the grid is smaller.
        shift_size: cyclic shift (0 for regular windows).
    """

    def __init__(self, dim: int, input_resolution: Tuple[int, int], num_heads: int, window_size: int = 7,
                 shift_size: int = 0, mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 norm_layer: type = nn.LayerNorm) -> None:
        super().__init__()
        self.dim = dim
        self.input_resolution = tuple(input_resolution)
        window_size, shift_size = fit_window(self.input_resolution, window_size, shift_size)
        self.window_size = window_size
        self.shift_size = shift_size
        H, W = self.input_resolution
        num_windows = (H // window_size) * (W // window_size)
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, num_windows, qkv_bias, qk_scale, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)
        # quantizer slots on the shortcut inputs of the two residual adds
        self.attn_residual_quantizer: nn.Module = nn.Identity()
        self.mlp_residual_quantizer: nn.Module = nn.Identity()
        mask = shifted_window_mask(self.input_resolution, window_size, shift_size) if shift_size else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: tokens with shape (B, H*W, C); returns the same shape."""
        H, W = self.input_resolution
        C = self.dim
        x = self.attn_residual_quantizer(x) + self.drop_path(shifted_window_pass(
            self.norm1(x), self.attn, (H, W), self.window_size, self.shift_size, self.attn_mask, C))  # B, H*W, C
        return self.mlp_residual_quantizer(x) + self.drop_path(self.mlp(self.norm2(x)))  # B, H*W, C


def merge_patches(x: torch.Tensor, resolution: Tuple[int, int], channels: int) -> torch.Tensor:
    """Concatenate each 2×2 neighbourhood of tokens, in the channel order of the original's ``cat([x0, x1, x2, x3])``.

    Args:
        x: tokens with shape (B, H*W, C).
        resolution: (H, W), even sides, static for the config.
        channels: C.

    Returns:
        tokens with shape (B, H/2*W/2, 4C).
    """
    H, W = resolution
    C = channels
    # row offset varies fastest in the original's channel order
    x = x.reshape(-1, H // 2, 2, W // 2, 2, C)  # B, H/2, dh, W/2, dw, C
    x = x.permute(0, 1, 3, 4, 2, 5)  # B, H/2, W/2, dw, dh, C
    return x.reshape(-1, (H // 2) * (W // 2), 4 * C)  # B, H/2*W/2, 4C


class PatchMerging(nn.Module):
    """Concatenate each 2×2 neighbourhood, normalise and project 4C → 2C, halving the grid.

    Args:
        input_resolution: token grid (H, W) before merging.
        dim: channels before merging.
    """

    def __init__(self, input_resolution: Tuple[int, int], dim: int, norm_layer: type = nn.LayerNorm) -> None:
        super().__init__()
        self.input_resolution = tuple(input_resolution)
        if self.input_resolution[0] % 2 or self.input_resolution[1] % 2:
            raise ValueError(f"token grid {self.input_resolution} has an odd side; PatchMerging needs even sides")
        self.dim = dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H*W, C) → (B, H/2*W/2, 2C)."""
        return self.reduction(self.norm(merge_patches(x, self.input_resolution, self.dim)))


class BasicLayer(nn.Module):
    """One stage: its blocks (even ones on regular windows, odd ones shifted), then an optional PatchMerging.

    Args:
        blocks: the stage's blocks, in order.
        downsample: PatchMerging at the end of the stage, or None for the last stage.
    """

    def __init__(self, blocks: Sequence[nn.Module], downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class PatchEmbed(nn.Module):
    """Image to patch tokens with a strided convolution: (B, 3, H, W) → (B, H/p*W/p, C)."""

    def __init__(self, img_size: int = 224, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96,
                 norm_layer: Optional[type] = None) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"image size {img_size} is not divisible by patch size {patch_size}")
        self.img_size = (img_size, img_size)
        self.patch_size = (patch_size, patch_size)
        self.patches_resolution = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.patches_resolution[0] * self.patches_resolution[1]
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # B, C, H/p, W/p
        x = x.reshape(-1, self.embed_dim, self.num_patches).transpose(1, 2)  # B, H/p*W/p, C
        return self.norm(x) if self.norm is not None else x


# make_block(stage, dim, resolution, shift_size, drop_path) -> one block of that stage
BlockFactory = Callable[[int, int, Tuple[int, int], int, float], nn.Module]
# make_merging(resolution, dim, norm_layer) -> the PatchMerging at the end of a stage
MergingFactory = Callable[[Tuple[int, int], int, type], nn.Module]


class SwinClassifier(nn.Module):
    """What Swin Transformer (V1, V2) and Swin-MLP share: patch embedding, the stages, the final norm, pooling, the head.

    Module names follow the original repository (``patch_embed``, ``absolute_pos_embed``, ``layers.{i}.blocks.{j}``,
    ``layers.{i}.downsample``, ``norm``, ``head``), so its checkpoints load.

    Args:
        make_block: builds one block of a stage (what the families do differently).
        make_merging: builds the PatchMerging between stages (Swin V2 normalises after the reduction).
        img_size, patch_size, in_chans: the input and its patches.
        num_classes: classifier outputs (0 for features only).
        embed_dim: channels of the first stage (doubled by every PatchMerging).
        depths: blocks per stage.
        window_size: window side in tokens (shifted blocks move by half of it).
        drop_rate: dropout after the position embedding.
        drop_path_rate: stochastic depth, rising linearly over the blocks to this rate.
        ape: absolute position embedding.
        patch_norm: LayerNorm after the patch embedding.
    """

    def __init__(self, make_block: BlockFactory, img_size: int = 224, patch_size: int = 4, in_chans: int = 3,
                 num_classes: int = 1000, embed_dim: int = 96, depths: Tuple[int, ...] = (2, 2, 6, 2),
                 window_size: int = 7, drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 norm_layer: type = nn.LayerNorm, ape: bool = False, patch_norm: bool = True,
                 make_merging: MergingFactory = PatchMerging) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.ape = ape
        self.patch_norm = patch_norm
        self.img_size = img_size
        self.in_chans = in_chans
        self.num_features = int(embed_dim * 2 ** (self.num_layers - 1))
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, norm_layer if patch_norm else None)
        grid = self.patch_embed.patches_resolution
        if ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, embed_dim))
            trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(p=drop_rate)
        n_blocks = sum(depths)  # stochastic depth, linear over blocks (plain floats: builds on the meta device too)
        dpr = [drop_path_rate * i / max(n_blocks - 1, 1) for i in range(n_blocks)]
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            dim = int(embed_dim * 2 ** i)
            resolution = (grid[0] // 2 ** i, grid[1] // 2 ** i)
            blocks = [make_block(i, dim, resolution, 0 if j % 2 == 0 else window_size // 2, dpr[sum(depths[:i]) + j])
                      for j in range(depth)]
            downsample = make_merging(resolution, dim, norm_layer) if i < self.num_layers - 1 else None
            self.layers.append(BasicLayer(blocks, downsample))
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
        """(B, 3, H, W) → pooled features (B, num_features)."""
        x = self.patch_embed(x)  # B, L, C
        if self.ape:
            x = x + self.absolute_pos_embed
        x = self.pos_drop(x)
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)  # B, L, C
        return x.mean(dim=1)  # B, C

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → logits (B, num_classes)."""
        return self.head(self.forward_features(x))


class SwinTransformer(SwinClassifier):
    """Swin Transformer classifier (Liu et al., 2021), export-friendly.

    Args:
        num_heads: attention heads per stage.
        mlp_ratio: MLP hidden width / channels.
        qkv_bias, qk_scale: of every WindowAttention.
        attn_drop_rate: dropout of the attention weights.
        other arguments: see :class:`SwinClassifier`.
    """

    def __init__(self, img_size: int = 224, patch_size: int = 4, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: int = 96, depths: Tuple[int, ...] = (2, 2, 6, 2), num_heads: Tuple[int, ...] = (3, 6, 12, 24),
                 window_size: int = 7, mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 norm_layer: type = nn.LayerNorm, ape: bool = False, patch_norm: bool = True) -> None:
        def make_block(stage: int, dim: int, resolution: Tuple[int, int], shift: int, drop_path: float) -> nn.Module:
            return SwinTransformerBlock(dim, resolution, num_heads[stage], window_size, shift, mlp_ratio, qkv_bias,
                                        qk_scale, drop_rate, attn_drop_rate, drop_path, norm_layer)

        super().__init__(make_block, img_size, patch_size, in_chans, num_classes, embed_dim, depths, window_size,
                         drop_rate, drop_path_rate, norm_layer, ape, patch_norm)
        self.mlp_ratio = mlp_ratio

    def no_weight_decay_keywords(self) -> set:
        return {"relative_position_bias_table"}
