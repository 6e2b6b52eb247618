"""Acc@1/Acc@5 of an ONNX file (FP32, FP16 or Q/DQ INT8) over an ImageFolder validation set, in ONNX Runtime.

    python trt/eval_onnxrt.py --eval --cfg configs/swin_tiny_patch4_window7_224.yaml --resume weights/swin_tiny.onnx \\
        --data-path /data/imagenet --batch-size 64 [--output-json metrics.json]

``--resume`` names the ONNX file, as in the original. ``--cfg`` is checked
against the preprocessing the file records (one sentence on a mismatch);
without it the file's own is used. The CUDA execution provider runs the
file when ONNX Runtime has one and a GPU is visible, else the CPU provider. A fixed-batch file takes any --batch-size: images go through in
chunks of the file's batch, the last one padded. Under torchrun each process
evaluates its share of the images and the metrics are summed.
"""
from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

from swin_trt import cli
from swin_trt.contract import read_onnx_contract, resolve_config
from swin_trt.distributed import cleanup, init_distributed
from swin_trt.errors import UserError, run_main
from swin_trt.files import write_json
from swin_trt.logs import create_logger
from swin_trt.onnx_tools.evaluate import evaluate_onnx
from swin_trt.tables import format_table, weakest_classes
from swin_trt.validation import check_args, check_config, require_dataset, require_onnx


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_original_eval(parser)
    cli.add_config(parser, required=False, what="config the file was exported with (default: the file's own record)")
    parser.add_argument("--resume", "--onnx", dest="onnx", required=True, help="the .onnx file to evaluate")
    cli.add_data(parser, batch="images per step (default: the file's fixed batch, else DATA.BATCH_SIZE)")
    cli.add_output_json(parser)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    check_args(args, {"batch_size": 1, "num_workers": 0})
    require_onnx(args.onnx)
    config = resolve_config(args.cfg, args.opts, read_onnx_contract(args.onnx), f"ONNX file {args.onnx}",
                            DATA__DATA_PATH=args.data_path)
    check_config(config, args.cfg or args.onnx)
    if not config.DATA.DATA_PATH:
        raise UserError("no --data-path given: pass the folder that holds val/ (e.g. datasets/digits).")
    require_dataset(config.DATA.DATA_PATH, ["val"])
    # gloo: the metrics are CPU tensors whatever provider runs the graph
    _, rank, _ = init_distributed("cpu")
    create_logger(rank=rank)
    try:
        metrics = evaluate_onnx(config, args.onnx, args.batch_size, args.num_workers,
                                device_id=int(os.environ.get("LOCAL_RANK", "0")))
    finally:
        cleanup()
    if rank == 0:
        print(format_table([metrics], ["onnx", "providers", "batch_size", "images", "acc1", "acc5", "loss", "images_per_s"]))
        if weakest_classes(metrics):
            print(weakest_classes(metrics))
        if args.output_json:
            write_json(args.output_json, metrics)


if __name__ == "__main__":
    run_main(main)
