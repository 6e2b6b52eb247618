"""The whole deployment workflow, each step its own command, ending with the report.

    python pipeline.py                      # embedded digits data, micro model, CPU or GPU
    python pipeline.py --cfg configs/swin_tiny_patch4_window7_224.yaml \
        --resume weights/swin_tiny_patch4_window7_224.pth --data-path /path/to/imagenet
    python pipeline.py --resume my-finetuned-swin/ --data-path my_images    # a transformers or timm folder, no --cfg
    python pipeline.py --resume hf:microsoft/swin-tiny-patch4-window7-224 --data-path /path/to/imagenet

Steps: make the digits dataset → train → PyTorch eval → export FP32 and FP16
ONNX → calibrate + QAT → INT8 ONNX (the FP16 graph plus Q/DQ pairs) → ONNX
Runtime eval of the three → their precision plans (TensorRT's parse, no GPU)
→ build FP32/FP16/INT8 engines → evaluate the engines (where a TensorRT
runtime and a GPU exist; otherwise the report says so) → benchmark → report.

A step is skipped when its outputs exist and a stamp beside its first output
(``.NAME.step.json``, written atomically when the step finished) records the
same command line, the same values of the config nodes the step reads, and
the same inputs (files by SHA-256; folders by the modification times of the
folder and its class sub-folders). Rerunning the same command after an
interruption therefore continues where it stopped (steps write their outputs
atomically; training and QAT also resume from their own per-epoch
checkpoints), while editing the YAML, passing another ``--batch-size`` or
replacing an input reruns exactly the steps it reaches. ``--dry-run`` says
which steps would run and why; ``--force STEP`` reruns one step.
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Optional, Sequence

from swin_trt.errors import UserError, run_main
from swin_trt.files import make_folder, require_room
from swin_trt.cli import WEIGHTS_HELP
from swin_trt.models.weight_source import resolve
from swin_trt.pipeline import DEFAULT_CFG, first_writes, plan, run
from swin_trt.tables import format_table
from swin_trt.validation import check_args


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cfg", help=f"model config (default: {DEFAULT_CFG}, or the --resume folder's own)")
    p.add_argument("--resume", help="trained weights (skips making the digits data and training): " + WEIGHTS_HELP)
    p.add_argument("--data-path", default="datasets/digits", help="ImageNet-style root with train/ and val/")
    p.add_argument("--batch-size", type=int, default=64, help="batch for evaluation and QAT")
    p.add_argument("--bench-batches", type=int, nargs="+", default=[1, 16, 64, 256], help="benchmark batch sizes")
    p.add_argument("--bench-seconds", type=float, default=3.0, help="time limit per benchmark cell")
    p.add_argument("--output", default="output", help="training output root")
    p.add_argument("--weights", default="weights", help="folder for ONNX files and engines")
    p.add_argument("--results", default="results", help="folder for metrics and the report")
    p.add_argument("--formats", nargs="+", choices=("int8", "fp8", "mxfp8", "nvfp4"),
                   help="the quantized graphs to make (default: QUANT.FORMAT of the config, int8); mxfp8 and nvfp4 "
                        "run only on an NVIDIA GPU, where ModelOpt's block quantizers run")
    p.add_argument("--force", nargs="+", default=[], metavar="STEP", help="rerun these steps even if up to date")
    p.add_argument("--dry-run", action="store_true", help="only say which steps would run, and why")
    args = p.parse_args(argv)
    check_args(args, {"batch_size": 1, "bench_batches": 1})
    if not args.bench_seconds > 0:
        raise UserError(f"--bench-seconds is {args.bench_seconds}: pass a time in seconds above 0.")
    if args.resume:
        resolve(args.resume)
    steps = plan(args)
    if not args.dry_run:
        # the folders the steps write into, each checked for its first file before the long steps run; each step
        # makes its own files (and make_digits its own folder)
        for path, needed in first_writes(steps, args):
            require_room(path, needed)
        make_folder(os.path.join(args.results, "accuracy"))
    start = time.perf_counter()
    summary = run(steps, args.force, args.dry_run)
    print(format_table(summary))
    if not args.dry_run:
        print(f"pipeline finished in {time.perf_counter() - start:.0f} s; report: {os.path.join(args.results, 'report.md')}")


if __name__ == "__main__":
    run_main(main)
