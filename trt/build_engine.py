"""Build a TensorRT engine from an ONNX file: strongly typed, precision taken from the graph.

    python trt/build_engine.py --onnx-file weights/swin_tiny.onnx --trt-engine weights/swin_tiny_fp16.engine --mode fp16
    python trt/build_engine.py --onnx-file weights/swin_tiny_int8.onnx --trt-engine weights/swin_tiny_int8.engine \
        --mode int8 --batch-size 16

``--mode fp16`` given an FP32 graph converts it first (onnx_tools/fp16.py,
ops in ONNX.FP16_KEEP_FP32_OPS stay FP32); ``--mode int8|fp8`` needs Q/DQ
nodes in the graph. FP32 layers stay FP32: the TF32 builder flag, on by
default in TensorRT, is cleared unless ``--tf32``. The engine is written
atomically with ``ENGINE.json`` beside it (ONNX hash, mode, profile, TF32,
TensorRT module and version, GPU, the network's precision summary).
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from swin_trt import cli
from swin_trt.config import get_config
from swin_trt.errors import run_main
from swin_trt.logs import create_logger
from swin_trt.trt.build import BatchProfile, build_engine
from swin_trt.trt.onnx_precision import MODES, check_mode, graph_precision
from swin_trt.validation import check_args, check_config, require_modelopt_onnx, require_onnx


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx-file", required=True, help="ONNX graph (FP32, FP16 or with Q/DQ)")
    parser.add_argument("--trt-engine", required=True, help="engine file to write (ENGINE.json is written beside it)")
    parser.add_argument("--mode", choices=MODES, default="fp16", help="precision; must match the graph (int8/fp8 need Q/DQ)")
    parser.add_argument("--batch-size", type=int, help="fixed batch (min = opt = max)")
    parser.add_argument("--min-batch", type=int, help="smallest batch of the profile (default TRT.MIN_BATCH)")
    parser.add_argument("--opt-batch", type=int, help="batch the tactics are timed for (default TRT.OPT_BATCH)")
    parser.add_argument("--max-batch", type=int, help="largest batch of the profile (default TRT.MAX_BATCH)")
    parser.add_argument("--workspace", type=int, help="workspace limit in MiB (default TRT.WORKSPACE_MIB)")
    parser.add_argument("--timing-cache", help="timing-cache file, read if present and written after the build")
    parser.add_argument("--builder-optimization-level", type=int, help="0..5 (default TRT.OPTIMIZATION_LEVEL)")
    cli.add_backend(parser)
    parser.add_argument("--save-fp16-onnx", help="with --mode fp16 on an FP32 ONNX: keep the converted graph here")
    parser.add_argument("--tf32", action="store_true",
                        help="let FP32 convolutions and matrix multiplies run in TF32 (TensorRT's default; off here)")
    cli.add_config(parser, required=False, what="config YAML (for the TRT and ONNX.FP16_KEEP_FP32_OPS defaults)")
    parser.add_argument("-v", "--verbose", action="store_true", help="TensorRT's verbose log")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    create_logger()
    check_args(args, {"batch_size": 1, "min_batch": 1, "opt_batch": 1, "max_batch": 1, "workspace": 1,
                      "builder_optimization_level": (0, 5)})
    config = get_config(args.cfg, args.opts, TRT__WORKSPACE_MIB=args.workspace,
                        TRT__OPTIMIZATION_LEVEL=args.builder_optimization_level)
    check_config(config, args.cfg or "the defaults")
    if check_mode(args.mode, graph_precision(require_onnx(args.onnx_file)), args.onnx_file):
        require_modelopt_onnx(f"--mode fp16 on the FP32 graph {args.onnx_file} (FP16 conversion with ModelOpt AutoCast)")
    meta = build_engine(
        args.onnx_file, args.trt_engine, args.mode, args.batch_size, args.min_batch, args.opt_batch, args.max_batch,
        workspace_mib=config.TRT.WORKSPACE_MIB, timing_cache=args.timing_cache,
        optimization_level=config.TRT.OPTIMIZATION_LEVEL, backend=args.backend, verbose=args.verbose,
        fp16_keep_fp32_ops=list(config.ONNX.FP16_KEEP_FP32_OPS),
        default_profile=BatchProfile(config.TRT.MIN_BATCH, config.TRT.OPT_BATCH, config.TRT.MAX_BATCH),
        save_fp16_onnx=args.save_fp16_onnx, tf32=args.tf32)
    p = meta["profile"]
    print(f"{args.trt_engine}: {meta['mode']} engine, {meta['backend']} {meta['version']}, batch {p['min']}..{p['max']} "
          f"(opt {p['opt']}), {meta['engine_bytes'] / 1e6:.1f} MB, {meta['build_seconds']} s")


if __name__ == "__main__":
    run_main(main)
