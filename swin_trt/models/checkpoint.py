"""The one place that knows checkpoint layouts.

Accepted: the official Swin and Swin V2 releases (``{"model": state_dict}``
with the original key names, with or without the ``relative_position_index``,
``relative_coords_table`` and ``attn_mask`` buffers), our own training
checkpoints (same layout plus optimizer state), DDP-wrapped state dicts (``module.`` prefix), plain state
dicts, timm's layout (downsample at the start of the next stage, ``head.fc``) and Hugging Face transformers'
(``models/transformers_layout.py``), from any file or folder :mod:`models.weight_source` reads. Every rename and
drop is listed in :func:`checkpoint_filter` and :data:`models.transformers_layout.RENAMES`.
"""
from __future__ import annotations

import logging
import re
from typing import Dict, Iterable, List, Optional, Tuple

import torch
import torch.nn as nn

from swin_trt.errors import UserError

_LOG = logging.getLogger("swin")
# buffers the original saved; ours are rebuilt from the config
_DERIVED = re.compile(r"(relative_position_index|relative_coords_table|attn_mask)$")
HEAD_KEYS = ("head.weight", "head.bias")
# the family a state dict belongs to, told by a key only that family has (MODEL.TYPE, words for messages, marker)
FAMILIES = (("swinv2", "Swin V2", re.compile(r"\.(cpb_mlp|logit_scale)")),
            ("swin", "Swin V1", re.compile(r"\.relative_position_bias_table$")),
            ("swin_mlp", "Swin-MLP", re.compile(r"\.spatial_mlp\.")))


def model_family(keys: Iterable[str]) -> Optional[Tuple[str, str]]:
    """(MODEL.TYPE, name) of the Swin family whose keys these are, or None when no family's marker key is among them."""
    keys = list(keys)
    for model_type, name, marker in FAMILIES:
        if any(marker.search(k) for k in keys):
            return model_type, name
    return None


def unwrap_state_dict(checkpoint: Dict) -> Dict[str, torch.Tensor]:
    """The state dict inside a checkpoint file's dict (``model``, ``state_dict`` or the dict itself)."""
    for key in ("model", "state_dict"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    return checkpoint


def original_layout(state_dict: Dict[str, torch.Tensor], path: str = "checkpoint") -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """:func:`checkpoint_filter` of any accepted layout, transformers' included, and for each key the file's own
    name of that tensor (for messages).

    Raises:
        UserError: a transformers state dict with a tensor no rule maps (not a Swin classifier's).
    """
    from swin_trt.models.transformers_layout import from_transformers, is_transformers_layout

    origin: Dict[str, str] = {}
    if is_transformers_layout(list(state_dict)):
        try:
            state_dict, origin = from_transformers(state_dict)
        except KeyError as err:
            raise UserError(f"{path} holds transformers tensors that are not a Swin classifier's ({err.args[0]}): pass "
                            "the weights of a SwinForImageClassification or Swinv2ForImageClassification.") from None
    return checkpoint_filter(state_dict), origin


def checkpoint_filter(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Original key names from any accepted layout but transformers' (see :func:`original_layout`).

    - ``module.`` prefix (DDP) is stripped;
    - ``relative_position_index``, ``relative_coords_table`` and ``attn_mask`` are dropped (rebuilt from config);
    - timm layout: ``layers.{i}.downsample`` → ``layers.{i-1}.downsample``, ``head.fc.`` → ``head.``.
    """
    keys = [k[len("module."):] if k.startswith("module.") else k for k in state_dict]
    stages_with_downsample = {int(m.group(1)) for k in keys for m in [re.match(r"layers\.(\d+)\.downsample\.", k)] if m}
    # timm puts PatchMerging at the start of stages 1..n-1, the original at the end of stages 0..n-2
    timm_layout = "head.fc.weight" in keys or (bool(stages_with_downsample) and 0 not in stages_with_downsample)
    out = {}
    for key, value in state_dict.items():
        if key.startswith("module."):
            key = key[len("module."):]
        if _DERIVED.search(key):
            continue
        if timm_layout:
            key = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) - 1}.downsample.", key)
            key = re.sub(r"^head\.fc\.", "head.", key)
        out[key] = value
    return out


def _mismatches(model_sd: Dict[str, torch.Tensor], ckpt_sd: Dict[str, torch.Tensor],
                origin: Dict[str, str]) -> Tuple[List[str], List[str], List[str]]:
    """Missing, unexpected and misshapen tensors, each named as the file names it (``origin``) where that differs."""
    def named(key: str) -> str:
        return origin.get(key, key)

    missing = [k for k in model_sd if k not in ckpt_sd]
    unexpected = [named(k) for k in ckpt_sd if k not in model_sd]
    shape = [f"{named(k)} {tuple(ckpt_sd[k].shape)} vs {tuple(v.shape)}" for k, v in model_sd.items()
             if k in ckpt_sd and tuple(ckpt_sd[k].shape) != tuple(v.shape)]
    return missing, unexpected, shape


def load_weights(model: nn.Module, path: str, new_head: bool = False, what: str = "checkpoint") -> Dict:
    """Load the weights of ``path`` into ``model`` strictly.

    Args:
        model: the model built from the config.
        path: a weights reference (:mod:`models.weight_source`: .pth or .safetensors file, timm or transformers
            folder, ``hf:ORG/NAME``).
        new_head: fine-tuning to another number of classes: a head of another
            size is re-initialised (and logged) instead of being an error.
        what: word used in messages.

    Returns:
        the whole checkpoint dict (for optimizer/epoch state when resuming).

    Raises:
        UserError: the checkpoint is for another architecture or head size,
            naming the first mismatched keys.
    """
    from swin_trt.models.weight_source import read_checkpoint, resolve

    checkpoint = read_checkpoint(path)
    state_dict, origin = original_layout(unwrap_state_dict(checkpoint), path)
    model_sd = model.state_dict()
    if new_head:
        for k in HEAD_KEYS:
            if k in state_dict and k in model_sd and state_dict[k].shape != model_sd[k].shape:
                _LOG.warning("%s: %s has shape %s, the model %s: re-initialising the head for fine-tuning",
                             path, k, tuple(state_dict[k].shape), tuple(model_sd[k].shape))
                del state_dict[k]
        for k in HEAD_KEYS:
            state_dict.setdefault(k, model_sd[k]) if k in model_sd else None
    missing, unexpected, shape = _mismatches(model_sd, state_dict, origin)
    ours, theirs = model_family(model_sd), model_family(state_dict)
    if (missing or unexpected) and ours and theirs and ours != theirs:
        raise UserError(f"{what} {path} holds a {theirs[1]} model but the config builds a {ours[1]} model: pass a "
                        f"config with MODEL.TYPE {theirs[0]} (as the checkpoint was trained with).")
    if missing or unexpected or shape:
        details = "; ".join(filter(None, [
            f"shape mismatch: {', '.join(shape[:3])}" if shape else "",
            f"missing: {', '.join(missing[:3])}" if missing else "",
            f"unexpected: {', '.join(unexpected[:3])}" if unexpected else ""]))
        if resolve(path).is_folder:
            raise UserError(f"{path}: its config.json does not describe its tensors ({details}; shapes are the file's "
                            "vs config.json's): the folder's files do not belong together (or --opts changed the "
                            "model); download it again.")
        raise UserError(f"{what} {path} does not fit this model/config ({details}): pass the config the checkpoint was trained with.")
    model.load_state_dict(state_dict, strict=True)
    return checkpoint if isinstance(checkpoint, dict) else {}
