"""Export a Swin checkpoint to ONNX (FP32 or mixed FP16), then check the file against PyTorch.

    python export.py --cfg configs/swin_tiny_patch4_window7_224.yaml --resume swin_tiny_patch4_window7_224.pth \\
        --batch-size-onnx 64 [--dynamic-batch] [--precision fp16] [--output weights/swin_tiny.onnx]

Checks: onnx.checker, then ONNX Runtime against PyTorch on random images
(relative difference at most 1e-4 for FP32, 1e-2 for FP16) and, with
--data-path, on the validation images too (top-1 agreement at least 99%).
A file that fails a check is not written. Without --resume the model has
random weights (a warning says so).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

import torch.nn as nn
from yacs.config import CfgNode

from config import get_config
from onnx_tools.export import INPUT_NAME, PLAIN_PRECISIONS, default_onnx_path, export_checked
from onnx_tools.runtime import config_input_shape
from onnx_tools.verify import ExportCheckError
from utils import UserError, create_logger, format_table, require_parent_dir, run_main, write_json
from validation import check_args, check_config, require_checkpoint, require_dataset, require_modelopt_onnx

_LOG = logging.getLogger("swin")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg", required=True, help="model config (configs/*.yaml)")
    parser.add_argument("--opts", nargs="+", default=[], help="KEY VALUE pairs overriding the config")
    parser.add_argument("--resume", help="checkpoint to export (default: MODEL.RESUME; none: random weights)")
    parser.add_argument("--batch-size-onnx", type=int,
                        help="fixed batch of the graph, unless --dynamic-batch is given too (default: ONNX.BATCH_SIZE)")
    parser.add_argument("--dynamic-batch", action=argparse.BooleanOptionalAction, default=None,
                        help="symbolic batch dimension (default: ONNX.DYNAMIC_BATCH)")
    parser.add_argument("--precision", choices=PLAIN_PRECISIONS, default="fp32", help="fp16: mixed precision, FP32 I/O")
    parser.add_argument("--output", help="the .onnx file (default: weights/<MODEL.NAME>[_fp16].onnx)")
    parser.add_argument("--opset", type=int, help="ONNX opset, >= 17 (default: ONNX.OPSET)")
    parser.add_argument("--data-path", help="dataset root: also compare with PyTorch on its val/ images")
    parser.add_argument("--batch-size", type=int, help="batch of the validation loader (default: DATA.BATCH_SIZE)")
    parser.add_argument("--eval", action="store_true", help="the original's flag: compare on --data-path (required then)")
    parser.add_argument("--output-json", help="write the export report here")
    return parser.parse_args(argv)


def build_model_with_weights(config: CfgNode, resume: str) -> nn.Module:
    """The config's model with the weights of ``resume`` (random weights, with a warning, when empty)."""
    from models import build_model, load_weights

    model = build_model(config)
    if resume:
        load_weights(model, resume)
    else:
        _LOG.warning("no --resume given: exporting random weights")
    return model.eval()


def check_row(name: str, result: dict) -> dict:
    """One line of the check table (differences in scientific notation, accuracies in percent)."""
    row = {"images": f"{name} ({result['images']})", "max abs diff": f"{result['max_abs']:.2e}",
           "relative": f"{result['relative']:.2e}", "top-1 agreement %": f"{100 * result['top1_agreement']:.2f}"}
    for key in ("torch_acc1", "onnx_acc1"):
        row[key.replace("_acc1", " Acc@1")] = f"{result[key]:.2f}" if key in result else "-"
    return row


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    create_logger()
    check_args(args, {"batch_size_onnx": 1, "batch_size": 1, "opset": 17})
    if args.eval and not args.data_path:
        raise UserError("--eval compares on the validation images: pass --data-path (the folder holding val/).")
    # as in swin_quant_flow.py and the original: an explicit --batch-size-onnx asks for that fixed batch
    dynamic_batch = args.dynamic_batch
    if dynamic_batch is None and args.batch_size_onnx is not None:
        dynamic_batch = False
    config = get_config(args.cfg, args.opts, MODEL__RESUME=args.resume, DATA__DATA_PATH=args.data_path,
                        DATA__BATCH_SIZE=args.batch_size, ONNX__BATCH_SIZE=args.batch_size_onnx,
                        ONNX__DYNAMIC_BATCH=dynamic_batch, ONNX__OPSET=args.opset)
    check_config(config, args.cfg)
    if config.MODEL.RESUME:
        require_checkpoint(config.MODEL.RESUME, "checkpoint", "pass the .pth file to export")
    if args.data_path:
        require_dataset(args.data_path, ["val"])
    if args.precision == "fp16":
        require_modelopt_onnx("export.py --precision fp16 (FP16 conversion with ModelOpt AutoCast)")
    path = args.output
    if path is None:
        path = default_onnx_path(config, args.precision)
        os.makedirs(os.path.dirname(path), exist_ok=True)
    require_parent_dir(path)
    model = build_model_with_weights(config, config.MODEL.RESUME)
    val_loader = None
    if args.data_path:
        from data import build_loader

        val_loader = build_loader(config, "val", shuffle=False)
    try:
        report = export_checked(model, path, config_input_shape(config), batch_size=config.ONNX.BATCH_SIZE,
                                dynamic_batch=config.ONNX.DYNAMIC_BATCH, opset=config.ONNX.OPSET,
                                precision=args.precision, keep_fp32_ops=config.ONNX.FP16_KEEP_FP32_OPS,
                                val_loader=val_loader)
    except ExportCheckError as err:
        print(f"error: {err} The file was not written.", file=sys.stderr)
        return 1
    print(format_table([{"op": op, "count": n} for op, n in report["ops"].items()]))
    print(f"\n{path}: {report['nodes']} nodes, {report['shape_ops']} Shape/Gather/Range, "
          f"input {report['io'][INPUT_NAME]}; " + ", ".join(f"{k} {v:.1f} s" for k, v in report["seconds"].items()))
    print(format_table([check_row(name, result) for name, result in report["checks"].items()]))
    if args.output_json:
        write_json(args.output_json, report)
    return 0


if __name__ == "__main__":
    run_main(main)
