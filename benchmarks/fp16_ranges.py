"""Which ops of a model's FP32 graph must stay FP32 in its FP16 plan, measured in ONNX Runtime on images.

    python benchmarks/fp16_ranges.py --cfg CFG [--resume CKPT] [--data-path DATA] [--images 64]

Exports the FP32 graph of the config's model (the checkpoint's weights, or seeded random weights moved off their
initial values when no checkpoint is given), runs it on val/ images (or seeded noise when no data is given) with
every node output marked, and prints per op type the largest output, the largest accumulator (a ReduceL2's sum of
squares) and FP16's headroom over it, then the ops that need FP32 against the config's ``ONNX.FP16_KEEP_FP32_OPS``.
"""
from __future__ import annotations

import argparse
import itertools
import os
import tempfile
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from swin_trt.cli import WEIGHTS_HELP
from swin_trt.models.weight_source import weights_config
from swin_trt.contract import Preprocessing
from swin_trt.data import build_loader
from swin_trt.errors import run_main
from swin_trt.files import write_json
from swin_trt.models.build import model_with_weights, spread_weights
from swin_trt.onnx_tools.export import export_onnx
from swin_trt.onnx_tools.fp16_ranges import format_ranges, measure_ranges, ops_needing_fp32
from swin_trt.onnx_tools.graph import lean_graph


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg", help="model config (optional for a model folder or hf:ORG/NAME)")
    parser.add_argument("--resume", default="", help="weights (default: seeded random weights): " + WEIGHTS_HELP)
    parser.add_argument("--data-path", help="folder with val/ (default: seeded noise images)")
    parser.add_argument("--images", type=int, default=64, help="images to measure over")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-json", help="write the ranges here")
    return parser.parse_args(argv)


def image_batches(args: argparse.Namespace, config) -> Iterator[np.ndarray]:
    if args.data_path:
        images = (batch[0].numpy() for batch in build_loader(config, "val", batch_size=args.batch_size, num_workers=0))
    else:
        gen = torch.Generator().manual_seed(args.seed)
        size = config.DATA.IMG_SIZE
        images = (torch.randn(args.batch_size, 3, size, size, generator=gen).numpy() for _ in itertools.count())
    return itertools.islice(images, max(1, args.images // args.batch_size))


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    config = weights_config(args.cfg, [], args.resume, DATA__DATA_PATH=args.data_path)
    torch.manual_seed(args.seed)
    model = model_with_weights(config, args.resume, "measuring")
    if not args.resume:
        spread_weights(model, args.seed, scale=0.02)
    contract = Preprocessing.from_config(config)
    with tempfile.TemporaryDirectory() as scratch:
        graph = lean_graph(export_onnx(model, os.path.join(scratch, "fp32.onnx"), contract.input_size[1],
                                       dynamic_batch=True))
    ranges = measure_ranges(graph, image_batches(args, config))
    needed = ops_needing_fp32(ranges)
    kept = sorted(config.ONNX.FP16_KEEP_FP32_OPS)
    print(format_ranges(ranges))
    print(f"\nops that need FP32 (headroom < 16x): {', '.join(needed) or 'none'}; "
          f"ONNX.FP16_KEEP_FP32_OPS keeps: {', '.join(kept)}")
    if args.output_json:
        write_json(args.output_json, {"config": args.cfg, "resume": args.resume, "needs_fp32": needed, "kept": kept,
                                      "ranges": [dict(vars(r), fp16_headroom=r.fp16_headroom) for r in ranges]})


if __name__ == "__main__":
    run_main(main)
