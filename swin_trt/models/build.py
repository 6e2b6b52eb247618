"""Build a model from the config."""
from __future__ import annotations

import logging

import torch
import torch.nn as nn
from yacs.config import CfgNode

from swin_trt.config import MODEL_NODES, model_node
from swin_trt.errors import UserError

_LOG = logging.getLogger("swin")


def build_model(config: CfgNode) -> nn.Module:
    """The model that ``config.MODEL.TYPE`` names (``swin``, ``swinv2``, ``swin_mlp``), with random weights.

    Raises:
        UserError: unknown MODEL.TYPE, or an architecture the model cannot take (a grid that does not split into
            windows, an odd grid before a PatchMerging, PRETRAINED_WINDOW_SIZES not one per stage), in one sentence.
    """
    try:
        return _build(config)
    except ValueError as err:  # the models check their own shapes; here they become the user's config mistake
        node = MODEL_NODES.get(config.MODEL.TYPE, "SWIN")
        raise UserError(f"config {config.MODEL.NAME} describes no {config.MODEL.TYPE} model ({err}): check "
                        f"DATA.IMG_SIZE and MODEL.{node}.PATCH_SIZE, WINDOW_SIZE, DEPTHS and the per-stage lists.") from None


def _build(config: CfgNode) -> nn.Module:
    model = _build_family(config)
    set_block_norm_eps(model, config.MODEL.LAYER_NORM_EPS)
    return model


def set_block_norm_eps(model: nn.Module, eps: float) -> None:
    """Give the blocks' LayerNorms and the final norm ``eps`` (MODEL.LAYER_NORM_EPS): the ones transformers builds with
    its ``layer_norm_eps``; the patch-embedding and merging norms keep 1e-5 there, as in the original."""
    norms = [model.norm] + [norm for layer in model.layers for block in layer.blocks
                            for norm in (getattr(block, "norm1", None), getattr(block, "norm2", None)) if norm is not None]
    for norm in norms:
        norm.eps = float(eps)


def _build_family(config: CfgNode) -> nn.Module:
    s = model_node(config)  # one sentence for an unknown MODEL.TYPE
    common = dict(img_size=config.DATA.IMG_SIZE, patch_size=s.PATCH_SIZE, in_chans=s.IN_CHANS,
                  num_classes=config.MODEL.NUM_CLASSES, embed_dim=s.EMBED_DIM, depths=tuple(s.DEPTHS),
                  num_heads=tuple(s.NUM_HEADS), window_size=s.WINDOW_SIZE, mlp_ratio=s.MLP_RATIO,
                  drop_rate=config.MODEL.DROP_RATE, drop_path_rate=config.MODEL.DROP_PATH_RATE, ape=s.APE,
                  patch_norm=s.PATCH_NORM)
    if config.MODEL.TYPE == "swin":
        from swin_trt.models.swin_transformer import SwinTransformer

        return SwinTransformer(qkv_bias=s.QKV_BIAS, qk_scale=s.QK_SCALE, **common)
    if config.MODEL.TYPE == "swinv2":
        from swin_trt.models.swin_transformer_v2 import SwinTransformerV2

        return SwinTransformerV2(qkv_bias=s.QKV_BIAS, pretrained_window_sizes=tuple(s.PRETRAINED_WINDOW_SIZES), **common)
    from swin_trt.models.swin_mlp import SwinMLP

    return SwinMLP(**common)


def model_with_weights(config: CfgNode, resume: str, what: str = "exporting") -> nn.Module:
    """The config's model, in eval mode, with the weights of ``resume`` (random weights, with a warning, when empty)."""
    from swin_trt.models.checkpoint import load_weights

    model = build_model(config)
    if resume:
        load_weights(model, resume)
    else:
        _LOG.warning("no --resume given: %s random weights", what)
    return model.eval()


def spread_weights(model: nn.Module, seed: int = 0, scale: float = 0.05) -> nn.Module:
    """Move every parameter of ``model`` off its initial value with seeded noise (``scale`` times a standard normal;
    the norms' weights around 1), in place: random weights whose logits differ clearly between classes and images
    (Swin V2 starts its post-norm weights at zero). For benchmarks and tests that have no trained checkpoint."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            p.copy_(1 + 0.1 * noise if "norm" in name and name.endswith("weight") else p + scale * noise)
    return model
