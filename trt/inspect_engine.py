"""Which matrix multiplies run in INT8/FP8 and which in FP16/FP32: per-layer report and summary.

    python trt/inspect_engine.py --onnx-file weights/swin_tiny_int8.onnx      # any machine (parsed network)
    python trt/inspect_engine.py --engine weights/swin_tiny_int8.engine       # GPU (TensorRT's engine inspector)

``--engine`` reads TensorRT's engine inspector (layer type, precision,
tactic; the engine must have been built with ProfilingVerbosity.DETAILED,
which trt/build_engine.py does), so it needs a GPU that can deserialize the
engine. ``--onnx-file`` parses the graph into a TensorRT network instead and
reports every matrix multiply and convolution with the data types of its
inputs and whether each comes through a Q/DQ pair: what the builder is asked
to run in INT8, with no GPU needed.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

if __package__ in (None, ""):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from trt.backend import BACKEND_CHOICES, Backend, dtype_name, load_backend
from trt.engine_inspector import inspect_engine
from utils import format_table, require_file, run_main, write_json

# layers that only move or retype data: a Q/DQ pair seen through them still feeds the GEMM
_TRANSPARENT = {"SHUFFLE", "SLICE", "IDENTITY", "SQUEEZE", "UNSQUEEZE", "GATHER", "CAST"}
_COMPUTE = {"MATRIX_MULTIPLY": "matmul", "CONVOLUTION": "conv"}
_MAX_HOPS = 8


def _producers(network) -> Dict[str, Any]:
    out = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            out[layer.get_output(j).name] = layer
    return out


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
            info["quantized"] = dtype_name(layer.get_input(0).dtype)
            source = producers.get(layer.get_input(0).name)
            while source is not None and source.type.name in _TRANSPARENT | {"QUANTIZE"} and source.num_inputs:
                source = producers.get(source.get_input(0).name)
            info["constant"] = source is not None and source.type.name == "CONSTANT"
            break
        if kind == "CONSTANT":
            info["constant"] = True
            break
        if kind not in _TRANSPARENT or not layer.num_inputs:
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


def inspect_network(onnx_file: str, backend: Backend) -> List[Dict[str, Any]]:
    """One row per matrix multiply and convolution of the parsed network (no GPU needed).

    Row keys: ``layer``, ``kind`` (``linear``: one input is a weight; ``attention``: both are
    activations; ``conv``), ``precision``, ``inputs`` (traced, see :func:`trace_input`), ``output``.
    """
    from trt.build_engine import EngineBuilder

    require_file(onnx_file, "ONNX file", "pass the path of a file written by export.py or swin_quant_flow.py")
    builder = EngineBuilder(backend, detailed_profiling=False)
    network = builder.create_network(onnx_file)
    producers = _producers(network)
    rows = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        op = _COMPUTE.get(layer.type.name)
        if op is None:
            continue
        # data and weights; a convolution's kernel is an input tensor only when it comes through Q/DQ
        inputs = [trace_input(layer.get_input(j), producers) for j in range(min(layer.num_inputs, 2))
                  if layer.get_input(j) is not None]
        if op == "conv":
            kind = "conv"
        else:
            kind = "linear" if any(t["constant"] for t in inputs) else "attention"
        rows.append({"layer": layer.name, "kind": kind, "precision": gemm_precision(inputs), "inputs": inputs,
                     "output": dtype_name(layer.get_output(0).dtype)})
    return rows


def summarize(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Counts per kind of layer and precision, e.g. ``{"kind": "attention", "INT8": 24, "FLOAT": 0}``."""
    counts: Dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for row in rows:
        kind = row.get("kind") or ("gemm" if row.get("gemm") else "other")
        counts[kind][row["precision"]] += 1
    precisions = sorted({p for c in counts.values() for p in c})
    return [dict({"kind": kind, "total": sum(c.values())}, **{p: c.get(p, 0) for p in precisions})
            for kind, c in sorted(counts.items())]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--onnx-file", help="report from the parsed TensorRT network (no GPU needed)")
    source.add_argument("--engine", help="report from TensorRT's engine inspector (needs a GPU)")
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="auto")
    parser.add_argument("--layers", action="store_true", help="print every row, not only the summary")
    parser.add_argument("--output-json", help="write rows and summary here")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    if args.onnx_file:
        rows = inspect_network(args.onnx_file, load_backend(args.backend))
        table_rows = [{"layer": r["layer"], "kind": r["kind"], "precision": r["precision"],
                       "inputs": ", ".join(f"{t['dtype']}" + (f" (Q/DQ {t['quantized']})" if t["quantized"] else "")
                                           for t in r["inputs"])} for r in rows]
    else:
        rows = inspect_engine(args.engine, args.backend)
        table_rows = [{k: r[k] for k in ("layer", "type", "precision", "tactic")} for r in rows if r["gemm"]]
    summary = summarize(rows if args.onnx_file else [r for r in rows if r["gemm"]])
    if args.layers:
        print(format_table(table_rows))
        print()
    print(format_table(summary))
    if args.output_json:
        write_json(args.output_json, {"source": args.onnx_file or args.engine, "rows": rows, "summary": summary})


if __name__ == "__main__":
    run_main(main)
