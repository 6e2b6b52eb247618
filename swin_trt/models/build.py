"""Build a model from the config."""
from __future__ import annotations

import logging

import torch.nn as nn
from yacs.config import CfgNode

from swin_trt.errors import UserError

_LOG = logging.getLogger("swin")


def build_model(config: CfgNode) -> nn.Module:
    """The model that ``config.MODEL.TYPE`` names, with random weights."""
    model_type = config.MODEL.TYPE
    if model_type == "swin":
        from swin_trt.models.swin_transformer import SwinTransformer

        s = config.MODEL.SWIN
        return SwinTransformer(
            img_size=config.DATA.IMG_SIZE, patch_size=s.PATCH_SIZE, in_chans=s.IN_CHANS,
            num_classes=config.MODEL.NUM_CLASSES, embed_dim=s.EMBED_DIM, depths=tuple(s.DEPTHS),
            num_heads=tuple(s.NUM_HEADS), window_size=s.WINDOW_SIZE, mlp_ratio=s.MLP_RATIO, qkv_bias=s.QKV_BIAS,
            qk_scale=s.QK_SCALE, drop_rate=config.MODEL.DROP_RATE, drop_path_rate=config.MODEL.DROP_PATH_RATE,
            ape=s.APE, patch_norm=s.PATCH_NORM)
    if model_type == "swin_mlp":
        from swin_trt.models.swin_mlp import SwinMLP

        s = config.MODEL.SWIN_MLP
        return SwinMLP(
            img_size=config.DATA.IMG_SIZE, patch_size=s.PATCH_SIZE, in_chans=s.IN_CHANS,
            num_classes=config.MODEL.NUM_CLASSES, embed_dim=s.EMBED_DIM, depths=tuple(s.DEPTHS),
            num_heads=tuple(s.NUM_HEADS), window_size=s.WINDOW_SIZE, mlp_ratio=s.MLP_RATIO,
            drop_rate=config.MODEL.DROP_RATE, drop_path_rate=config.MODEL.DROP_PATH_RATE, ape=s.APE,
            patch_norm=s.PATCH_NORM)
    raise UserError(f"MODEL.TYPE {model_type!r} is not known: use 'swin' or 'swin_mlp'.")


def model_with_weights(config: CfgNode, resume: str, what: str = "exporting") -> nn.Module:
    """The config's model, in eval mode, with the weights of ``resume`` (random weights, with a warning, when empty)."""
    from swin_trt.models.checkpoint import load_weights

    model = build_model(config)
    if resume:
        load_weights(model, resume)
    else:
        _LOG.warning("no --resume given: %s random weights", what)
    return model.eval()
