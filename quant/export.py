"""Q/DQ ONNX export of a quantized model, and a count of where the Q/DQ pairs landed.

INT8 quantizers become standard ``QuantizeLinear``/``DequantizeLinear`` pairs
(scale = amax / 127, zero point 0; per output channel for weights) and the
file goes through the export step of ``onnx_tools.export.export_checked``:
lean graph, ``onnx.checker``, ONNX Runtime against the fake-quantized
PyTorch model. FP8 quantizers become ModelOpt's ``trt::TRT_FP8QuantizeLinear``
/ ``trt::TRT_FP8DequantizeLinear`` custom ops, which TensorRT parses but ONNX
Runtime cannot run, so FP8 files get the lean graph and ``onnx.checker`` only.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, Iterable, Optional

import onnx
import torch.nn as nn
from yacs.config import CfgNode

from onnx_tools.export import export_checked, export_onnx
from onnx_tools.graph import lean_graph, op_histogram
from onnx_tools.runtime import config_input_shape
from onnx_tools.verify import check_graph
from utils import atomic_path, require_parent_dir

_LOG = logging.getLogger("swin")
DEQUANTIZE_OPS = ("DequantizeLinear", "TRT_FP8DequantizeLinear")
QUANTIZE_OPS = ("QuantizeLinear", "TRT_FP8QuantizeLinear")
# ops that only move data: TensorRT propagates Q/DQ through them
DATA_MOVEMENT_OPS = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten")
GEMM_OPS = ("MatMul", "Gemm")


def default_paths(config: CfgNode, fmt: str, folder: str = "weights") -> Dict[str, str]:
    """Output files of the quantization flow in ``folder``.

    ``<MODEL.NAME>_<fmt>.onnx`` (Q/DQ graph), ``<MODEL.NAME>_<fmt>_ptq.pth``
    (calibrated checkpoint) and ``<MODEL.NAME>_<fmt>_qat.pth`` (after fine-tuning).
    """
    stem = os.path.join(folder, f"{config.MODEL.NAME}_{fmt}")
    return {"onnx": f"{stem}.onnx", "ptq": f"{stem}_ptq.pth", "qat": f"{stem}_qat.pth"}


def export_quantized(model: nn.Module, path: str, config: CfgNode, fmt: str, batch_size: int = 1,
                     dynamic_batch: bool = False, val_loader: Optional[Iterable] = None) -> Dict[str, Any]:
    """Export the fake-quantized ``model`` as a Q/DQ ONNX file at ``path`` (atomically; the model moves to the CPU).

    Args:
        model: quantized and calibrated model.
        path: destination .onnx file; its folder must exist.
        config: ONNX.OPSET, QUANT.ONNX_TOLERANCE and the input shape.
        fmt: ``int8`` or ``fp8``.
        batch_size: batch of the graph (the example batch with ``dynamic_batch``).
        dynamic_batch: symbolic batch dimension.
        val_loader: INT8 only: labelled images on which ONNX Runtime must agree with PyTorch on >= 99% of top-1.

    Returns:
        the export report (path, nodes, ops, checks...) with ``qdq``: :func:`qdq_coverage` of the graph.
    """
    input_shape = config_input_shape(config)
    if fmt == "int8":
        report = export_checked(model, path, input_shape, batch_size=batch_size, dynamic_batch=dynamic_batch,
                                opset=config.ONNX.OPSET, precision="fp32", tolerance=config.QUANT.ONNX_TOLERANCE,
                                val_loader=val_loader)
        graph = onnx.load(path)
    else:
        require_parent_dir(path)
        with atomic_path(path) as tmp:
            graph = lean_graph(export_onnx(model, tmp, img_size=input_shape[1], batch_size=batch_size,
                                           dynamic_batch=dynamic_batch, opset=config.ONNX.OPSET, in_chans=input_shape[0]))
            onnx.save(graph, tmp)
            check_graph(tmp, label=path)
        report = {"path": path, "precision": fmt, "opset": config.ONNX.OPSET, "nodes": len(graph.graph.node),
                  "ops": op_histogram(graph), "checks": {}}
        _LOG.info("wrote %s (%s Q/DQ as TensorRT custom ops, which ONNX Runtime cannot run)", path, fmt)
    report["qdq"] = qdq_coverage(graph)
    report["format"] = fmt
    return report


def _reaches_dequantize(name: str, producers: Dict[str, onnx.NodeProto]) -> bool:
    """True if tensor ``name`` is a DequantizeLinear output, possibly through data-movement ops."""
    node = producers.get(name)
    while node is not None and node.op_type in DATA_MOVEMENT_OPS:
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
