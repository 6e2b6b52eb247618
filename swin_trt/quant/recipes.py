"""The quantization recipes a user can choose between, and the table that compares them.

A recipe is ``swin_quant_flow.py`` with some flags: PTQ by format and calibration method, SmoothQuant folded into
LayerNorm (QUANT.SMOOTH_ALPHA), modules kept in high precision (QUANT.KEEP_HIGH_PRECISION), AutoQuantize
(``--format auto``) and QAT. ``benchmarks/quant_recipes.py`` runs them and writes ``quant_recipes.json``, which the
report shows as its "Quantization recipes" table when it finds the file in the results folder.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

# V1: the GEMMs that read a LayerNorm's output (where post-LayerNorm outliers land); V2: its first stage's blocks and
# merging (its residual stream carries them there, quant/outliers.py)
KEEP_DEFAULT = {"swin": ["layers.*.blocks.*.attn.qkv", "layers.*.blocks.*.mlp.fc1"],
                "swinv2": ["layers.0.blocks.*", "layers.0.downsample"]}


def recipes(model_type: str, keep: Optional[Sequence[str]] = None, smooth_alpha: float = 0.5,
            effective_bits: float = 9.0) -> List[Tuple[str, List[str]]]:
    """(name, swin_quant_flow.py flags) of every recipe, PTQ ones first, QAT last."""
    keep = list(keep or KEEP_DEFAULT.get(model_type, []))
    keep_opt = "[" + ", ".join(f"'{k}'" for k in keep) + "]"
    ptq = ["--quantize", "--ptq-only"]
    return [
        ("INT8 PTQ, max", ptq),
        ("INT8 PTQ, percentile", ptq + ["--calib-method", "percentile"]),
        ("INT8 PTQ, entropy", ptq + ["--calib-method", "histogram"]),
        ("FP8 PTQ, max", ptq + ["--format", "fp8"]),
        (f"INT8 PTQ, SmoothQuant α={smooth_alpha:g}", ptq + ["--opts", "QUANT.SMOOTH_ALPHA", str(smooth_alpha)]),
        (f"INT8 PTQ, kept: {', '.join(keep)}", ptq + ["--opts", "QUANT.KEEP_HIGH_PRECISION", keep_opt]),
        (f"auto (INT8/FP8/FP16), {effective_bits:g} bits", ptq + ["--format", "auto", "--effective-bits",
                                                                 str(effective_bits)]),
        ("INT8 QAT, max", ["--quantize"]),
    ]


def gemm_counts(summary: Dict[str, Any]) -> Dict[str, int]:
    """Matrix multiplies by precision (linear and attention together) of a precision-plan summary."""
    counts: Dict[str, int] = {}
    for by_precision in summary.get("gemms", {}).values():
        for precision, n in by_precision.items():
            counts[precision] = counts.get(precision, 0) + n
    return counts


def recipe_table(result: Dict[str, Any]) -> List[Dict[str, str]]:
    """Rows of the "Quantization recipes" table from ``quant_recipes.json``."""
    fp32 = result.get("fp32_acc1")
    rows = []
    for r in result.get("recipes", []):
        acc1 = r.get("onnx_acc1")
        gemms = ", ".join(f"{p} {n}" for p, n in sorted(r.get("gemms", {}).items())) or "–"
        ratio = r.get("bytes_vs_fp16")
        rows.append({"recipe": r["recipe"], "Acc@1 (ONNX Runtime)": f"{acc1:.3f}" if acc1 is not None else r.get("status", "–"),
                     "Δ vs FP32": f"{acc1 - fp32:+.3f}" if acc1 is not None and fp32 is not None else "",
                     "GEMMs by precision": gemms,
                     "bytes vs FP16": f"{ratio:.3f}×" if ratio is not None else "–",
                     "seconds": f"{r['seconds']:.0f}" if r.get("seconds") is not None else ""})
    return rows
