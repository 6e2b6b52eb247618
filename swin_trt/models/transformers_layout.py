"""Hugging Face transformers' Swin and Swin V2 state dicts in the original repository's key names.

transformers writes ``SwinForImageClassification`` and ``Swinv2ForImageClassification`` (``save_pretrained``, the
Hub's ``microsoft/swin*`` repositories) under its own names, and since version 5 keeps other names in memory. Both
map here, every rename listed in :data:`RENAMES`:

- the ``swin.`` / ``swinv2.`` prefix goes; ``embeddings.patch_embeddings.projection`` is ``patch_embed.proj``,
  ``embeddings.norm`` is ``patch_embed.norm``, ``embeddings.position_embeddings`` is ``absolute_pos_embed``;
- in each block ``layernorm_before``/``layernorm_after`` are ``norm1``/``norm2`` (also in V2, where they follow the
  attention and the MLP), ``attention.output.dense`` (``attention.o_proj``) is ``attn.proj``,
  ``intermediate.dense``/``output.dense`` (``mlp.fc1``/``mlp.fc2``) are ``mlp.fc1``/``mlp.fc2``;
- ``query``/``key``/``value`` (``q_proj``/``k_proj``/``v_proj``) are concatenated into ``attn.qkv`` in that order;
  V1's biases likewise, V2's ``query``/``value`` biases are ``q_bias``/``v_bias`` (its ``key`` has none);
- V2's ``continuous_position_bias_mlp`` is ``cpb_mlp``; ``encoder.layers.{i}.downsample`` stays at the end of stage
  ``i`` as in the original; ``layernorm`` is ``norm``, ``classifier`` is ``head``;
- buffers (``relative_position_index``, ``relative_coords_table``) and the masked-image-modelling ``mask_token`` are
  dropped.
"""
from __future__ import annotations

import re
from typing import Dict, List, Tuple

import torch

_BLOCK = r"encoder\.layers\.(\d+)\.blocks\.(\d+)\."
_OURS_BLOCK = r"layers.\1.blocks.\2."
# (pattern over the key without its swin./swinv2. prefix, replacement); None drops the key
RENAMES: Tuple[Tuple[str, object], ...] = (
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^embeddings\.norm\.", "patch_embed.norm."),
    (r"^embeddings\.position_embeddings$", "absolute_pos_embed"),
    (r"^embeddings\.mask_token$", None),
    (rf"^{_BLOCK}layernorm_before\.", rf"{_OURS_BLOCK}norm1."),
    (rf"^{_BLOCK}layernorm_after\.", rf"{_OURS_BLOCK}norm2."),
    (rf"^{_BLOCK}attention\.(?:self\.|relative_position_bias\.)relative_position_bias_table$",
     rf"{_OURS_BLOCK}attn.relative_position_bias_table"),
    (rf"^{_BLOCK}attention\.(?:self\.|relative_position_bias\.)?(?:relative_position_index|relative_coords_table)$", None),
    (rf"^{_BLOCK}attention\.self\.logit_scale$", rf"{_OURS_BLOCK}attn.logit_scale"),
    (rf"^{_BLOCK}attention\.self\.continuous_position_bias_mlp\.", rf"{_OURS_BLOCK}attn.cpb_mlp."),
    (rf"^{_BLOCK}attention\.(?:output\.dense|o_proj)\.", rf"{_OURS_BLOCK}attn.proj."),
    (rf"^{_BLOCK}(?:intermediate\.dense|mlp\.fc1)\.", rf"{_OURS_BLOCK}mlp.fc1."),
    (rf"^{_BLOCK}(?:output\.dense|mlp\.fc2)\.", rf"{_OURS_BLOCK}mlp.fc2."),
    (r"^encoder\.layers\.(\d+)\.downsample\.", r"layers.\1.downsample."),
    (r"^layernorm\.", "norm."),
    (r"^classifier\.", "head."),
)
# q, k, v of a block, fused into qkv: (pattern, which part)
_QKV = re.compile(rf"^{_BLOCK}attention\.(?:self\.(query|key|value)|(q|k|v)_proj)\.(weight|bias)$")
_PARTS = {"query": 0, "key": 1, "value": 2, "q": 0, "k": 1, "v": 2}
PREFIXES = ("swin.", "swinv2.")


def is_transformers_layout(keys: List[str]) -> bool:
    """True when the keys are transformers' (its ``swin.``/``swinv2.`` model prefix, or its attention names)."""
    return any(k.startswith(PREFIXES) or ".attention.self." in k or ".attention.q_proj." in k for k in keys)


def from_transformers(state_dict: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """The original's keys for a transformers state dict, and for each new key the transformers key(s) it came from
    (for messages that name the file's own tensors).

    Raises:
        KeyError: a key no rule maps (it is named), e.g. of a transformers model that is not a Swin classifier.
    """
    out: Dict[str, torch.Tensor] = {}
    origin: Dict[str, str] = {}
    qkv: Dict[Tuple[str, str], Dict[int, Tuple[str, torch.Tensor]]] = {}
    v2 = any(k.startswith("swinv2.") or k.endswith(".logit_scale") for k in state_dict)
    for key, value in state_dict.items():
        bare = key.split(".", 1)[1] if key.startswith(PREFIXES) else key
        match = _QKV.match(bare)
        if match:
            stage, block, named, short, kind = match.groups()
            qkv.setdefault((f"layers.{stage}.blocks.{block}.attn.", kind), {})[_PARTS[named or short]] = (key, value)
            continue
        for pattern, replacement in RENAMES:
            if re.match(pattern, bare):
                if replacement is not None:
                    new = re.sub(pattern, replacement, bare)
                    out[new], origin[new] = value, key
                break
        else:
            raise KeyError(key)
    for (prefix, kind), parts in qkv.items():
        names = ", ".join(parts[i][0] for i in sorted(parts))
        if kind == "bias" and v2:  # V2: learnable q and v biases; k has none (qkv is bias-free, as in the original)
            for index, name in ((0, "q_bias"), (2, "v_bias")):
                if index in parts:
                    out[prefix + name], origin[prefix + name] = parts[index][1], parts[index][0]
            continue
        if sorted(parts) != [0, 1, 2]:
            raise KeyError(f"{names} (a {kind} of q, k and v is missing)")
        out[f"{prefix}qkv.{kind}"] = torch.cat([parts[i][1] for i in range(3)], dim=0)
        origin[f"{prefix}qkv.{kind}"] = names
    return out, origin
