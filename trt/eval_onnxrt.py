"""Acc@1/Acc@5 of an ONNX file (FP32, FP16 or Q/DQ INT8) over an ImageFolder validation set, in ONNX Runtime.

    python trt/eval_onnxrt.py --eval --cfg configs/swin_tiny_patch4_window7_224.yaml --resume weights/swin_tiny.onnx \\
        --data-path /data/imagenet --batch-size 64 [--output-json metrics.json]

``--resume`` names the ONNX file, as in the original. The CUDA execution
provider runs it when ONNX Runtime has one and a GPU is visible, else the
CPU provider. A fixed-batch file takes any --batch-size: images go through in
chunks of the file's batch, the last one padded. Under torchrun each process
evaluates its share of the images and the metrics are summed.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, Optional, Sequence

if __package__ in (None, ""):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from config import get_config
from data import build_loader
from distributed import cleanup, init_distributed
from evaluation import evaluate
from onnx_tools.runtime import OrtPredictor, default_providers
from utils import UserError, create_logger, format_table, run_main, write_json
from validation import check_args, check_config, require_dataset, require_onnx


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eval", action="store_true", help="accepted for the original's command line (always evaluates)")
    parser.add_argument("--cfg", required=True, help="model config the file was exported with (configs/*.yaml)")
    parser.add_argument("--opts", nargs="+", default=[], help="KEY VALUE pairs overriding the config")
    parser.add_argument("--resume", "--onnx", dest="onnx", required=True, help="the .onnx file to evaluate")
    parser.add_argument("--data-path", help="dataset root holding val/ (default: DATA.DATA_PATH)")
    parser.add_argument("--batch-size", type=int, help="images per step (default: the file's fixed batch, else DATA.BATCH_SIZE)")
    parser.add_argument("--num-workers", type=int, help="data loader workers (default: DATA.NUM_WORKERS)")
    parser.add_argument("--output-json", help="write the metrics here")
    return parser.parse_args(argv)


def evaluate_onnx(config, onnx_file: str, batch_size: Optional[int] = None, num_workers: Optional[int] = None,
                  device_id: int = 0) -> Dict[str, Any]:
    """Metrics dict (acc1, acc5, loss, images, images_per_s, onnx, providers) of ``onnx_file`` on DATA.DATA_PATH/val.

    Raises:
        UserError: missing or unloadable file, or an input shape the config's images do not fit.
    """
    predictor = OrtPredictor(onnx_file, default_providers(device_id))
    predictor.check_config(config)
    loader = build_loader(config, "val", batch_size=batch_size or predictor.batch_size or config.DATA.BATCH_SIZE,
                          shuffle=False, num_workers=num_workers)
    metrics = evaluate(predictor, loader, desc=f"onnxrt {os.path.basename(onnx_file)}", over_ranks=True)
    metrics.update(onnx=onnx_file, providers=",".join(predictor.providers), batch_size=loader.batch_size)
    return metrics


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    check_args(args, {"batch_size": 1, "num_workers": 0})
    config = get_config(args.cfg, args.opts, DATA__DATA_PATH=args.data_path)
    check_config(config, args.cfg)
    require_onnx(args.onnx)
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
        if args.output_json:
            write_json(args.output_json, metrics)


if __name__ == "__main__":
    run_main(main)
