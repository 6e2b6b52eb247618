"""ONNX Runtime against TensorRT (or another ONNX in ONNX Runtime) on the same inputs, whole model or per layer.

    # the engine against its ONNX (GPU)
    python trt/debug/compare.py --onnx-file weights/swin_tiny.onnx --engine weights/swin_tiny_fp32.engine
    # every layer: the FP16 graph built by TensorRT against the FP32 graph in ONNX Runtime (GPU)
    python trt/debug/compare.py --onnx-file weights/swin_tiny.onnx --candidate-onnx weights/swin_tiny_fp16.onnx --per-layer
    # every layer, no GPU: the FP16 graph in ONNX Runtime against the FP32 graph
    python trt/debug/compare.py --onnx-file weights/swin_tiny.onnx --candidate-onnx weights/swin_tiny_fp16.onnx \
        --candidate ort --per-layer

The reference is always ``--onnx-file`` in ONNX Runtime (CPU), with the
session options of onnx_tools/runtime.py (``session.disable_quant_qdq``: Q/DQ
graphs run as written, not as the integer kernels that overflow on x86 CPUs
without VNNI). A TensorRT candidate built here from an ONNX file has TF32 off,
as trt/build_engine.py builds it (``--tf32`` to allow it). Runners come
from polygraphy: ``--per-layer`` marks every tensor as an output on both
sides (``ModifyOutputs`` / ``ModifyNetworkOutputs`` with MARK_ALL), which for
TensorRT also means building a new engine from the ONNX. Inputs are seeded
standard-normal images. The tolerance report (trt/debug/tolerance.py) lists
each tensor both sides produced, in graph order, and names the first one
outside ``--atol``/``--rtol``.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from swin_trt import cli
from swin_trt.errors import run_main
from swin_trt.files import write_json
from swin_trt.logs import create_logger
from swin_trt.tables import format_table
from swin_trt.trt.compare import compare
from swin_trt.trt.tolerance import report_rows
from swin_trt.validation import check_args


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx-file", required=True, help="reference graph, run in ONNX Runtime")
    parser.add_argument("--engine", help="candidate: a built TensorRT engine (outputs only)")
    parser.add_argument("--candidate-onnx", help="candidate graph (default: --onnx-file)")
    parser.add_argument("--candidate", choices=("trt", "ort"), default="trt", help="who runs the candidate graph")
    parser.add_argument("--per-layer", action="store_true", help="compare every tensor, not just the outputs")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--atol", type=float, default=1e-3)
    parser.add_argument("--rtol", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    cli.add_backend(parser)
    parser.add_argument("--tf32", action="store_true", help="TensorRT candidate from ONNX: allow TF32 (off, as in builds)")
    parser.add_argument("--show", choices=("failed", "all"), default="failed", help="tensors to list")
    cli.add_output_json(parser, "the full report")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    check_args(args, {"batch_size": 1})
    create_logger()
    report = compare(args.onnx_file, args.candidate, args.candidate_onnx, args.engine, args.per_layer,
                     args.batch_size, args.atol, args.rtol, args.seed, args.backend, args.tf32)
    rows = report_rows(report, only_failed=args.show == "failed")
    if rows:
        print(format_table(rows))
    print(f"{report['compared']} tensors compared (atol {args.atol:g}, rtol {args.rtol:g}): {report['failed']} outside the "
          f"tolerance; first: {report['first_failure']}; largest relative difference: {report['worst']}; "
          f"model outputs {'pass' if report['outputs_passed'] else 'FAIL'}")
    if args.output_json:
        write_json(args.output_json, report)
    return 0 if report["outputs_passed"] else 1


if __name__ == "__main__":
    run_main(main)
