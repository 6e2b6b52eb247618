"""AutoQuantize: a format per module (INT8, FP8 or high precision) chosen by ModelOpt's search, placed as our own.

``mtq.auto_quantize`` scores every Linear under each candidate format (the loss gradient against the quantization
error on the calibration images) and picks the set of formats with the least total score whose weights average at
most ``effective_bits`` bits (INT8 and FP8 both count 8, an unquantized weight 16: with ``--effective-bits 9`` about
one weight in eight stays in 16 bits). It searches only what it knows, Linear layers. The search runs on a copy of
the plain model; its answer (module -> format) then becomes an explicit quantizer config for :func:`quantize_model`,
so calibration, the checkpoint and the Q/DQ export are those of every other recipe. The quantizers ModelOpt does not
search, ours, follow the Linear that makes or takes their tensor:

- the inputs of q·kᵀ and attn·v (q, k, v and the softmax output) follow ``attn.qkv``, whose output q, k and v are;
- Swin V1: the shortcut of the attention add follows ``attn.proj`` (the add fuses into that GEMM's epilogue), the
  shortcut of the MLP add follows ``mlp.fc2``;
- Swin V2: the shortcuts are the residual stream that ``attn.qkv`` and ``mlp.fc1`` read (post-norm blocks), the very
  tensors those GEMMs quantize: they follow ``attn.qkv`` and ``mlp.fc1``, so a stream whose outliers sent those GEMMs
  to FP8 or FP16 is not quantized to INT8 on the shortcut either.

A module whose format is "none" keeps no quantizer; its GEMM runs in ``QUANT.HIGH_PRECISION``. The formats searched
are ``QUANT.AUTO_FORMATS`` (``--auto-formats``), Blackwell's MXFP8 and NVFP4 among them on a GPU: ModelOpt counts their
bits with their scales (NVFP4 4.5). A follower of a Linear in a block format takes FP8 per tensor, as in every block
recipe (quant/quantize.py).
"""
from __future__ import annotations

import copy
import fnmatch
import logging
from typing import Any, Dict, Iterable, List

import modelopt.torch.quantization as mtq
import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode

from swin_trt.logs import third_party_output
from swin_trt.quant.placement import ACTIVATION, WEIGHT, QuantSite, enabled_sites, placement_table

_LOG = logging.getLogger("swin")
SEARCHED = ("int8", "fp8")  # QUANT.AUTO_FORMATS' default
NONE = "none"
# our quantizer slots -> the Linear (relative to the block) whose format they take, by MODEL.TYPE
_ATTENTION = {"attn.q_bmm_quantizer": "attn.qkv", "attn.k_bmm_quantizer": "attn.qkv",
              "attn.attn_bmm_quantizer": "attn.qkv", "attn.v_bmm_quantizer": "attn.qkv"}
FOLLOWS = {"swin": {**_ATTENTION, "attn_residual_quantizer": "attn.proj", "mlp_residual_quantizer": "mlp.fc2"},
           "swinv2": {**_ATTENTION, "attn_residual_quantizer": "attn.qkv", "mlp_residual_quantizer": "mlp.fc1"}}


def format_attributes(fmt: str, site: QuantSite, calib_method: str = "max") -> Dict[str, Any]:
    """Quantizer attributes of one placement row's tensor in ``fmt`` (as :func:`quant.quantize.quantizer_attributes`)."""
    from swin_trt.quant.quantize import quantizer_attributes

    return quantizer_attributes(site, fmt, calib_method if fmt == "int8" else "max")


LINEAR_INPUT = QuantSite("fc1.input", "*input_quantizer", ACTIVATION, True, "a searched Linear's input")
LINEAR_WEIGHT = QuantSite("fc1.weight", "*weight_quantizer", WEIGHT, True, "a searched Linear's weight")


def _search_config(fmt: str) -> Dict[str, Any]:
    """A candidate format for ``mtq.auto_quantize``: a Linear's input and weight quantizers in ``fmt``."""
    return {"quant_cfg": [{"quantizer_name": "*weight_quantizer", "cfg": format_attributes(fmt, LINEAR_WEIGHT)},
                          {"quantizer_name": "*input_quantizer", "cfg": format_attributes(fmt, LINEAR_INPUT)}],
            "algorithm": "max"}


def _recipe_format(recipe: Any) -> str:
    """``int8``, ``fp8`` or ``none`` of one of ModelOpt's QuantRecipe objects (read from its weight quantizer)."""
    config = getattr(recipe, "config", None)
    entries = getattr(config, "quant_cfg", None) or []
    for entry in entries:
        entry = entry if isinstance(entry, dict) else dict(entry)
        if str(entry.get("quantizer_name", "")).endswith("weight_quantizer"):
            cfg = entry.get("cfg") or {}
            bits = cfg.get("num_bits")
            bits = tuple(bits) if isinstance(bits, (list, tuple)) else bits
            if bits == (2, 1):
                return "nvfp4"
            if bits == (4, 3):
                return "mxfp8" if cfg.get("block_sizes") else "fp8"
            return "int8"
    return NONE


def searchable_linears(model: nn.Module, config: CfgNode) -> List[str]:
    """The Linear modules whose input or weight row of the placement table is on and that no keep pattern names."""
    sites = enabled_sites(config.QUANT.DISABLED, placement_table(config.MODEL.TYPE))
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name, p + ".*") for p in config.QUANT.KEEP_HIGH_PRECISION):
            continue
        if any(fnmatch.fnmatchcase(f"{name}.{part}_quantizer", s.quantizer) for s in sites for part in ("input", "weight")):
            names.append(name)
    return names


def search_formats(model: nn.Module, config: CfgNode, images: Iterable, effective_bits: float,
                   device: torch.device) -> Dict[str, str]:
    """Module name -> a format of ``QUANT.AUTO_FORMATS`` or ``none`` for every searchable Linear, by
    ``mtq.auto_quantize``.

    Args:
        model: the plain model (not modified: the search runs on a copy).
        images: labelled calibration batches (calibration and scores).
        effective_bits: the weight-bit budget, 8 (everything 8-bit) to 16 (nothing quantized); from 4.5 with NVFP4.

    Raises:
        UserError: a budget below the smallest format searched.
    """
    from swin_trt.errors import UserError
    from swin_trt.quant.quantize import register_quant_modules

    searched_formats = tuple(config.QUANT.AUTO_FORMATS) or SEARCHED
    smallest = min(float(format_attributes(f, LINEAR_WEIGHT).get("effective_bits", 8)) for f in searched_formats)
    if effective_bits < smallest:
        raise UserError(f"--effective-bits {effective_bits:g} is below the {smallest:g} bits of the smallest format "
                        f"searched ({', '.join(searched_formats)}): pass at least {smallest:g}.")
    register_quant_modules()
    batches = [(x.to(device), y.to(device)) for x, y in images]
    searched = searchable_linears(model, config)
    others = [name for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and name not in searched]
    candidate = copy.deepcopy(model).to(device).eval()
    with third_party_output("modelopt auto_quantize"):  # its progress bars and notes (the log file keeps them)
        _, state = mtq.auto_quantize(candidate, constraints={"effective_bits": float(effective_bits)},
                                     quantization_formats=[_search_config(f) for f in searched_formats],
                                     data_loader=batches,
                                     forward_step=lambda m, batch: m(batch[0]),
                                     loss_func=lambda output, batch: F.cross_entropy(output, batch[1]),
                                     disabled_layers=others or None, num_calib_steps=len(batches),
                                     num_score_steps=len(batches), verbose=False)
    chosen = {key[:-len(".quant_recipe")]: _recipe_format(recipe) for key, recipe in state["best"]["recipe"].items()}
    formats = {name: chosen.get(name, NONE) for name in searched}
    _LOG.info("AutoQuantize (effective bits %.2f of %.2f asked): %s", state["best"]["constraints"]["effective_bits"],
              effective_bits, ", ".join(f"{f} {sum(v == f for v in formats.values())}"
                                        for f in list(searched_formats) + [NONE]))
    return formats


def explicit_quant_config(config: CfgNode, formats: Dict[str, str]) -> List[Dict[str, Any]]:
    """``quant_cfg`` entries for the chosen ``formats``: each searched Linear's input and weight quantizers, and the
    quantizers that follow it (:data:`FOLLOWS`), in its format, wherever their placement row is on (the caller
    switches everything else off first)."""
    sites = enabled_sites(config.QUANT.DISABLED, placement_table(config.MODEL.TYPE))
    wanted: Dict[str, str] = {}
    for linear, fmt in formats.items():
        for part in ("input", "weight"):
            wanted[f"{linear}.{part}_quantizer"] = fmt
        for suffix, leader in FOLLOWS[config.MODEL.TYPE].items():
            if linear.endswith("." + leader):
                wanted[f"{linear[:-len(leader) - 1]}.{suffix}"] = fmt
    entries = []
    for name, fmt in wanted.items():
        site = next((s for s in sites if fnmatch.fnmatchcase(name, s.quantizer)), None)
        if site is not None and fmt != NONE:
            entries.append({"quantizer_name": name, "cfg": format_attributes(fmt, site, config.QUANT.CALIB_METHOD)})
    return entries


def format_rows(formats: Dict[str, str]) -> List[Dict[str, str]]:
    """The chosen format of every searched module, for the table the flow prints."""
    return [{"module": name, "format": fmt} for name, fmt in formats.items()]
