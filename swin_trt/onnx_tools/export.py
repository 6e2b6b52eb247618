"""PyTorch → ONNX with the TorchScript exporter (static shapes except, optionally, the batch).

:func:`export_onnx` writes the raw graph; :func:`export_checked` is the whole
step that export.py (and the Q/DQ export of the quantization flow) runs:
export, :func:`~onnx_tools.graph.lean_graph`, then :func:`save_checked`:
optional FP16 conversion, the checks of :mod:`onnx_tools.verify`, and only
then the file under its name. ``save_checked`` alone turns an FP32 graph
already in hand into a checked FP16 file without exporting again.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from typing import Any, Callable, Dict, Iterable, Optional, Sequence

import onnx
import torch
import torch.nn as nn
from yacs.config import CfgNode

from swin_trt.contract import Preprocessing, write_onnx_contract
from swin_trt.errors import UserError
from swin_trt.files import atomic_path, require_parent_dir, writing
from swin_trt.models.constants import frozen_constants
from swin_trt.onnx_tools.graph import io_dims, lean_graph, op_histogram, shape_op_count

_LOG = logging.getLogger("swin")
INPUT_NAME = "input"
OUTPUT_NAME = "output"
PRECISIONS = ("fp32", "fp16", "bf16")
PLAIN_PRECISIONS = ("fp32", "fp16")  # what export.py writes without Q/DQ (BF16 serves as a Q/DQ graph's high precision)
NO_ONNXRUNTIME = ("bf16",)  # ONNX Runtime's CPU provider has no BF16 kernels: these files are checked by onnx.checker only


def export_onnx(model: nn.Module, path: str, img_size: int, batch_size: int = 1, dynamic_batch: bool = False,
                opset: int = 20, in_chans: int = 3) -> onnx.ModelProto:
    """Export ``model`` (in eval mode, on CPU) to ``path`` atomically and return the loaded graph.

    Args:
        model: the classifier; exported on the CPU in float32.
        path: destination .onnx file (its folder must exist).
        img_size: square input side.
        batch_size: batch of the graph (the example batch with ``dynamic_batch``).
        dynamic_batch: make the batch dimension symbolic (``batch``); all others stay static.
        opset: ONNX opset; >= 17 keeps LayerNormalization one op.
    """
    if opset < 17:
        raise UserError(f"opset {opset} is too old: use 17 or later so LayerNorm exports as one LayerNormalization op.")
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise UserError(f"output folder {os.path.dirname(os.path.abspath(path))} does not exist: create it or choose another --output.")
    model = model.eval().float().cpu()
    example = torch.randn(batch_size, in_chans, img_size, img_size)
    dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    # weight-only functions (Swin V2's logit scale and MLP position bias) are traced as constants
    with atomic_path(path) as tmp, torch.no_grad(), frozen_constants(model):
        torch.onnx.export(model, (example,), tmp, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True, dynamo=False)
        graph = onnx.load(tmp)
    _LOG.debug("exported %s (opset %d, batch %s)", path, opset, "dynamic" if dynamic_batch else batch_size)
    return graph


def default_onnx_path(config: CfgNode, precision: str = "fp32", folder: str = "weights") -> str:
    """``weights/<MODEL.NAME>.onnx``, or ``weights/<MODEL.NAME>_fp16.onnx`` for FP16."""
    suffix = "" if precision == "fp32" else f"_{precision}"
    return os.path.join(folder, f"{config.MODEL.NAME}{suffix}.onnx")


def export_checked(model: nn.Module, path: str, contract: Preprocessing, batch_size: int = 1,
                   dynamic_batch: bool = False, opset: int = 20, precision: str = "fp32",
                   keep_fp32_ops: Sequence[str] = (), tolerance: Optional[float] = None,
                   val_loader: Optional[Iterable] = None, min_top1_agreement: Optional[float] = None) -> Dict[str, Any]:
    """Export ``model`` to ``path``, lean and checked; the file appears only if every check passes.

    Args:
        model: the classifier (a ModelOpt-quantized one exports as Q/DQ).
        path: destination .onnx file; its folder must exist.
        contract: the images the model takes (its ``input_size`` is the graph's input), recorded in the file.
        batch_size: batch of the graph (the example batch with ``dynamic_batch``).
        dynamic_batch: symbolic batch dimension, every other dimension static.
        opset: ONNX opset (>= 17).
        precision, keep_fp32_ops, tolerance, val_loader, min_top1_agreement: see :func:`save_checked`.

    Returns:
        the report of :func:`save_checked`, with the export time added.

    Raises:
        UserError: unknown precision, old opset, missing output folder.
        onnx_tools.verify.ExportCheckError: the graph failed a check (nothing is written).
    """
    check_precision(precision)
    require_parent_dir(path)
    start = time.perf_counter()
    channels, size = contract.input_size[:2]
    with writing(path), tempfile.TemporaryDirectory(prefix=".export-", dir=os.path.dirname(os.path.abspath(path))) as folder:
        graph = lean_graph(export_onnx(model, os.path.join(folder, "raw.onnx"), img_size=size, batch_size=batch_size,
                                       dynamic_batch=dynamic_batch, opset=opset, in_chans=channels))
    exported = time.perf_counter() - start
    report = save_checked(graph, path, model, contract, precision, keep_fp32_ops, tolerance, val_loader,
                          min_top1_agreement)
    report["seconds"] = {"export": exported, **report["seconds"]}
    return report


def check_precision(precision: str) -> None:
    """Raise a :class:`UserError` for a precision other than those of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r} is not known: use one of {', '.join(PRECISIONS)}.")


def save_checked(graph: onnx.ModelProto, path: str, model: nn.Module, contract: Preprocessing,
                 precision: str = "fp32", keep_fp32_ops: Sequence[str] = (), tolerance: Optional[float] = None,
                 val_loader: Optional[Iterable] = None, min_top1_agreement: Optional[float] = None,
                 verify: Optional[Callable[[str], Dict[str, Any]]] = None,
                 finish: Optional[Callable[[onnx.ModelProto], onnx.ModelProto]] = None) -> Dict[str, Any]:
    """Write an exported FP32 graph (converted to FP16/BF16 first for those precisions) to ``path`` once it passes the checks.

    Args:
        graph: the lean FP32 graph of ``model`` (not modified).
        path: destination .onnx file; its folder must exist.
        model: the PyTorch model the graph came from, the reference of the checks.
        contract: the images the model takes (``input_size`` (C, H, W) is one image), recorded in the file's
            ``metadata_props`` (swin_trt/contract.py).
        precision: ``fp32``, or ``fp16``/``bf16`` for the mixed-precision conversion (FP32 inputs and outputs).
        keep_fp32_ops: op types left in FP32 by the conversion.
        tolerance: largest relative difference to PyTorch; by default :data:`onnx_tools.verify.TOLERANCE`.
        val_loader: labelled images for the top-1 agreement check, or None.
        min_top1_agreement: smallest top-1 agreement over ``val_loader`` (default 0.99).
        verify: the check of the written file instead of :func:`onnx_tools.verify.verify_onnx` (its temporary path
            in, the checks out; it raises ``ExportCheckError``): quantized graphs bring their own
            (quant/export_check.py).
        finish: edits the graph once it is in its precision, before it is checked (the block formats' nodes,
            quant/block_formats.py).

    Returns:
        report dict: path, precision, opset, nodes, shape_ops, ops (count per op type), io (dims),
        checks (``random`` and ``val`` comparisons of :func:`onnx_tools.verify.verify_onnx`), seconds per stage.

    Raises:
        onnx_tools.verify.ExportCheckError: the graph failed a check (nothing is written).
    """
    from swin_trt.onnx_tools.verify import MIN_TOP1_AGREEMENT, TOLERANCE, check_graph, verify_onnx

    check_precision(precision)
    require_parent_dir(path)
    tolerance = TOLERANCE[precision] if tolerance is None else tolerance
    min_top1_agreement = MIN_TOP1_AGREEMENT if min_top1_agreement is None else min_top1_agreement
    seconds: Dict[str, float] = {}
    if precision != "fp32":
        from swin_trt.onnx_tools.fp16 import convert_to_fp16

        start = time.perf_counter()
        graph = convert_to_fp16(graph, keep_fp32_ops, precision)
        seconds[precision] = time.perf_counter() - start
    if finish is not None:
        graph = finish(graph)
    write_onnx_contract(graph, contract)
    input_shape = tuple(contract.input_size)
    with atomic_path(path, graph.ByteSize()) as tmp:
        onnx.save(graph, tmp)
        start = time.perf_counter()
        if verify is not None and precision not in NO_ONNXRUNTIME:
            checks = verify(tmp)
        elif precision in NO_ONNXRUNTIME:
            check_graph(tmp, label=path)
            checks = {}
            _LOG.warning("%s: %s graph checked by onnx.checker only (ONNX Runtime cannot run it)", path, precision)
        else:
            checks = verify_onnx(tmp, model, input_shape, tolerance, val_loader, min_top1_agreement, label=path)
        seconds["check"] = time.perf_counter() - start
    _LOG.info("wrote %s (%s, %d nodes)", path, precision, len(graph.graph.node))
    opset = next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"path": path, "precision": precision, "opset": opset, "nodes": len(graph.graph.node),
            "shape_ops": shape_op_count(graph), "ops": op_histogram(graph), "io": io_dims(graph),
            "checks": checks, "seconds": seconds}
