"""What an engine computes in and stores: the precision plan of an ONNX graph (any machine) or a built engine (GPU).

    python trt/inspect_engine.py --onnx-file weights/swin_tiny_int8.onnx [--layers]   # any machine, no GPU
    python trt/inspect_engine.py --compare weights/swin_tiny_fp16.onnx weights/swin_tiny_int8.onnx
    python trt/inspect_engine.py --engine weights/swin_tiny_int8.engine                # GPU (engine inspector)

``--onnx-file`` parses the graph with TensorRT's ONNX parser into a strongly
typed network, at batch 1, and reports the precision plan of
trt/network_plan.py: layers by type, activation bytes per image by data type
(as TensorRT stores them once its Q/DQ fusions are made), layers left in FP32
and every matrix multiply by the precision of its inputs. ``--compare`` puts
several graphs side by side with the byte ratio to the first. These are plans
read from the network, not measurements of an engine. ``--engine`` reads
TensorRT's engine inspector instead (layer type, precision, tactic; the engine
must have been built with ProfilingVerbosity.DETAILED, as trt/build_engine.py
does), which needs a GPU that can deserialize the engine.
"""
from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

from swin_trt import cli
from swin_trt.errors import UserError, run_main
from swin_trt.files import write_json
from swin_trt.tables import format_table
from swin_trt.trt.backend import load_backend
from swin_trt.trt.engine_inspector import inspect_engine, summarize
from swin_trt.trt.network_plan import comparison_rows, layer_table, layer_type_rows, precision_plan


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--onnx-file", help="precision plan of the parsed TensorRT network (no GPU needed)")
    source.add_argument("--compare", nargs="+", metavar="ONNX", help="precision plans of several graphs side by side")
    source.add_argument("--engine", help="report from TensorRT's engine inspector (needs a GPU)")
    cli.add_backend(parser)
    parser.add_argument("--batch", type=int, default=1, help="batch the graphs are parsed at (bytes are per image)")
    parser.add_argument("--layers", action="store_true", help="print every layer, not only the summary")
    cli.add_output_json(parser, "the layers and the summary")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    if args.batch < 1:
        raise UserError(f"--batch {args.batch} is not a batch size: pass 1 or more.")
    if args.engine:
        rows = inspect_engine(args.engine, args.backend)
        gemms = [r for r in rows if r["gemm"]]
        if args.layers:
            print(format_table([{k: r[k] for k in ("layer", "type", "precision", "tactic")} for r in gemms]) + "\n")
        print(format_table(summarize(gemms)))
        if args.output_json:
            write_json(args.output_json, {"source": args.engine, "rows": rows, "summary": summarize(gemms)})
        return
    backend = load_backend(args.backend)
    files = [args.onnx_file] if args.onnx_file else args.compare
    plans = [precision_plan(path, backend, args.batch) for path in files]
    if args.layers:
        for plan in plans:
            print(f"{plan.source}:\n" + format_table(layer_table(plan)) + "\n")
    labels = [os.path.basename(path) for path in files]
    summaries = [plan.summary() for plan in plans]
    print(format_table(layer_type_rows(summaries, labels)) + "\n")
    print(format_table(comparison_rows(summaries, labels)))
    print(f"\nparsed by {backend.describe()} at batch {args.batch}: a plan of what the engine stores, "
          "not a measurement of an engine")
    if args.output_json:
        graphs = [plan.as_dict() for plan in plans]
        write_json(args.output_json, graphs[0] if args.onnx_file else {"graphs": graphs})


if __name__ == "__main__":
    run_main(main)
