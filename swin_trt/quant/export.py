"""Q/DQ ONNX export of a quantized model: the FP16 graph plus Q/DQ pairs, and a count of where the pairs landed.

The steps, each a reason the engine can beat FP16:

1. ``torch.onnx.export`` of the fake-quantized model (FP32, Q/DQ right at the
   quantizers). INT8 quantizers become standard ``QuantizeLinear`` /
   ``DequantizeLinear`` (scale amax/127, zero point 0; per output channel for
   weights). FP8 quantizers become ModelOpt's ``trt::TRT_FP8QuantizeLinear``
   custom ops, which :func:`standard_fp8_qdq` rewrites into standard Q/DQ with
   a FLOAT8E4M3FN zero point, so ONNX Runtime can run (and check) them; FP8
   graphs are raised to opset 21, the first whose transposes take FP8.
2. :func:`onnx_tools.qdq_propagation.propagate_qdq`: per-tensor Q/DQ move
   through reshapes, transposes, slices and concats, so data movement happens
   on INT8/FP8 tensors, as TensorRT does it (FP8 stops at slices and concats:
   ONNX defines them for no FP8 type, so the shifted-window roll moves FP16).
3. The high-precision type (``QUANT.HIGH_PRECISION``): ``fp16`` (default) turns
   everything between the Q/DQ pairs into the FP16 graph of ``export.py
   --precision fp16``, with the same keep-FP32 list (``ONNX.FP16_KEEP_FP32_OPS``)
   and FP32 graph inputs and outputs; DequantizeLinear then outputs FP16.
   Under strong typing an FP32 Q/DQ graph would make TensorRT run everything
   between the GEMMs in FP32 and lose to the FP16 engine by construction.
   ``bf16`` likewise; ``fp32`` leaves the graph as exported (for debugging).
4. The checks of :mod:`quant.export_check` against the fake-quantized
   PyTorch model in ONNX Runtime, on in-distribution images: every quantizer
   as a Q/DQ pair with its scale, logits within ``QUANT.CHECK_STEPS``
   quantization steps of the classifier's input (INT8 and FP8; BF16 graphs
   get ``onnx.checker`` only, ONNX Runtime's CPU provider has no BF16 kernels).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, Iterable, Optional

import onnx
import torch.nn as nn
from onnx import TensorProto, helper, version_converter
from yacs.config import CfgNode

from swin_trt.contract import Preprocessing, config_input_shape
from swin_trt.errors import UserError
from swin_trt.files import require_parent_dir, writing
from swin_trt.onnx_tools.export import check_precision, export_onnx, save_checked
from swin_trt.onnx_tools.graph import lean_graph
from swin_trt.onnx_tools.qdq_propagation import propagate_qdq
from swin_trt.quant.block_formats import block_linears, block_quantizers_off, insert_block_nodes, write_quant_record
from swin_trt.quant.block_check import verify_block_graph
from swin_trt.quant.export_check import DEQUANTIZE_OPS, QUANTIZE_OPS, check_batches, verify_quantized

_LOG = logging.getLogger("swin")
# ops that only move data: TensorRT propagates Q/DQ through them
DATA_MOVEMENT_OPS = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten", "Slice", "Concat")
GEMM_OPS = ("MatMul", "Gemm")
_FP8_CUSTOM = {"TRT_FP8QuantizeLinear": "QuantizeLinear", "TRT_FP8DequantizeLinear": "DequantizeLinear"}
FP8_MIN_OPSET = 19  # first opset whose QuantizeLinear/DequantizeLinear take FP8
FP8_MOVE_OPSET = 21  # first opset whose Transpose/Squeeze/Unsqueeze/Flatten take FP8 (Slice and Concat never do)


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def standard_fp8_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite ModelOpt's ``trt::TRT_FP8(De)QuantizeLinear`` into standard Q/DQ with a FLOAT8E4M3FN zero point.

    Both compute the same: ``saturate(x / scale)`` as E4M3, and ``q * scale``
    (TensorRT's ONNX parser reads either form). Done in place; returns ``model``.

    Raises:
        ValueError: the graph's opset is below 19 (the first with FP8 Q/DQ).
    """
    opset = _opset(model)
    if opset < FP8_MIN_OPSET:
        raise ValueError(f"FP8 Q/DQ need opset {FP8_MIN_OPSET} or later, the graph has {opset}")
    rewritten = set()
    for node in model.graph.node:
        if node.op_type not in _FP8_CUSTOM:
            continue
        rewritten.update(node.output)
        quantize = node.op_type == "TRT_FP8QuantizeLinear"
        node.op_type, node.domain = _FP8_CUSTOM[node.op_type], ""
        zero_point = f"{node.name}_zero_point"
        model.graph.initializer.append(helper.make_tensor(zero_point, TensorProto.FLOAT8E4M3FN, [], [0.0]))
        node.input.append(zero_point)
        if quantize:
            node.attribute.append(helper.make_attribute("saturate", 1))
    # the exporter typed the custom ops' outputs as UINT8; shape inference retypes them from the standard ops
    stale = [v for v in model.graph.value_info if v.name in rewritten]
    for value in stale:
        model.graph.value_info.remove(value)
    if not any(n.domain == "trt" for n in model.graph.node):
        kept = [o for o in model.opset_import if o.domain != "trt"]
        del model.opset_import[:]
        model.opset_import.extend(kept)
    return model


def qdq_graph(model: nn.Module, path: str, config: CfgNode, fmt: str, batch_size: int = 1,
              dynamic_batch: bool = False) -> onnx.ModelProto:
    """Steps 1 and 2 of the module docstring: the FP32 Q/DQ graph of the fake-quantized ``model``, Q/DQ propagated.

    ``path`` names the destination; the raw export goes to a temporary file beside it.
    """
    input_shape = config_input_shape(config)
    folder = os.path.dirname(os.path.abspath(path))
    raw = os.path.join(folder, f".{os.path.basename(path)}.raw")
    with writing(path), block_quantizers_off(model):  # MXFP8/NVFP4 nodes are added to the FP16 graph later
        try:
            graph = lean_graph(export_onnx(model, raw, img_size=input_shape[1], batch_size=batch_size,
                                           dynamic_batch=dynamic_batch, opset=config.ONNX.OPSET, in_chans=input_shape[0]))
        finally:
            if os.path.exists(raw):
                os.remove(raw)
    if any(node.op_type in _FP8_CUSTOM for node in graph.graph.node):  # fp8, or auto with FP8 modules
        graph = standard_fp8_qdq(graph)
        if _opset(graph) < FP8_MOVE_OPSET:  # so FP8 Q/DQ can move through transposes and squeezes too
            graph = version_converter.convert_version(graph, FP8_MOVE_OPSET)
    return propagate_qdq(graph)


def export_quantized(model: nn.Module, path: str, config: CfgNode, fmt: str, check_images: Iterable,
                     batch_size: int = 1, dynamic_batch: bool = False,
                     val_loader: Optional[Iterable] = None) -> Dict[str, Any]:
    """Export the fake-quantized ``model`` as a checked Q/DQ ONNX file at ``path`` (atomically; the model moves to the CPU).

    Args:
        model: quantized and calibrated model.
        path: destination .onnx file; its folder must exist.
        config: ONNX.OPSET, ONNX.FP16_KEEP_FP32_OPS, QUANT.HIGH_PRECISION, QUANT.CHECK_STEPS,
            QUANT.CHECK_IMAGES and the input shape.
        fmt: ``int8``, ``fp8`` or ``auto`` (each quantizer in its own format: one graph mixing INT8 and FP8 pairs).
        check_images: in-distribution (images, labels) batches the graph is checked on: the calibration images
            (at most QUANT.CHECK_IMAGES of them are used).
        batch_size: batch of the graph (the example batch with ``dynamic_batch``).
        dynamic_batch: symbolic batch dimension.
        val_loader: labelled validation images, checked the same way.

    Returns:
        the export report (path, nodes, ops, checks...) with ``format``, ``high_precision`` and ``qdq``
        (:func:`qdq_coverage` of the file).

    Raises:
        UserError: an unknown high-precision type, or a missing output folder.
        onnx_tools.verify.ExportCheckError: the graph failed a check (nothing is written).
    """
    high_precision = config.QUANT.HIGH_PRECISION
    check_precision(high_precision)
    require_parent_dir(path)
    graph = qdq_graph(model, path, config, fmt, batch_size, dynamic_batch)
    batches = check_batches(check_images, config.QUANT.CHECK_IMAGES)
    linears = block_linears(model)

    def verify(tmp: str) -> Dict[str, Any]:
        if linears:  # ONNX Runtime cannot run the block formats' nodes: the CPU reference of quant/block_check.py
            return verify_block_graph(tmp, model, linears, batches, label=path)
        return verify_quantized(tmp, model, batches, config.QUANT.CHECK_STEPS, config.QUANT.CHECK_FP16_FACTOR,
                                val_loader, label=path)

    if linears and high_precision != "fp16":
        raise UserError(f"MXFP8 and NVFP4 graphs are FP16 between their nodes (as TensorRT takes them): pass "
                        f"--high-precision fp16, not {high_precision}.")
    report = save_checked(graph, path, model, Preprocessing.from_config(config), high_precision,
                          config.ONNX.FP16_KEEP_FP32_OPS, verify=verify,
                          finish=(lambda g: write_quant_record(insert_block_nodes(g, linears), linears)) if linears
                          else None)
    report.update(format=fmt, high_precision=high_precision, qdq=qdq_coverage(onnx.load(path)))
    return report


def _reaches_dequantize(name: str, producers: Dict[str, onnx.NodeProto]) -> bool:
    """True if tensor ``name`` is a DequantizeLinear output, possibly through data-movement ops and casts."""
    node = producers.get(name)
    while node is not None and (node.op_type in DATA_MOVEMENT_OPS or node.op_type == "Cast"):
        node = producers.get(node.input[0])
    return node is not None and node.op_type in DEQUANTIZE_OPS


def qdq_coverage(model: onnx.ModelProto) -> Dict[str, int]:
    """Where the Q/DQ pairs sit in a graph.

    Returns:
        ``gemms`` (MatMul and Gemm nodes), ``gemms_quantized`` (both data inputs
        come from a DequantizeLinear, through transposes/reshapes at most),
        ``adds_quantized`` (Add nodes with a dequantized input: the residual
        adds), ``quantize`` and ``dequantize`` node counts.
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    counts = {"gemms": 0, "gemms_quantized": 0, "adds_quantized": 0, "quantize": 0, "dequantize": 0}
    for node in model.graph.node:
        if node.op_type in GEMM_OPS:
            counts["gemms"] += 1
            counts["gemms_quantized"] += all(_reaches_dequantize(i, producers) for i in node.input[:2])
        elif node.op_type == "Add":
            counts["adds_quantized"] += any(_reaches_dequantize(i, producers) for i in node.input)
        elif node.op_type in QUANTIZE_OPS:
            counts["quantize"] += 1
        elif node.op_type in DEQUANTIZE_OPS:
            counts["dequantize"] += 1
    return counts
