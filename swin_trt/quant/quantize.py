"""Wrap our Swin with ModelOpt fake quantizers, configured from the placement table.

ModelOpt converts every ``nn.Linear`` (and conv, norm...) into its quantized
twin with ``input_quantizer`` / ``weight_quantizer`` modules. It knows
nothing of attention matmuls or residual adds, so :class:`QuantWindowAttention`
and :class:`QuantSwinBlock` are registered for our attentions and blocks (Swin
V1's and V2's, which have the same slots): during ``mtq.quantize`` they replace
the ``nn.Identity`` quantizer slots of those modules with ``TensorQuantizer``
modules. The same registration makes ``mto.restore_from_modelopt_state``
rebuild them when a quantized checkpoint is loaded.

The ModelOpt config starts with every quantizer off and switches on exactly
the rows of :data:`quant.placement.PLACEMENT` left on by ``QUANT.DISABLED``.

Blackwell's block formats (``mxfp8``, ``nvfp4``) take ModelOpt's own presets (``MXFP8_DEFAULT_CFG``: E4M3 values with
one E8M0 scale per 32; ``NVFP4_DEFAULT_CFG``: E2M1 values with one E4M3 scale per 16 and a calibrated FP32 scale per
tensor) on the inputs and weights of the Linear GEMMs, whose quantize TensorRT fuses into the GEMM. What cannot take
them stays in the format Hopper and Blackwell both run, FP8 E4M3 per tensor (:func:`quantizer_attributes`): the two
attention matmuls, whose inputs are rank 4 (TensorRT's dynamic block quantize takes rank 2 and 3 only), the residual
shortcuts (they are stored, not fed to a GEMM), and a Linear whose input width is not a whole number of blocks (the
micro models' 48-wide first stage under MXFP8). The patch-embedding convolution stays in high precision as in every
format (TensorRT has no FP4 convolution). ModelOpt runs these block quantizers on CUDA only.
"""
from __future__ import annotations

import fnmatch
import logging
from typing import Any, Callable, Dict, List, Optional

import modelopt.torch.quantization as mtq
import torch.nn as nn
from modelopt.torch.quantization.nn import QuantModule, QuantModuleRegistry, TensorQuantizer
from yacs.config import CfgNode

from swin_trt.errors import UserError
from swin_trt.logs import third_party_output
from swin_trt.models.swin_transformer import SwinTransformerBlock, WindowAttention
from swin_trt.models.swin_transformer_v2 import SwinTransformerV2Block, WindowAttentionV2
from swin_trt.quant.placement import (ACTIVATION, BLOCK_FORMATS, WEIGHT, QuantSite, enabled_sites, placement_table,
                                     site_format)

_LOG = logging.getLogger("swin")
FORMATS = ("int8", "fp8") + BLOCK_FORMATS + ("auto",)
CALIB_METHODS = ("max", "histogram", "percentile")
PRESETS = {"mxfp8": "MXFP8_DEFAULT_CFG", "nvfp4": "NVFP4_DEFAULT_CFG"}  # ModelOpt's numerics for the block formats
FP8_PER_TENSOR = {"num_bits": (4, 3), "axis": None}
NOT_ON_A_CPU = ("{fmt} is quantized on an NVIDIA GPU (ModelOpt's block quantizers run on CUDA only, and this run has "
                "no CUDA GPU): run swin_quant_flow.py on one; the ONNX file it writes builds anywhere (TensorRT-RTX on "
                "a CPU, TensorRT 10.11 or later on any GPU) and runs on Blackwell.")


class QuantWindowAttention(QuantModule):
    """ModelOpt's quantized twin of ``WindowAttention`` (and V2's): TensorQuantizers at both inputs of q·kᵀ and attn·v.

    ModelOpt builds the class ``(QuantWindowAttention, WindowAttention)``, so
    the forward pass is the original one, calling the slots.
    """

    def _setup(self) -> None:
        self.q_bmm_quantizer = TensorQuantizer()
        self.k_bmm_quantizer = TensorQuantizer()
        self.attn_bmm_quantizer = TensorQuantizer()
        self.v_bmm_quantizer = TensorQuantizer()


class QuantSwinBlock(QuantModule):
    """ModelOpt's quantized twin of ``SwinTransformerBlock`` (and V2's): TensorQuantizers on the shortcuts of both adds."""

    def _setup(self) -> None:
        self.attn_residual_quantizer = TensorQuantizer()
        self.mlp_residual_quantizer = TensorQuantizer()


def register_quant_modules() -> None:
    """Tell ModelOpt how to quantize our attention and block (idempotent; needed before quantize and restore)."""
    for original, quantized in ((WindowAttention, QuantWindowAttention), (SwinTransformerBlock, QuantSwinBlock),
                                (WindowAttentionV2, QuantWindowAttention), (SwinTransformerV2Block, QuantSwinBlock)):
        if original not in QuantModuleRegistry:
            mtq.register(original_cls=original, quantized_cls=quantized)


def check_quant_options(fmt: str, calib_method: str, auto_formats: Optional[List[str]] = None) -> None:
    """Raise a :class:`UserError` for an unknown format or calibration method, or a pair that does not go together."""
    if fmt not in FORMATS:
        raise UserError(f"quantization format {fmt!r} is not known: use one of {', '.join(FORMATS)} (--format).")
    unknown = [f for f in auto_formats or () if f not in FORMATS or f == "auto"]
    if unknown:
        raise UserError(f"QUANT.AUTO_FORMATS names {', '.join(map(repr, unknown))}: use some of "
                        f"{', '.join(f for f in FORMATS if f != 'auto')} (--auto-formats).")
    if calib_method not in CALIB_METHODS:
        raise UserError(f"calibration method {calib_method!r} is not known: "
                        f"use one of {', '.join(CALIB_METHODS)} (--calib-method).")
    if fmt in ("fp8",) + BLOCK_FORMATS and calib_method != "max":
        raise UserError(f"{fmt.upper()} is calibrated with max only (its exponent keeps outliers without clipping): "
                        f"pass --calib-method max, not {calib_method}.")


def quantized_formats(config: CfgNode) -> List[str]:
    """The formats a run of ``config`` may quantize to: QUANT.FORMAT, or for auto QUANT.AUTO_FORMATS."""
    return list(config.QUANT.AUTO_FORMATS) if config.QUANT.FORMAT == "auto" else [config.QUANT.FORMAT]


def require_cuda_for(formats, device_is_cpu: bool = False) -> None:
    """Raise a :class:`UserError` when a block format is asked for and no CUDA GPU is visible (or ``--device cpu``)."""
    import torch

    blocks = [f for f in formats if f in BLOCK_FORMATS]
    if blocks and (device_is_cpu or not torch.cuda.is_available()):
        raise UserError(NOT_ON_A_CPU.format(fmt=" and ".join(f.upper() for f in blocks)))


def preset_attributes(fmt: str, tensor: str) -> Dict[str, Any]:
    """ModelOpt's own attributes of ``fmt`` (:data:`PRESETS`) for a Linear's ``weight`` or ``activation`` quantizer."""
    wanted = "*weight_quantizer" if tensor == WEIGHT else "*input_quantizer"
    entry = next(e for e in getattr(mtq, PRESETS[fmt])["quant_cfg"] if e.get("quantizer_name") == wanted)
    return dict(entry["cfg"])


def block_size(fmt: str) -> int:
    """Values per scale of a block format along the GEMM's reduction (last) axis: 32 (MXFP8), 16 (NVFP4)."""
    return int(preset_attributes(fmt, ACTIVATION)["block_sizes"][-1])


def quantizer_attributes(site: QuantSite, fmt: str, calib_method: str) -> Dict[str, Any]:
    """ModelOpt ``QuantizerAttributeConfig`` fields for one site.

    INT8: weights per output channel (axis 0 of the (out, in) weight), activations
    per tensor. FP8 (E4M3): per tensor for both, the only form ModelOpt exports
    to ONNX. MXFP8 and NVFP4: ModelOpt's presets on the GEMM rows, FP8 per tensor on
    the others (module docstring). Weights are always calibrated with max; activations with a
    histogram when ``calib_method`` is ``histogram`` or ``percentile``.
    """
    if fmt in BLOCK_FORMATS:  # the GEMM rows take the preset; the rest stays FP8 per tensor (module docstring)
        return preset_attributes(fmt, site.tensor) if site_format(site, fmt) == fmt else dict(FP8_PER_TENSOR)
    if fmt == "fp8":
        attributes: Dict[str, Any] = dict(FP8_PER_TENSOR)
    else:
        attributes = {"num_bits": 8, "axis": 0 if site.tensor == WEIGHT else None}
    if site.tensor != WEIGHT and calib_method != "max":
        attributes["calibrator"] = "histogram"
    return attributes


def build_quant_config(config: CfgNode, site_entries: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
    """The ``mtq.quantize`` config for ``config.QUANT``: all quantizers off, then the enabled placement rows in
    QUANT.FORMAT (for ``auto``: ``site_entries``, each quantizer in the format chosen for its module by
    quant/auto.py's ``explicit_quant_config``), then the modules of ``QUANT.KEEP_HIGH_PRECISION`` off again (every
    quantizer they own).

    The algorithm is ModelOpt's ``max`` for max calibration; for histogram
    methods it is None and :func:`quant.calibrate.calibrate` collects and
    loads the ranges itself (ModelOpt's own histogram path fails on CPU).
    """
    q = config.QUANT
    check_quant_options(q.FORMAT, q.CALIB_METHOD)
    entries: List[Dict[str, Any]] = [{"quantizer_name": "*", "enable": False}]
    if q.FORMAT == "auto":
        if site_entries is None:
            raise ValueError("QUANT.FORMAT auto needs the quantizer entries of the formats the search chose (quant/auto.py)")
        entries += site_entries
    else:
        entries += [{"quantizer_name": site.quantizer, "cfg": quantizer_attributes(site, q.FORMAT, q.CALIB_METHOD)}
                    for site in enabled_sites(q.DISABLED, placement_table(config.MODEL.TYPE))]
    for pattern in q.KEEP_HIGH_PRECISION:
        entries.append({"quantizer_name": f"{pattern}.*", "enable": False})
    return {"quant_cfg": entries, "algorithm": "max" if q.CALIB_METHOD == "max" else None}


def quantize_model(model: nn.Module, config: CfgNode, forward_loop: Optional[Callable[[nn.Module], None]] = None,
                   site_entries: Optional[List[Dict[str, Any]]] = None) -> nn.Module:
    """Insert fake quantizers into ``model`` in place (and calibrate with max when ``forward_loop`` is given).

    Args:
        model: our SwinTransformer or SwinTransformerV2, not yet quantized.
        config: supplies QUANT.FORMAT, QUANT.CALIB_METHOD and QUANT.DISABLED.
        forward_loop: ``forward_loop(model)`` runs the calibration images; used by the max algorithm.
        site_entries: for QUANT.FORMAT auto, the quantizer entries of the chosen formats (quant/auto.py).
    """
    if is_quantized(model):
        raise UserError("the model already holds quantizers: quantize a model with plain weights.")
    check_keep_patterns(model, config.QUANT.KEEP_HIGH_PRECISION)
    register_quant_modules()
    quant_config = build_quant_config(config, site_entries)
    quant_config["quant_cfg"] += whole_block_entries(model, quant_config["quant_cfg"])  # later entries win
    with third_party_output("modelopt"):
        return mtq.quantize(model, quant_config, forward_loop)


def whole_block_entries(model: nn.Module, entries: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """FP8-per-tensor entries for every Linear that a block format would reach but whose input width is not a whole
    number of its blocks (TensorRT's dynamic block quantize needs whole blocks along the GEMM's reduction axis)."""
    fixes = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        for part in ("input", "weight"):
            quantizer = f"{name}.{part}_quantizer"
            last = next((e for e in reversed(entries) if fnmatch.fnmatchcase(quantizer, e["quantizer_name"])), None)
            if last is None or last.get("enable") is False:  # off (a kept module, a disabled row): left off
                continue
            blocks = (last.get("cfg") or {}).get("block_sizes") or {}
            size = blocks.get(-1) or blocks.get("-1")
            if size and module.in_features % int(size):
                fixes.append({"quantizer_name": quantizer, "cfg": dict(FP8_PER_TENSOR)})
    if fixes:
        _LOG.info("%d quantizers of Linears whose input width is not a whole number of blocks stay FP8 per tensor",
                  len(fixes))
    return fixes


def check_keep_patterns(model: nn.Module, patterns: List[str]) -> None:
    """Raise a :class:`UserError` for a ``QUANT.KEEP_HIGH_PRECISION`` pattern that matches no module of ``model``."""
    names = [name for name, _ in model.named_modules() if name]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise UserError(f"QUANT.KEEP_HIGH_PRECISION pattern {pattern!r} matches no module of this model: module "
                            "names look like layers.0.blocks.1.attn.qkv or layers.*.blocks.*.mlp.fc1 (swin_quant_flow.py "
                            "--sensitivity --sensitivity-by layer lists the quantized ones).")


def is_quantized(model: nn.Module) -> bool:
    """True when ``model`` holds ModelOpt quantizers."""
    return any(isinstance(m, TensorQuantizer) for m in model.modules())


def quantizer_modules(model: nn.Module) -> Dict[str, TensorQuantizer]:
    """The TensorQuantizer modules that are switched on, by name, in model order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, TensorQuantizer) and m.is_enabled}


def enabled_quantizers(model: nn.Module) -> List[str]:
    """Names of the TensorQuantizer modules that are switched on, in model order."""
    return list(quantizer_modules(model))
