"""The precision plan of a graph, read from TensorRT's own parse of it: no GPU, no engine.

Under strong typing TensorRT runs every layer in the type the graph gives it,
so the parsed ``INetworkDefinition`` already says what an engine will compute
in and what it will store. This module reads it at a fixed batch (1 by
default, so every shape is static) and reports:

- every layer with its kind and output types (:func:`plan_layers`);
- activation bytes per image by data type, counted as TensorRT stores them
  once its Q/DQ fusions are made: outputs of constants and of what is
  computed from constants only (weights and their Q/DQ) are not counted, nor
  DequantizeLinear outputs (fused into their consumer, also through the cast
  to FP16 that follows an NVFP4 dequantize), nor tensors consumed only by
  QuantizeLinear or a dynamic block quantize (fused into their producer: the
  INT8/FP8/FP4 tensor and its block scales are what is stored), nor shape tensors;
- "FP32 compute layers": layers other than normalization, softmax, reduce,
  cast, Q/DQ, constant, shape and identity that store a FLOAT output (a
  FLOAT output fused into a QuantizeLinear is stored as INT8/FP8);
- every matrix multiply and convolution with the precision of its inputs
  (:func:`gemm_rows`), tracing each input back through data-movement layers to
  a DequantizeLinear or a constant: INT8, FP8, and for Blackwell's block formats
  MXFP8 (E4M3 values dequantized by E8M0 block scales) and NVFP4 (FP4 values).

This is a plan of what an engine stores, not a measurement of one: a real
build also fuses pointwise layers, which removes some of the counted tensors
from every graph alike.
"""
from __future__ import annotations

import collections
import copy
import dataclasses
from typing import Any, Dict, List, Optional, Sequence

import onnx

from swin_trt.errors import UserError
from swin_trt.files import require_file
from swin_trt.trt.backend import Backend, dtype_name
from swin_trt.trt.engine_builder import EngineBuilder

# bytes per element by TensorRT DataType member name
DTYPE_BYTES = {"FLOAT": 4, "HALF": 2, "BF16": 2, "INT8": 1, "UINT8": 1, "FP8": 1, "INT32": 4, "INT64": 8,
               "BOOL": 1, "INT4": 0.5, "FP4": 0.5, "E8M0": 1}
# layers whose FP32 output is the precision recipe, not a fallback (the keep-FP32 list, casts, Q/DQ...)
NOT_COMPUTE = {"NORMALIZATION", "SOFTMAX", "REDUCE", "CAST", "QUANTIZE", "DEQUANTIZE", "CONSTANT", "SHAPE", "IDENTITY"}
# layers that only move or retype data: a Q/DQ pair seen through them still feeds the GEMM
TRANSPARENT = {"SHUFFLE", "SLICE", "IDENTITY", "SQUEEZE", "UNSQUEEZE", "GATHER", "CAST"}
QUANTIZERS = {"QUANTIZE", "DYNAMIC_QUANTIZE"}  # a tensor only these read is stored in their (quantized) type
BLOCK_NAMES = {"FP4": "NVFP4"}  # the GEMM precision a block dequantize's values give
GEMM_KINDS = {"MATRIX_MULTIPLY": "matmul", "CONVOLUTION": "conv"}
_MAX_HOPS = 8


def with_fixed_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """A copy of ``model`` whose symbolic first input dimensions are ``batch``, so TensorRT infers every shape."""
    model = copy.deepcopy(model)
    initializers = {i.name for i in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = batch
    return model


def parse_network(onnx_file: str, backend: Backend, batch: int = 1, model: Optional[onnx.ModelProto] = None):
    """Parse ``onnx_file`` (or ``model``, the graph in memory, named ``onnx_file``) at ``batch`` into a strongly
    typed network; returns the builder that owns it.

    Raises:
        UserError: missing file, or a graph the parser rejects.
    """
    if model is None:
        require_file(onnx_file, "ONNX file", "pass the path of a file written by export.py or swin_quant_flow.py")
        model = onnx.load(onnx_file)
    builder = EngineBuilder(backend, detailed_profiling=False)
    builder.create_network(onnx_file, with_fixed_batch(model, batch))
    return builder


def _layers(network) -> List[Any]:
    return [network.get_layer(i) for i in range(network.num_layers)]


def _outputs(layer) -> List[Any]:
    return [layer.get_output(j) for j in range(layer.num_outputs)]


def _inputs(layer) -> List[Any]:
    return [t for t in (layer.get_input(j) for j in range(layer.num_inputs)) if t is not None]


def constant_layers(layers: Sequence[Any]) -> set:
    """Names of the layers computed from constants only (constants, weight Q/DQ, folded arithmetic)."""
    constant_tensors, names = set(), set()
    for layer in layers:  # the network's layers are in topological order
        inputs = _inputs(layer)
        if layer.type.name == "CONSTANT" or (inputs and all(t.name in constant_tensors for t in inputs)):
            names.add(layer.name)
            constant_tensors.update(t.name for t in _outputs(layer))
    return names


def tensor_bytes(tensor) -> Optional[float]:
    """Bytes of one tensor of static shape (None when a dimension is unknown)."""
    dims = list(tensor.shape)
    if any(d < 0 for d in dims):
        return None
    count = 1
    for d in dims:
        count *= d
    return count * DTYPE_BYTES.get(dtype_name(tensor.dtype), 4)


def _casts_of_dequantize(layers: Sequence[Any]) -> set:
    """Names of the CAST layers that only retype a DEQUANTIZE's output (NVFP4's cast to FP16): fused with it."""
    dequantized = {t.name for layer in layers if layer.type.name == "DEQUANTIZE" for t in _outputs(layer)}
    return {layer.name for layer in layers if layer.type.name == "CAST" and _inputs(layer)
            and _inputs(layer)[0].name in dequantized}


def plan_layers(network) -> List[Dict[str, Any]]:
    """One row per layer: ``layer``, ``type``, ``outputs`` (dtype names), ``constant``, ``fp32_compute``,
    ``stored_bytes`` (counted per the module's rules) and ``stored_dtypes``."""
    layers = _layers(network)
    constants = constant_layers(layers)
    dequantized = _casts_of_dequantize(layers)
    consumers: Dict[str, List[str]] = collections.defaultdict(list)
    for layer in layers:
        for tensor in _inputs(layer):
            consumers[tensor.name].append(layer.type.name)
    rows = []
    for layer in layers:
        kind = layer.type.name
        outputs = _outputs(layer)
        constant = layer.name in constants
        stored: Dict[str, float] = collections.Counter()
        if not constant and kind != "DEQUANTIZE" and not (kind == "CAST" and layer.name in dequantized):
            for tensor in outputs:
                users = consumers.get(tensor.name, [])
                if tensor.is_shape_tensor or (users and all(u in QUANTIZERS for u in users)):
                    continue
                size = tensor_bytes(tensor)
                if size is None:
                    raise UserError(f"tensor {tensor.name} has a dynamic shape {list(tensor.shape)} at a fixed batch: "
                                    "the precision plan needs a graph whose only dynamic dimension is the batch.")
                stored[dtype_name(tensor.dtype)] += size
        dtypes = [dtype_name(t.dtype) for t in outputs]
        rows.append({"layer": layer.name, "type": kind, "outputs": dtypes, "constant": constant,
                     "fp32_compute": kind not in NOT_COMPUTE and "FLOAT" in stored,
                     "stored_bytes": sum(stored.values()), "stored_dtypes": dict(stored)})
    return rows


def _producers(network) -> Dict[str, Any]:
    return {t.name: layer for layer in _layers(network) for t in _outputs(layer)}


def trace_input(tensor, producers: Dict[str, Any]) -> Dict[str, Any]:
    """Follow ``tensor`` back through data-movement layers to a DEQUANTIZE or a CONSTANT.

    Returns:
        ``{"dtype", "quantized" (INT8/FP8/... or None), "constant" (a weight), "path" (layer types)}``.
    """
    info: Dict[str, Any] = {"dtype": dtype_name(tensor.dtype), "quantized": None, "constant": False, "path": []}
    layer = producers.get(tensor.name)
    for _ in range(_MAX_HOPS):
        if layer is None:
            break
        kind = layer.type.name
        info["path"].append(kind)
        if kind == "DEQUANTIZE":
            values = dtype_name(layer.get_input(0).dtype)
            scale = dtype_name(layer.get_input(1).dtype) if layer.num_inputs > 1 and layer.get_input(1) is not None else ""
            info["quantized"] = "MXFP8" if values == "FP8" and scale == "E8M0" else BLOCK_NAMES.get(values, values)
            source = producers.get(layer.get_input(0).name)
            while source is not None and source.type.name in TRANSPARENT | {"QUANTIZE"} and source.num_inputs:
                source = producers.get(source.get_input(0).name)
            info["constant"] = source is not None and source.type.name == "CONSTANT"
            break
        if kind == "CONSTANT":
            info["constant"] = True
            break
        if kind not in TRANSPARENT or not layer.num_inputs:
            break
        layer = producers.get(layer.get_input(0).name)
    return info


def gemm_precision(inputs: List[Dict[str, Any]]) -> str:
    """INT8/FP8 when every traced input is quantized to it, ``mixed`` when only some are, else the float type."""
    quantized = {i["quantized"] for i in inputs}
    if None not in quantized and len(quantized) == 1:
        return quantized.pop()
    if quantized - {None}:
        return "mixed"
    return "/".join(sorted({i["dtype"] for i in inputs}))


def gemm_rows(network) -> List[Dict[str, Any]]:
    """One row per matrix multiply and convolution.

    Row keys: ``layer``, ``kind`` (``linear``: one input is a weight; ``attention``: both are
    activations; ``conv``), ``precision``, ``inputs`` (traced, see :func:`trace_input`), ``output``.
    """
    producers = _producers(network)
    rows = []
    for layer in _layers(network):
        op = GEMM_KINDS.get(layer.type.name)
        if op is None:
            continue
        # data and weights; a convolution's kernel is an input tensor only when it comes through Q/DQ
        inputs = [trace_input(t, producers) for t in _inputs(layer)[:2]]
        kind = "conv" if op == "conv" else ("linear" if any(t["constant"] for t in inputs) else "attention")
        rows.append({"layer": layer.name, "kind": kind, "precision": gemm_precision(inputs), "inputs": inputs,
                     "output": dtype_name(layer.get_output(0).dtype)})
    return rows


@dataclasses.dataclass
class PrecisionPlan:
    """The plan of one graph (see the module docstring); ``layers`` and ``gemms`` hold the per-layer rows."""

    source: str
    batch: int
    layers: List[Dict[str, Any]]
    gemms: List[Dict[str, Any]]

    def summary(self) -> Dict[str, Any]:
        """Counts and bytes: ``layers`` (non-constant), ``layers_by_type``, ``fp32_compute_layers``,
        ``bytes_by_dtype`` and ``bytes`` (per image), ``gemms`` (kind -> precision -> count)."""
        live = [r for r in self.layers if not r["constant"]]
        by_dtype: Dict[str, float] = collections.Counter()
        for row in live:
            by_dtype.update(row["stored_dtypes"])
        gemms: Dict[str, Dict[str, int]] = collections.defaultdict(collections.Counter)
        for row in self.gemms:
            gemms[row["kind"]][row["precision"]] += 1
        per_image = 1.0 / self.batch
        return {"source": self.source, "layers": len(live),
                "layers_by_type": dict(collections.Counter(r["type"] for r in live).most_common()),
                "fp32_compute_layers": sum(r["fp32_compute"] for r in live),
                "bytes_by_dtype": {k: v * per_image for k, v in sorted(by_dtype.items())},
                "bytes": sum(by_dtype.values()) * per_image,
                "gemms": {kind: dict(c) for kind, c in sorted(gemms.items())}}

    def as_dict(self) -> Dict[str, Any]:
        return {"source": self.source, "batch": self.batch, "summary": self.summary(), "layers": self.layers,
                "gemms": self.gemms}


def precision_plan(onnx_file: str, backend: Backend, batch: int = 1,
                   model: Optional[onnx.ModelProto] = None) -> PrecisionPlan:
    """The :class:`PrecisionPlan` of ``onnx_file`` (or of ``model``, its graph in memory) parsed by ``backend`` at
    ``batch`` (no GPU needed)."""
    builder = parse_network(onnx_file, backend, batch, model)
    return PrecisionPlan(onnx_file, batch, plan_layers(builder.network), gemm_rows(builder.network))


def _megabytes(value: float) -> str:
    megabytes = value / 1e6
    return f"{megabytes:.1f}" if megabytes >= 100 else f"{megabytes:.2f}" if megabytes >= 1 else f"{megabytes:.3f}"


def comparison_rows(summaries: Sequence[Dict[str, Any]], labels: Sequence[str]) -> List[Dict[str, Any]]:
    """Rows of a side-by-side table, one column per summary (:meth:`PrecisionPlan.summary`).

    Rows: layers, FP32 compute layers, MB per image by data type and in all, the byte ratio to the first
    graph, and the GEMMs of each kind by input precision.
    """
    dtypes = sorted({d for s in summaries for d in s["bytes_by_dtype"]})
    kinds = sorted({k for s in summaries for k in s["gemms"]})

    def row(name: str, values: Sequence[Any]) -> Dict[str, Any]:
        return dict({"": name}, **{label: value for label, value in zip(labels, values)})

    rows = [row("layers", [s["layers"] for s in summaries]),
            row("FP32 compute layers", [s["fp32_compute_layers"] for s in summaries])]
    rows += [row(f"MB per image, {d}", [_megabytes(s["bytes_by_dtype"].get(d, 0.0)) for s in summaries]) for d in dtypes]
    rows.append(row("MB per image, all", [_megabytes(s["bytes"]) for s in summaries]))
    if len(summaries) > 1:
        first = summaries[0]["bytes"] or 1.0
        rows.append(row(f"bytes / {labels[0]}", [f"{s['bytes'] / first:.2f}" for s in summaries]))
    for kind in kinds:
        rows.append(row(f"{kind} GEMMs", [", ".join(f"{n} {p}" for p, n in sorted(s["gemms"].get(kind, {}).items()))
                                          or "0" for s in summaries]))
    return rows


def layer_type_rows(summaries: Sequence[Dict[str, Any]], labels: Sequence[str]) -> List[Dict[str, Any]]:
    """Rows of a side-by-side table of layer counts by TensorRT layer type, one column per summary."""
    types = sorted({t for s in summaries for t in s["layers_by_type"]})
    return [dict({"layer type": t}, **{label: s["layers_by_type"].get(t, 0) for label, s in zip(labels, summaries)})
            for t in types]


def layer_table(plan) -> List[Dict[str, Any]]:
    """One printed row per non-constant layer of a plan."""
    return [{"layer": r["layer"], "type": r["type"], "outputs": ", ".join(r["outputs"]),
             "stored MB": f"{r['stored_bytes'] / 1e6:.3f}", "FP32 compute": "yes" if r["fp32_compute"] else ""}
            for r in plan.layers if not r["constant"]]
