"""What precision an ONNX graph asks for, read from the graph itself (strongly typed builds).

With strong typing the engine's precision is the graph's: FP32 tensors stay
FP32, FP16 tensors are FP16 and INT8/FP8 come only from Q/DQ nodes. So the
build step checks that the requested ``--mode`` matches what is in the graph.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Dict, Optional, Tuple

import onnx
from onnx import TensorProto

# custom ops the TensorRT ONNX parser reads as FP8 quantize / dequantize
_FP8_CUSTOM_OPS = {"TRT_FP8QuantizeLinear", "TRT_FP8DequantizeLinear"}
# Blackwell's block formats (quant/block_formats.py): their custom ops, and the FP4 values standard DQ reads
_BLOCK_OPS = {"TRT_FP4DynamicQuantize": "nvfp4", "TRT_MXFP8DynamicQuantize": "mxfp8", "TRT_MXFP8DequantizeLinear": "mxfp8"}
_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
_FORMAT_OF_TYPE = {TensorProto.INT8: "int8", TensorProto.UINT8: "uint8", TensorProto.FLOAT8E4M3FN: "fp8",
                   TensorProto.INT4: "int4", TensorProto.UINT4: "uint4"}
MODES = ("fp32", "fp16", "int8", "fp8", "mxfp8", "nvfp4")
BLOCK_MODES = ("mxfp8", "nvfp4")
_LOW_FLOAT = {TensorProto.FLOAT16: "FP16", TensorProto.BFLOAT16: "BF16"}
# ops that move data without changing it: a Q/DQ pair can sit on either side of them
_DATA_MOVEMENT = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Concat", "Identity"}


@dataclasses.dataclass
class GraphPrecision:
    """Precision facts of a graph.

    Attributes:
        qdq: number of quantize/dequantize nodes per quantized format (``int8``, ``fp8``, ``uint8``...).
        low_float: the reduced float types some tensor of the graph (input, initializer or Cast target)
            has: ``FP16``, ``BF16``.
        batch: the fixed batch of the first input, or None if it is symbolic.
    """

    qdq: Dict[str, int]
    low_float: Tuple[str, ...]
    batch: Optional[int]

    @property
    def has_fp16(self) -> bool:
        return "FP16" in self.low_float

    def summary(self) -> str:
        parts = [f"{n} {fmt} Q/DQ" for fmt, n in sorted(self.qdq.items())] or ["no Q/DQ"]
        parts.append(" and ".join(f"{t} tensors" for t in self.low_float) if self.low_float else "FP32 only")
        return ", ".join(parts)


def _constant_types(graph: onnx.GraphProto) -> Dict[str, int]:
    types = {init.name: init.data_type for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def _qdq_format(node: onnx.NodeProto, const_types: Dict[str, int], produced_by_q: Dict[str, str],
                producers: Dict[str, onnx.NodeProto]) -> str:
    if node.op_type in _FP8_CUSTOM_OPS:
        return "fp8"
    if node.op_type == "QuantizeLinear":
        for attr in node.attribute:  # opset 21: output_dtype overrides the zero point's type
            if attr.name == "output_dtype" and attr.i:
                return _FORMAT_OF_TYPE.get(attr.i, f"type{attr.i}")
        if len(node.input) > 2 and node.input[2] in const_types:
            t = const_types[node.input[2]]
            return _FORMAT_OF_TYPE.get(t, f"type{t}")
        return "uint8"  # the ONNX default without a zero point
    # DequantizeLinear: the type of what it reads, through the data movement a Q/DQ pair may be moved across
    src = node.input[0]
    while src not in produced_by_q and src in producers and producers[src].op_type in _DATA_MOVEMENT:
        src = producers[src].input[0]
    if src in produced_by_q:
        return produced_by_q[src]
    if src in const_types:
        return _FORMAT_OF_TYPE.get(const_types[src], f"type{const_types[src]}")
    if len(node.input) > 2 and node.input[2] in const_types:
        return _FORMAT_OF_TYPE.get(const_types[node.input[2]], "unknown")
    return "unknown"


def _block_dequantize(node: onnx.NodeProto, const_types: Dict[str, int], producers: Dict[str, onnx.NodeProto]) -> bool:
    """An NVFP4 DequantizeLinear: of FP4 values (a constant or a dynamic quantize's) or of their block scales."""
    source = producers.get(node.input[0])
    return const_types.get(node.input[0]) == TensorProto.FLOAT4E2M1 or (
        source is not None and source.op_type == "TRT_FP4DynamicQuantize") or any(
        const_types.get(node.input[0]) == TensorProto.FLOAT8E4M3FN and c.op_type == "DequantizeLinear"
        and c.input[1] == node.output[0] and const_types.get(c.input[0]) == TensorProto.FLOAT4E2M1
        for c in producers.values())


def graph_precision(model: onnx.ModelProto) -> GraphPrecision:
    """Count Q/DQ nodes per format and look for FP16 tensors in ``model`` (top-level graph)."""
    graph = model.graph
    const_types = _constant_types(graph)
    produced_by_q: Dict[str, str] = {}
    qdq: Dict[str, int] = collections.Counter()
    types = {i.type.tensor_type.elem_type for i in graph.input} | set(const_types.values())
    producers = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if node.op_type in _BLOCK_OPS:
            qdq[_BLOCK_OPS[node.op_type]] += 1
            continue
        if node.op_type == "DequantizeLinear" and _block_dequantize(node, const_types, producers):
            qdq["nvfp4"] += 1
            continue
        if node.op_type in _QDQ_OPS or node.op_type in _FP8_CUSTOM_OPS:
            fmt = _qdq_format(node, const_types, produced_by_q, producers)
            qdq[fmt] += 1
            if node.op_type in ("QuantizeLinear", "TRT_FP8QuantizeLinear"):
                produced_by_q[node.output[0]] = fmt
        elif node.op_type == "Cast":
            types.update(a.i for a in node.attribute if a.name == "to")
    batch = None
    if graph.input:
        dims = graph.input[0].type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
            batch = dims[0].dim_value
    low_float = tuple(name for t, name in _LOW_FLOAT.items() if t in types)
    return GraphPrecision(dict(qdq), low_float, batch)


def check_mode(mode: str, precision: GraphPrecision, onnx_file: str) -> bool:
    """Check that ``mode`` fits the graph; return True if the graph must first be converted to FP16.

    Raises:
        ValueError: ``mode`` is not one of :data:`MODES` (a programming error; the CLI restricts it).
        UserError: the graph cannot give an engine of that precision, naming the file and the fix.
    """
    from swin_trt.errors import UserError

    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    formats = set(precision.qdq)
    if "uint8" in formats or "uint4" in formats:
        raise UserError(f"ONNX {onnx_file} quantizes to unsigned integers (QuantizeLinear without an int8 zero point): "
                        "TensorRT needs symmetric int8; export it with an int8 zero point of 0.")
    if mode in ("fp32", "fp16") and formats:
        raise UserError(f"ONNX {onnx_file} has Q/DQ nodes ({precision.summary()}): build it with --mode "
                        f"{graph_mode(precision)}.")
    if mode in ("fp32", "fp16") and "BF16" in precision.low_float:
        raise UserError(f"ONNX {onnx_file} holds BF16 tensors, which only quantized (Q/DQ) graphs may use here: "
                        "pass the FP32 ONNX written by export.py.")
    if mode == "fp32" and precision.has_fp16:
        raise UserError(f"ONNX {onnx_file} already holds FP16 tensors: build it with --mode fp16, or pass the FP32 ONNX.")
    if mode in BLOCK_MODES:
        if mode not in formats:
            found = f"it has {precision.summary()}" if formats else "it has none"
            raise UserError(f"--mode {mode} needs an ONNX with {mode.upper()} nodes, but {onnx_file} is not one "
                            f"({found}): export it with swin_quant_flow.py --quantize --format {mode} on an NVIDIA GPU.")
        return False
    if mode in ("int8", "fp8") and formats & set(BLOCK_MODES):
        raise UserError(f"ONNX {onnx_file} holds {' and '.join(f.upper() for f in sorted(formats & set(BLOCK_MODES)))} "
                        f"nodes: build it with --mode {graph_mode(precision)}.")
    if mode in ("int8", "fp8"):
        if mode not in formats:
            found = f"it has {precision.summary()}" if formats else "it has none"
            raise UserError(f"--mode {mode} needs an ONNX with {mode.upper()} Q/DQ nodes, but {onnx_file} is not one "
                            f"({found}): export a quantized model with swin_quant_flow.py first (TensorRT 11 and "
                            "TensorRT-RTX have no implicit calibration).")
        return False
    return mode == "fp16" and not precision.has_fp16


def graph_mode(precision: GraphPrecision) -> str:
    """The ``--mode`` that builds the graph as it is: its Q/DQ format, else fp16 or fp32."""
    formats = set(precision.qdq)
    for block in ("nvfp4", "mxfp8"):  # a block format's graph also holds FP8 pairs (quant/quantize.py)
        if block in formats:
            return block
    if formats:
        return "fp8" if formats == {"fp8"} else "int8"
    return "fp16" if precision.has_fp16 else "fp32"
