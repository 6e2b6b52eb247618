"""Throughput table: a row per backend and precision; columns batch 1, 16, 64, 256 and the speed-up against FP16.

    python trt/benchmark.py --cfg configs/swin_tiny_patch4_window7_224.yaml --backends eager compile ort
    python trt/benchmark.py --cfg configs/swin_tiny_patch4_window7_224.yaml --backends trt \
        --engine fp16=weights/swin_tiny_fp16.engine --engine int8=weights/swin_tiny_int8.engine

Backends: ``trt`` (engines given with ``--engine PRECISION=FILE``), ``ort``
(ONNX Runtime with the CUDA provider where it is installed and a GPU is
visible, else the CPU provider, named in the row; images are bound in place
with an I/O binding; ``--onnx PRECISION=FILE``, or the config's model exported
on the fly for fp32/fp16), ``eager`` (PyTorch; fp16 is autocast, on a GPU
only: CPU autocast FP16 is no deployment figure) and ``compile``
(``torch.compile`` of the same). PyTorch rows are FP32/FP16; INT8/FP8 rows
are the Q/DQ graph's (ort, trt). The last column divides each row by the
FP16 row of the same backend (TensorRT INT8 by TensorRT FP16, ONNX Runtime
INT8 by ONNX Runtime FP16 on the same provider). Weights are random
unless ``--resume`` names a checkpoint: speed does not depend on them.
``--cfg`` is checked against the preprocessing each ``--onnx`` / ``--engine``
file records; without ``--cfg`` the first file's record gives the image size
(the PyTorch columns need ``--cfg``).
Inputs are random tensors already on the device, so the table measures the
model, not the data pipeline. On a GPU a cell is the median of ``--repeats``
CUDA-event timings of ``--iters`` back-to-back calls (swin_trt/timing.py);
on the CPU the median wall-clock time of single calls. The table is printed as
markdown and written as CSV/JSON/markdown on request, and for every engine
the equivalent ``trtexec`` command line is printed (trtexec reports
``Throughput: X qps`` in batches per second: images/s = X * batch).
"""
from __future__ import annotations

import argparse
import datetime
from typing import Optional, Sequence

import torch

from swin_trt import cli
from swin_trt.benchmark import (BACKENDS, BATCH_SIZES, benchmark_config, engine_io, parse_assignments, run_benchmark,
                                trtexec_command)
from swin_trt.benchmark_table import format_csv, format_markdown
from swin_trt.errors import UserError, run_main
from swin_trt.files import atomic_write_bytes, write_json
from swin_trt.logs import create_logger
from swin_trt.trt.metadata import read_metadata
from swin_trt.validation import check_args


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_config(parser, required=False, what="config of the model (default: the record of the first --onnx/--engine "
                                                "file; eager and compile need it)")
    parser.add_argument("--resume", help="weights of the PyTorch rows (random when omitted): " + cli.WEIGHTS_HELP)
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=["eager", "compile", "ort"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "fp16"], help="for the ort/eager/compile columns")
    parser.add_argument("--engine", action="append", default=[], help="PRECISION=FILE, a TensorRT engine (repeatable)")
    parser.add_argument("--onnx", action="append", default=[], help="PRECISION=FILE for the ort columns (repeatable)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=list(BATCH_SIZES))
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls per cell (at most 2 on the CPU)")
    parser.add_argument("--iters", type=int, default=30, help="timed calls per repeat (GPU) or per cell (CPU)")
    parser.add_argument("--repeats", type=int, default=5, help="GPU: the median of this many timings")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="CPU: stop a cell after this long (3 calls at least)")
    parser.add_argument("--compile-mode", default="default", help="torch.compile mode (default, max-autotune, ...)")
    parser.add_argument("--cuda-graph", action="store_true", help="TensorRT engines replay CUDA graphs")
    cli.add_device(parser)
    cli.add_output_json(parser, "the cells and their context")
    parser.add_argument("--output-csv", help="cells as CSV")
    parser.add_argument("--output-md", help="the markdown table")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    check_args(args, {"batch_sizes": 1, "warmup": 0, "iters": 1, "repeats": 1})
    create_logger()
    engines = parse_assignments(args.engine, "--engine")
    onnx_files = parse_assignments(args.onnx, "--onnx")
    config = benchmark_config(args.cfg, args.opts, onnx_files, engines, set(args.backends) & {"eager", "compile"},
                              args.resume)
    if "trt" in args.backends and not engines:
        raise UserError("--backends trt needs at least one --engine PRECISION=FILE.")
    if engines and "trt" not in args.backends:
        args.backends = list(args.backends) + ["trt"]
    results = run_benchmark(config, args.backends, args.precisions, args.batch_sizes, engines, onnx_files, args.resume,
                            args.warmup, args.iters, args.repeats, args.compile_mode, args.cuda_graph,
                            None if args.device == "auto" else args.device, args.max_seconds)
    devices = sorted({r["device"] for r in results if r.get("device")})
    date = datetime.date.today().isoformat()
    table = format_markdown(results, args.batch_sizes)
    header = (f"{config.MODEL.NAME}, images/s (median), {', '.join(devices)}, torch {torch.__version__}, {date}; "
              f"weights {'from ' + args.resume if args.resume else 'random'}")
    print(header)
    print(table)
    for precision, engine_file in sorted(engines.items()):
        name, shape, limits = engine_io(engine_file, config)
        meta = read_metadata(engine_file) or {}
        if meta.get("backend") == "tensorrt_rtx":
            print(f"# {precision}: {engine_file} is a TensorRT-RTX engine; trtexec (full TensorRT) cannot load it")
            continue
        for batch in args.batch_sizes:
            if limits is None or limits[0] <= batch <= limits[1]:
                line = trtexec_command(engine_file, batch, name, shape, meta.get("version"))
                print(f"# {precision} batch {batch}: {line}")
    if args.output_md:
        atomic_write_bytes(args.output_md, (header + "\n\n" + table + "\n").encode())
    if args.output_csv:
        atomic_write_bytes(args.output_csv, format_csv(results).encode())
    if args.output_json:
        write_json(args.output_json, {"model": config.MODEL.NAME, "date": date, "torch": torch.__version__,
                                      "devices": devices, "weights": args.resume or "random",
                                      "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "results": results})
    out_of_memory = [r["reason"] for r in results if r.get("out_of_memory")]
    if out_of_memory:  # the measured cells are printed and written above; the run still ends as the user's mistake
        raise UserError(out_of_memory[0])


if __name__ == "__main__":
    run_main(main)
