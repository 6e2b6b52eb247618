"""FP32 graph → mixed FP16/FP32 (or BF16/FP32) graph with ModelOpt's ONNX AutoCast.

The result keeps FP32 inputs and outputs, so callers feed and read the same
tensors as with the FP32 file; ops named in the keep list stay FP32 with Cast
nodes around them. Q/DQ graphs convert too: their scales become FP16, so every
DequantizeLinear outputs FP16.

What stays FP32 by default (``ONNX.FP16_KEEP_FP32_OPS``) is the global pool
(ReduceMean) and, in graphs below opset 17, the LayerNorm internals (Pow and
ReduceMean; the original repository kept POW and REDUCE in FP32). From opset
17 LayerNormalization is one op with FP16 input and output whose statistics
are computed in FP32 (its ``stash_type`` attribute, 1 = FLOAT by default;
TensorRT 10's ONNX parser turns it into the layer's compute precision). Softmax
runs in FP16: every implementation subtracts the row maximum before ``exp``,
so it cannot overflow, and its output lies in [0, 1].

Swin V2 normalises q and k with a ReduceL2 (``models.swin_transformer_v2.l2_normalize``).
TensorRT's parser builds it as x·x, a sum and a square root: in FP16 a single
element above 256 overflows its square, and a head of 32 channels overflows
the sum from an average magnitude of 45, while the root itself would fit. So
ReduceL2 stays FP32 and what follows it (the Clip at 1e-12 and the Div, whose
result lies in [-1, 1]) runs in FP16; ``benchmarks/fp16_ranges.py`` measures
each op's largest value and accumulator on the FP32 graph.

AutoCast's ``convert_to_f16`` is used rather than ``convert_to_mixed_precision``:
the latter picks FP32 nodes from reference runs on random data, the former
from an explicit op list, which is reproducible and does not run the model.
"""
from __future__ import annotations

import copy
import logging
from typing import Sequence

import onnx

from swin_trt.errors import UserError
from swin_trt.logs import third_party_output

_LOG = logging.getLogger("swin")


def check_op_types(op_types: Sequence[str], what: str = "ONNX.FP16_KEEP_FP32_OPS") -> None:
    """Raise a :class:`UserError` for a name that is not an ONNX op type (a typo would silently keep nothing)."""
    for op in op_types:
        if not onnx.defs.has(op):
            raise UserError(f"{what} names {op!r}, which is not an ONNX op type: check its spelling (e.g. LayerNormalization).")


def convert_to_fp16(model: onnx.ModelProto, keep_fp32_ops: Sequence[str],
                    low_precision_type: str = "fp16") -> onnx.ModelProto:
    """Mixed-precision copy of ``model``: FP16 (or BF16) everywhere except the ops in ``keep_fp32_ops``.

    Args:
        model: FP32 graph, with or without Q/DQ nodes (not modified).
        keep_fp32_ops: ONNX op types computed in FP32 (inputs cast up, outputs cast down).
        low_precision_type: ``fp16`` or ``bf16``.

    Returns:
        the converted graph, FP32 graph inputs and outputs, opset >= 19 (22 for BF16).
    """
    from modelopt.onnx.autocast import convert_to_f16  # slow import, only when converting

    check_op_types(keep_fp32_ops)
    with third_party_output("modelopt.onnx.autocast"):  # onnx-graphsurgeon's notes on FP8 constants, among others
        converted = convert_to_f16(copy.deepcopy(model), low_precision_type=low_precision_type, keep_io_types=True,
                                   op_block_list=list(keep_fp32_ops))
    kept = sum(node.op_type in keep_fp32_ops for node in converted.graph.node)
    _LOG.info("%s conversion: %d nodes kept in FP32 (%s)", low_precision_type.upper(), kept,
              ", ".join(keep_fp32_ops) or "none")
    return converted
