"""Where the quantizers go: THE table of quantization sites, in one place.

Each row names one kind of tensor in the model, the ModelOpt quantizer that
sits on it (a wildcard over quantizer module names), whether it is on by
default, and why. The rows follow where TensorRT fuses Q/DQ pairs into INT8
kernels, as the original pytorch-quantization flow did:

- both inputs of every Linear (activation per tensor, weight per output
  channel): qkv, proj, fc1, fc2, PatchMerging's reduction and the head;
- both inputs of the two attention matmuls, q·kᵀ and softmax(attn)·v
  (the quantizer slots of ``models.swin_transformer.WindowAttention``);
- the shortcut input of the two residual adds of every block, so the add
  can run in INT8 fused into the producing GEMM.

The patch-embedding conv stays in higher precision: with 3 input channels it
is well under 1% of the FLOPs, so INT8 gains nothing there while the raw
image is the input most sensitive to rounding.

Swin V2 (MODEL.TYPE swinv2) has the same sites under the same module names,
with the differences of its block (:data:`PLACEMENT_V2`): q and k are
quantized after their L2 normalisation (values in [-1, 1], the logit scale
applied after the matmul), and the residual adds follow a LayerNorm, not a
GEMM (post-norm): their rows stay on for another reason (see ``_v2_rows``).

Swin-MLP (MODEL.TYPE swin_mlp) has no rows and is not quantized:
swin_quant_flow.py refuses it with one sentence. Its token mixing is a
grouped 1×1 convolution over the window's tokens, not attention, its blocks
have no quantizer slots, and no Swin-MLP checkpoint is among the official
Swin-T/S/B/L models this toolkit deploys; it exports and builds in FP32 and
FP16 like Swin Transformer.

Switch rows off with ``QUANT.DISABLED`` (a list of row names, or of groups:
``"qkv"`` means ``qkv.input`` and ``qkv.weight``), e.g.
``--opts QUANT.DISABLED "['head', 'attn_residual']"``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, List, Sequence, Tuple

from swin_trt.errors import UserError

WEIGHT = "weight"
ACTIVATION = "activation"


@dataclass(frozen=True)
class QuantSite:
    """One row of the placement table.

    Attributes:
        name: row name, used by ``QUANT.DISABLED`` (``group.part`` or a single word).
        quantizer: ModelOpt ``quantizer_name`` wildcard matching the TensorQuantizer modules of this site.
        tensor: ``weight`` (per output channel in INT8) or ``activation`` (per tensor, calibrated).
        enabled: on by default.
        reason: why the site is there, or why it is off.
    """

    name: str
    quantizer: str
    tensor: str
    enabled: bool
    reason: str

    @property
    def group(self) -> str:
        return self.name.split(".")[0]


PLACEMENT: Tuple[QuantSite, ...] = (
    QuantSite("patch_embed.input", "patch_embed.proj.input_quantizer", ACTIVATION, False,
              "3-channel conv, <1% of FLOPs: INT8 buys nothing and the raw image is the most sensitive input"),
    QuantSite("patch_embed.weight", "patch_embed.proj.weight_quantizer", WEIGHT, False,
              "kept with its input in higher precision"),
    QuantSite("qkv.input", "*attn.qkv.input_quantizer", ACTIVATION, True, "INT8 GEMM input"),
    QuantSite("qkv.weight", "*attn.qkv.weight_quantizer", WEIGHT, True, "INT8 GEMM weight, per output channel"),
    QuantSite("attn.q", "*attn.q_bmm_quantizer", ACTIVATION, True, "q (already scaled) into the INT8 q·kᵀ matmul"),
    QuantSite("attn.k", "*attn.k_bmm_quantizer", ACTIVATION, True, "k into the INT8 q·kᵀ matmul"),
    QuantSite("attn.softmax", "*attn.attn_bmm_quantizer", ACTIVATION, True, "attention weights into the INT8 attn·v matmul"),
    QuantSite("attn.v", "*attn.v_bmm_quantizer", ACTIVATION, True, "v into the INT8 attn·v matmul"),
    QuantSite("proj.input", "*attn.proj.input_quantizer", ACTIVATION, True, "INT8 GEMM input"),
    QuantSite("proj.weight", "*attn.proj.weight_quantizer", WEIGHT, True, "INT8 GEMM weight, per output channel"),
    QuantSite("attn_residual", "*attn_residual_quantizer", ACTIVATION, True,
              "shortcut of the attention add: lets the add fuse into the proj GEMM"),
    QuantSite("fc1.input", "*mlp.fc1.input_quantizer", ACTIVATION, True, "INT8 GEMM input"),
    QuantSite("fc1.weight", "*mlp.fc1.weight_quantizer", WEIGHT, True, "INT8 GEMM weight, per output channel"),
    QuantSite("fc2.input", "*mlp.fc2.input_quantizer", ACTIVATION, True, "INT8 GEMM input (after GELU)"),
    QuantSite("fc2.weight", "*mlp.fc2.weight_quantizer", WEIGHT, True, "INT8 GEMM weight, per output channel"),
    QuantSite("mlp_residual", "*mlp_residual_quantizer", ACTIVATION, True,
              "shortcut of the MLP add: lets the add fuse into the fc2 GEMM"),
    QuantSite("reduction.input", "*downsample.reduction.input_quantizer", ACTIVATION, True, "PatchMerging GEMM input"),
    QuantSite("reduction.weight", "*downsample.reduction.weight_quantizer", WEIGHT, True,
              "PatchMerging GEMM weight, per output channel"),
    QuantSite("head.input", "head.input_quantizer", ACTIVATION, True, "classifier GEMM input"),
    QuantSite("head.weight", "head.weight_quantizer", WEIGHT, True, "classifier GEMM weight, per output channel"),
)


def _v2_rows() -> Tuple[QuantSite, ...]:
    """Swin V2's table: V1's rows with what its cosine attention and post-norm blocks change.

    Its residual adds follow a LayerNorm, so no GEMM epilogue takes them; the rows pay all the same, because the
    shortcut is the very tensor the next qkv (or fc1) GEMM quantizes: with the row on, the plan keeps it in INT8
    only. Measured on the V2-T plan (benchmarks/precision_plans.py): INT8 stores 0.864x the FP16 bytes with them,
    0.877x without.
    """
    changes = {
        "attn.q": "q/‖q‖ (values in [-1, 1]) into the INT8 q·kᵀ matmul; the logit scale comes after it",
        "attn.k": "k/‖k‖ (values in [-1, 1]) into the INT8 q·kᵀ matmul",
        "attn_residual": "shortcut of the attention add, also qkv's input: kept in INT8 only (post-norm: the add "
                         "follows norm1, not a GEMM)",
        "mlp_residual": "shortcut of the MLP add, also fc1's input: kept in INT8 only (post-norm: the add follows "
                        "norm2, not a GEMM)",
    }
    return tuple(replace(site, reason=changes[site.name]) if site.name in changes else site for site in PLACEMENT)


PLACEMENT_V2: Tuple[QuantSite, ...] = _v2_rows()
TABLES = {"swin": PLACEMENT, "swinv2": PLACEMENT_V2}


def placement_table(model_type: str) -> Tuple[QuantSite, ...]:
    """The placement table of a model family (``MODEL.TYPE``).

    Raises:
        UserError: the family is not quantized here (Swin-MLP).
    """
    if model_type not in TABLES:
        raise UserError(f"MODEL.TYPE {model_type} is not quantized here: the placement tables "
                        f"(swin_trt/quant/placement.py) are for {' and '.join(TABLES)}, and Swin-MLP has no official "
                        "checkpoint in this toolkit's scope; export it with export.py --precision fp16 instead.")
    return TABLES[model_type]


def site_names(table: Sequence[QuantSite] = PLACEMENT) -> List[str]:
    """Every row and group name ``QUANT.DISABLED`` accepts."""
    names = [s.name for s in table]
    return names + sorted({s.group for s in table} - set(names))


def enabled_sites(disabled: Iterable[str] = (), table: Sequence[QuantSite] = PLACEMENT) -> List[QuantSite]:
    """Rows that are on by default and not switched off by ``disabled`` (row or group names).

    Raises:
        UserError: a name in ``disabled`` is not a row or group of the table.
    """
    disabled = list(disabled)
    known = set(site_names(table))
    unknown = [d for d in disabled if d not in known]
    if unknown:
        raise UserError(f"QUANT.DISABLED names {', '.join(unknown)}, not rows of the placement table: "
                        f"use some of {', '.join(site_names(table))} (see quant/placement.py).")
    off = set(disabled)
    return [s for s in table if s.enabled and s.name not in off and s.group not in off]


# the rows whose tensors are a Linear GEMM's input or weight: the ones Blackwell's block formats take
GEMM_GROUPS = ("qkv", "proj", "fc1", "fc2", "reduction", "head")
BLOCK_FORMATS = ("mxfp8", "nvfp4")


def site_format(site: QuantSite, fmt: str) -> str:
    """The format a row is quantized in under ``fmt``: a block format takes the GEMM rows, the others stay FP8 per
    tensor (quant/quantize.py says why); every other format is the row's."""
    if fmt in BLOCK_FORMATS:
        return fmt if site.group in GEMM_GROUPS else "fp8"
    return fmt


def format_placement(disabled: Iterable[str] = (), table: Sequence[QuantSite] = PLACEMENT, fmt: str = "") -> str:
    """The table as text, one row per site with its state (and, given ``fmt``, the format it takes), for logs and
    ``--show-placement``."""
    on = {s.name for s in enabled_sites(disabled, table)}
    width = max(len(s.name) for s in table)

    def state(s: QuantSite) -> str:
        return f"{site_format(s, fmt) if s.name in on else 'off':<5}" if fmt else ("on " if s.name in on else "off")

    return "\n".join(f"{s.name:<{width}}  {state(s)}  {s.tensor:<10}  {s.quantizer:<40}  {s.reason}" for s in table)
