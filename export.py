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
import sys
from typing import Optional, Sequence

from swin_trt import cli
from swin_trt.errors import run_main
from swin_trt.files import write_json
from swin_trt.logs import create_logger
from swin_trt.onnx_tools.export import INPUT_NAME, PLAIN_PRECISIONS
from swin_trt.onnx_tools.export_flow import check_inputs, export_config_model, make_config, output_path
from swin_trt.onnx_tools.verify import ExportCheckError, check_table_row
from swin_trt.out_of_memory import out_of_memory_guard
from swin_trt.tables import format_table


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_config(parser, required=False, what="model config under configs/ (optional when --resume is a model folder "
                   "or hf:ORG/NAME)")
    parser.add_argument("--resume", help="weights to export (default: MODEL.RESUME; none: random weights): "
                        + cli.WEIGHTS_HELP)
    cli.add_onnx_batch(parser)
    parser.add_argument("--precision", choices=PLAIN_PRECISIONS, default="fp32", help="fp16: mixed precision, FP32 I/O")
    parser.add_argument("--output", help="the .onnx file (default: weights/<MODEL.NAME>[_fp16].onnx)")
    parser.add_argument("--opset", type=int, help="ONNX opset, >= 17 (default: ONNX.OPSET)")
    cli.add_data(parser, holds="val/: the export is then also compared with PyTorch on its images",
                 batch="batch of the validation loader")
    cli.add_original_eval(parser, "the original's flag: compare on --data-path (required then)")
    cli.add_output_json(parser, "the export report")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    config = make_config(args)
    check_inputs(args, config)
    path = output_path(config, args.precision, args.output)
    create_logger()
    try:
        with out_of_memory_guard(config.DATA.BATCH_SIZE):
            report = export_config_model(config, path, args.precision, check_on_val=bool(args.data_path))
    except ExportCheckError as err:
        print(f"error: {err} The file was not written.", file=sys.stderr)
        return 1
    print(format_table([{"op": op, "count": n} for op, n in report["ops"].items()]))
    print(f"\n{path}: {report['nodes']} nodes, {report['shape_ops']} Shape/Gather/Range, "
          f"input {report['io'][INPUT_NAME]}; " + ", ".join(f"{k} {v:.1f} s" for k, v in report["seconds"].items()))
    print(format_table([check_table_row(name, result) for name, result in report["checks"].items()]))
    if args.output_json:
        write_json(args.output_json, report)
    return 0


if __name__ == "__main__":
    run_main(main)
