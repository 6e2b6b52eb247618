"""The check of an MXFP8 / NVFP4 graph without ONNX Runtime, which cannot run its nodes: an independent reference on
the CPU.

1. **Structure** (:func:`check_block_structure`, the graph alone; ``trt/build_engine.py`` runs it before the
   builder): every dynamic block quantize has the block size TensorRT takes for its format (16 for
   ``TRT_FP4DynamicQuantize``, 32 for ``TRT_MXFP8DynamicQuantize``), axis -1, an input of rank 2 or 3, E4M3 block
   scales (NVFP4) and its dequantize pair; every FLOAT4E2M1 weight is dequantized in blocks of 16 by E4M3 scales that
   an FP32 per-tensor scale dequantizes; every ``TRT_MXFP8DequantizeLinear`` has blocks of 32 and UINT8 (E8M0) scales
   of the right shape; a GEMM fed by a block dequantize on one side is fed by one on the other (no dropped pair).
   With the model (:func:`check_against_model`), every Linear that holds block quantizers has both, in its format.
2. **Numbers**: each weight, dequantized from the graph (``onnx.reference`` for the standard FP4 DequantizeLinear,
   E4M3 times 2^(e - 127) for MXFP8, computed here with ml_dtypes), equals the fake-quantized model's weight; and on
   real calibration activations, the graph's dynamic quantization (its own block size and per-tensor scale, computed
   here as TensorRT documents it) equals the fake quantizer's output. On a GPU the model gives both references live;
   without CUDA (whose absence stops ModelOpt's block fake quantization, not its calibration) they are ModelOpt's
   numerics emulated here on the model's FP32 weights and calibrated ranges (:func:`emulated_references`), and the
   tests also read a file of the live references made on the GPU (``benchmarks/blackwell_formats.py``).

A mismatch is one sentence naming the Linear and what differs (:class:`onnx_tools.verify.ExportCheckError`).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from swin_trt.onnx_tools.verify import ExportCheckError

_LOG = logging.getLogger("swin")
QUANTIZE = {"TRT_FP4DynamicQuantize": ("nvfp4", 16), "TRT_MXFP8DynamicQuantize": ("mxfp8", 32)}
MXFP8_DQ = "TRT_MXFP8DequantizeLinear"
GEMMS = ("MatMul", "Gemm")
PASS_THROUGH = ("Transpose", "Cast", "Reshape")  # between a dequantize and the GEMM it feeds
MISMATCH_FRACTION = 1e-3  # values allowed to round to the other neighbour (ties between two rounding paths)


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else onnx.helper.get_attribute_value(found)


class _Index:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.inits = {i.name: i for i in model.graph.initializer}
        self.producers = {o: n for n in model.graph.node for o in n.output}
        self.consumers: Dict[str, List[onnx.NodeProto]] = {}
        for node in model.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
            values = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
        except Exception:  # custom ops end inference where they start; what comes before them is still known
            values = list(model.graph.value_info)
        self.ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in values if v.type.tensor_type.HasField("shape")}

    def source(self, name: str) -> Optional[onnx.NodeProto]:
        """The node that makes ``name``, looking through transposes, casts and reshapes."""
        node = self.producers.get(name)
        while node is not None and node.op_type in PASS_THROUGH:
            node = self.producers.get(node.input[0])
        return node


def _is_block_dequantize(node: Optional[onnx.NodeProto]) -> bool:
    return node is not None and (node.op_type == MXFP8_DQ or (node.op_type == "DequantizeLinear"
                                                               and _attr(node, "block_size", 0) > 0))


def check_block_structure(model: onnx.ModelProto, label: str) -> Dict[str, int]:
    """Part 1 of the module docstring on the graph alone; returns counts by kind.

    Raises:
        ExportCheckError: the first rule broken, in one sentence naming the node.
    """
    index = _Index(model)
    counts = {"nvfp4_inputs": 0, "mxfp8_inputs": 0, "nvfp4_weights": 0, "mxfp8_weights": 0}
    for node in model.graph.node:
        if node.op_type in QUANTIZE:
            fmt, block = QUANTIZE[node.op_type]
            if _attr(node, "block_size") != block or _attr(node, "axis", -1) != -1:
                raise ExportCheckError(f"{label}: {node.name} quantizes in blocks of {_attr(node, 'block_size')} along "
                                       f"axis {_attr(node, 'axis', -1)}; TensorRT's {fmt.upper()} takes blocks of {block} "
                                       "along the last axis.")
            rank = index.ranks.get(node.input[0])
            if rank is not None and rank not in (2, 3):
                raise ExportCheckError(f"{label}: {node.name} quantizes a rank-{rank} tensor; TensorRT's dynamic block "
                                       "quantize takes rank 2 or 3.")
            if fmt == "nvfp4" and _attr(node, "scale_type") != TensorProto.FLOAT8E4M3FN:
                raise ExportCheckError(f"{label}: {node.name} makes block scales of ONNX type {_attr(node, 'scale_type')}, "
                                       "not FLOAT8E4M3FN: NVFP4 scales are E4M3.")
            readers = [c for out in node.output for c in index.consumers.get(out, [])]
            if not readers or not any(_is_block_dequantize(r) for r in readers):
                raise ExportCheckError(f"{label}: {node.name} reaches no block dequantize: the graph lost half of a pair.")
            counts[f"{fmt}_inputs"] += 1
        elif node.op_type == "DequantizeLinear" and node.input[0] in index.inits and \
                index.inits[node.input[0]].data_type == TensorProto.FLOAT4E2M1:
            _check_fp4_weight(node, index, label)
            counts["nvfp4_weights"] += 1
        elif node.op_type == MXFP8_DQ:
            _check_mxfp8_dequantize(node, index, label)
            counts["mxfp8_weights"] += node.input[0] in index.inits
        elif node.op_type in GEMMS:
            fed = [_is_block_dequantize(index.source(i)) for i in node.input[:2]]
            if any(fed) and not all(fed):
                side = "input" if not fed[0] else "weight"
                raise ExportCheckError(f"{label}: {node.name} reads a block-quantized tensor on one side and no block "
                                       f"dequantize on its {side}: the graph lost a pair.")
    return counts


def _check_fp4_weight(node: onnx.NodeProto, index: _Index, label: str) -> None:
    if _attr(node, "block_size") != 16 or _attr(node, "axis", 1) not in (-1, 1):
        raise ExportCheckError(f"{label}: {node.name} dequantizes FP4 weights in blocks of {_attr(node, 'block_size')} "
                               f"along axis {_attr(node, 'axis', 1)}; NVFP4 has blocks of 16 along the last axis.")
    scale_dq = index.producers.get(node.input[1])
    scale = index.inits.get(scale_dq.input[0]) if scale_dq is not None and scale_dq.op_type == "DequantizeLinear" else None
    if scale is None or scale.data_type != TensorProto.FLOAT8E4M3FN:
        kind = "missing" if scale is None else f"of ONNX type {scale.data_type}"
        raise ExportCheckError(f"{label}: the block scales of {node.name} are {kind}, not FLOAT8E4M3FN constants "
                               "dequantized by a per-tensor scale: NVFP4 weights have E4M3 block scales.")
    global_scale = index.inits.get(scale_dq.input[1])
    if global_scale is None or global_scale.data_type != TensorProto.FLOAT:
        raise ExportCheckError(f"{label}: the per-tensor scale of {node.name} is not an FP32 constant.")


def _check_mxfp8_dequantize(node: onnx.NodeProto, index: _Index, label: str) -> None:
    if _attr(node, "block_size") != 32 or _attr(node, "axis", -1) != -1:
        raise ExportCheckError(f"{label}: {node.name} dequantizes MXFP8 in blocks of {_attr(node, 'block_size')}; "
                               "MXFP8 has blocks of 32 along the last axis.")
    scale = index.inits.get(node.input[1])
    producer = index.producers.get(node.input[1])
    if scale is not None:
        values = index.inits[node.input[0]] if node.input[0] in index.inits else None
        if scale.data_type != TensorProto.UINT8:
            raise ExportCheckError(f"{label}: the scales of {node.name} are of ONNX type {scale.data_type}, not UINT8 "
                                   "(E8M0): MXFP8 scales are powers of two.")
        if values is not None and (values.data_type != TensorProto.FLOAT8E4M3FN or list(scale.dims) !=
                                   [*values.dims[:-1], values.dims[-1] // 32]):
            raise ExportCheckError(f"{label}: {node.name} has values of ONNX type {values.data_type} and scales of shape "
                                   f"{list(scale.dims)} for values of shape {list(values.dims)}: MXFP8 weights are E4M3 "
                                   "with one scale per 32.")
    elif producer is None or producer.op_type != "TRT_MXFP8DynamicQuantize":
        raise ExportCheckError(f"{label}: the scales of {node.name} come from neither a constant nor its dynamic "
                               "quantize.")


# --- numbers ----------------------------------------------------------------------------------------------------------

def fp4_round(x: np.ndarray) -> np.ndarray:
    """E2M1 values nearest to ``x`` (ties to even), saturated at ±6."""
    return np.clip(x, -6.0, 6.0).astype(ml_dtypes.float4_e2m1fn).astype(np.float32)


def e4m3_round(x: np.ndarray) -> np.ndarray:
    """E4M3 values nearest to ``x`` (ties to even), saturated at ±448."""
    return np.clip(x, -448.0, 448.0).astype(ml_dtypes.float8_e4m3fn).astype(np.float32)


E4M3_SMALLEST = 2.0 ** -9  # the smallest positive E4M3 value: where a block scale stops shrinking


def nvfp4_dynamic(x: np.ndarray, global_scale: float) -> np.ndarray:
    """NVFP4 dynamic quantize-dequantize of ``x`` (..., K) along its last axis: per 16 values an E4M3 scale of their
    largest magnitude over 6 (at least the smallest E4M3 value), relative to the FP32 per-tensor scale, and E2M1
    values."""
    blocks = x.reshape(*x.shape[:-1], -1, 16).astype(np.float32)
    amax = np.abs(blocks).max(axis=-1, keepdims=True)
    block_scale = np.maximum(e4m3_round(amax / (np.float32(6.0) * np.float32(global_scale))), E4M3_SMALLEST)
    scale = np.where(amax == 0, 0.0, block_scale * np.float32(global_scale)).astype(np.float32)
    safe = np.where(scale == 0, 1.0, scale)
    return (fp4_round(blocks / safe) * scale).reshape(x.shape)


def mxfp8_dynamic(x: np.ndarray) -> np.ndarray:
    """MXFP8 dynamic quantize-dequantize of ``x`` (..., K) along its last axis: per 32 values a power-of-two scale
    2^ceil(log2(amax / 448)) (an E8M0 exponent, at least 2^-127) and E4M3 values."""
    blocks = x.reshape(*x.shape[:-1], -1, 32).astype(np.float32)
    amax = np.abs(blocks).max(axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        exponent = np.ceil(np.maximum(np.log2(amax / 448.0), -127.0))
    scale = np.exp2(exponent).astype(np.float32)
    return (e4m3_round(blocks / scale) * scale).reshape(x.shape)


def _reference_dequantize(model: onnx.ModelProto, output: str) -> np.ndarray:
    """``output`` of the weight chain that makes it (constants and DequantizeLinear only), by ``onnx.reference``."""
    from onnx.reference import ReferenceEvaluator

    index = _Index(model)
    nodes, pending = [], [output]
    while pending:
        node = index.producers.get(pending.pop())
        if node is None:
            continue
        nodes.insert(0, node)
        pending += [i for i in node.input if i not in index.inits]
    inits = [index.inits[i] for n in nodes for i in n.input if i in index.inits]
    graph = onnx.helper.make_graph(nodes, "weight", [], [onnx.helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
                                   inits)
    small = onnx.helper.make_model(graph, opset_imports=[o for o in model.opset_import if o.domain in ("", "ai.onnx")])
    return ReferenceEvaluator(small).run(None, {})[0]


def graph_weight(model: onnx.ModelProto, gemm: onnx.NodeProto) -> np.ndarray:
    """The dequantized weight a GEMM reads, (out, in) float32, recomputed from the graph's constants."""
    index = _Index(model)
    dq = index.source(gemm.input[1])
    if dq.op_type == MXFP8_DQ:
        values = numpy_helper.to_array(index.inits[dq.input[0]]).astype(np.float32)  # E4M3 (ml_dtypes) -> float
        exponents = numpy_helper.to_array(index.inits[dq.input[1]]).astype(np.float32)
        return values * np.exp2(np.repeat(exponents, 32, axis=-1) - 127)
    return _reference_dequantize(model, dq.output[0]).astype(np.float32)


def graph_global_scale(model: onnx.ModelProto, quantize: onnx.NodeProto) -> float:
    """The FP32 per-tensor scale an NVFP4 dynamic quantize reads."""
    index = _Index(model)
    return float(numpy_helper.to_array(index.inits[quantize.input[1]]))


def _mismatch(got: np.ndarray, expected: np.ndarray) -> Tuple[float, float]:
    """(fraction of values that differ beyond float rounding, largest absolute difference)."""
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    tol = 1e-6 * np.maximum(np.abs(expected), 1e-30)
    return float(np.mean(diff > tol)), float(diff.max()) if diff.size else 0.0


def check_numbers(model: onnx.ModelProto, references: Mapping[str, Mapping[str, np.ndarray]], label: str) -> Dict[str, Any]:
    """Part 2 of the module docstring.

    Args:
        model: the graph.
        references: Linear name -> ``{"weight": fake-quantized weight (out, in), "inputs": activations (N, K),
            "outputs": their fake quantization}``; each Linear's GEMM is found by its scope.

    Raises:
        ExportCheckError: a weight or an activation whose dequantized values differ.
    """
    from swin_trt.quant.block_formats import _gemm_of

    index = _Index(model)
    worst = {"weights": 0.0, "inputs": 0.0}
    for linear, ref in references.items():
        gemm = _gemm_of(model.graph, linear)
        weight = graph_weight(model, gemm)
        fraction, largest = _mismatch(weight, ref["weight"])
        if fraction > MISMATCH_FRACTION:
            raise ExportCheckError(f"{label}: the weight of {linear} dequantizes to other values than the fake-quantized "
                                   f"model's ({100 * fraction:.2f}% differ, by up to {largest:.3g}): the graph does not "
                                   "hold the weights the model was evaluated with.")
        worst["weights"] = max(worst["weights"], fraction)
        quantize = index.source(gemm.input[0])
        while quantize is not None and quantize.op_type not in QUANTIZE:
            quantize = index.producers.get(quantize.input[0])
        if quantize is None or "inputs" not in ref:
            continue
        if quantize.op_type == "TRT_FP4DynamicQuantize":
            emulated = nvfp4_dynamic(ref["inputs"], graph_global_scale(model, quantize))
        else:
            emulated = mxfp8_dynamic(ref["inputs"])
        fraction, largest = _mismatch(emulated, ref["outputs"])
        if fraction > MISMATCH_FRACTION:
            raise ExportCheckError(f"{label}: the dynamic quantization of {linear}'s input differs from the fake "
                                   f"quantizer's on calibration activations ({100 * fraction:.2f}% of values, by up to "
                                   f"{largest:.3g}): check its per-tensor scale and block size.")
        worst["inputs"] = max(worst["inputs"], fraction)
    return {"linears": len(references), "worst_weight_mismatch": worst["weights"],
            "worst_input_mismatch": worst["inputs"]}


def _block_inputs(model, linears: Mapping[str, Tuple[str, Any]], images: Iterable, rows: int,
                  quantizers_on: bool) -> Dict[str, Any]:
    """Up to ``rows`` input activations of each of ``linears`` (the model's block Linears) on the first batch of
    ``images``."""
    import torch

    from swin_trt.quant.block_formats import block_quantizers_off

    device = next(model.parameters()).device
    captured: Dict[str, Any] = {}

    def keep(name: str):
        def hook(module, args) -> None:  # returns None: the forward goes on with its own input
            captured.setdefault(name, args[0].detach().reshape(-1, args[0].shape[-1])[:rows])
        return hook

    hooks = [module.register_forward_pre_hook(keep(name)) for name, (_, module) in linears.items()]
    try:
        with torch.no_grad(), (contextlib.nullcontext() if quantizers_on else block_quantizers_off(model)):
            batch = next(iter(images))[0].to(device)
            model.eval()(batch)
    finally:
        for hook in hooks:
            hook.remove()
    return captured


def model_references(model, images: Iterable, rows: int = 64) -> Dict[str, Dict[str, np.ndarray]]:
    """The fake-quantized weights of every block Linear and, on the first batch of ``images``, up to ``rows`` of its
    input activations with their fake quantization: what :func:`check_numbers` compares against (needs the GPU the
    model's block quantizers run on)."""
    import torch

    from swin_trt.quant.block_formats import block_linears

    linears = block_linears(model)
    captured = _block_inputs(model, linears, images, rows, quantizers_on=True)
    out = {}
    with torch.no_grad():
        for name, (_, module) in linears.items():
            x = captured[name].float()
            out[name] = {"weight": module.weight_quantizer(module.weight.float()).cpu().numpy(),
                         "inputs": x.cpu().numpy(), "outputs": module.input_quantizer(x).cpu().numpy()}
    return out


def emulated_references(model, images: Iterable, rows: int = 64) -> Dict[str, Dict[str, np.ndarray]]:
    """:func:`model_references` without CUDA: ModelOpt's numerics emulated here (:func:`nvfp4_dynamic` with the
    quantizer's calibrated per-tensor scale, :func:`mxfp8_dynamic`) on each block Linear's FP32 weight and on its
    input activations (the block quantizers off while they are captured: they run on CUDA only)."""
    from swin_trt.quant.block_formats import FP4_MAX, FP8_MAX, block_linears

    linears = block_linears(model)
    captured = _block_inputs(model, linears, images, rows, quantizers_on=False)
    out = {}
    for name, (fmt, module) in linears.items():
        weight, x = module.weight.detach().float().cpu().numpy(), captured[name].float().cpu().numpy()
        if fmt == "nvfp4":
            w_scale = float(module.weight_quantizer.amax) / FP4_MAX / FP8_MAX
            x_scale = float(module.input_quantizer.amax) / FP4_MAX / FP8_MAX
            out[name] = {"weight": nvfp4_dynamic(weight, w_scale), "inputs": x, "outputs": nvfp4_dynamic(x, x_scale)}
        else:
            out[name] = {"weight": mxfp8_dynamic(weight), "inputs": x, "outputs": mxfp8_dynamic(x)}
    return out


def check_against_model(model_graph: onnx.ModelProto, linears: Mapping[str, Tuple[str, Any]], label: str) -> None:
    """Every Linear that holds block quantizers reads both of its GEMM inputs from its format's nodes."""
    from swin_trt.quant.block_formats import _gemm_of

    index = _Index(model_graph)
    for linear, (fmt, _) in linears.items():
        gemm = _gemm_of(model_graph.graph, linear)
        sides = [index.source(i) for i in gemm.input[:2]]
        if not all(_is_block_dequantize(node) for node in sides):
            raise ExportCheckError(f"{label}: the GEMM of {linear} ({fmt.upper()} in the model) reads no block "
                                   "dequantize on one side: the graph lost a pair.")


def verify_block_graph(path: str, model, linears: Mapping[str, Tuple[str, Any]], check_images: Iterable,
                       label: Optional[str] = None) -> Dict[str, Any]:
    """Every check of the module docstring on the written file ``path`` (the export's ``verify``): onnx.checker, the
    structure, every other quantizer's Q/DQ pair with its scale (quant/export_check.py), and the numbers against the
    model, which runs on the GPU its block quantizers need.

    Raises:
        ExportCheckError: a check failed.
    """
    import torch

    from swin_trt.onnx_tools.verify import check_graph
    from swin_trt.quant.export_check import check_structure

    label = label or path
    check_graph(path, label)
    graph = onnx.load(path)
    structure = check_block_structure(graph, label)
    check_against_model(graph, linears, label)
    skip = {f"{name}.{part}_quantizer" for name in linears for part in ("input", "weight")}
    structure.update(check_structure(graph, model, label, skip=skip))
    if torch.cuda.is_available():
        numbers = check_numbers(graph, model_references(model.cuda(), check_images), label)
        numbers["reference"] = "the fake-quantized model (CUDA)"
    else:
        numbers = check_numbers(graph, emulated_references(model, check_images), label)
        numbers["reference"] = "ModelOpt's numerics emulated on the CPU"
    _LOG.info("%s: %d block-quantized GEMMs, their weights and calibration activations equal %s (worst mismatch: "
              "weights %.4f%%, inputs %.4f%%)", label, numbers["linears"], numbers["reference"],
              100 * numbers["worst_weight_mismatch"], 100 * numbers["worst_input_mismatch"])
    return {"structure": structure, "numbers": numbers}
