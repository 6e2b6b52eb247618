"""INT8 (or FP8) quantization of a Swin model with NVIDIA ModelOpt: calibrate, fine-tune, export Q/DQ ONNX.

    python swin_quant_flow.py --cfg configs/swin_tiny_patch4_window7_224.yaml \\
        --resume swin_tiny_patch4_window7_224.pth --data-path /data/imagenet --batch-size 32 --quantize \\
        [--calib-method max|histogram|percentile] [--num-calib-batch 10] [--num-finetune-epochs 1] \\
        [--batch-size-onnx 1 | --dynamic-batch] [--output weights] [--ptq-only] [--format int8|fp8] \\
        [--high-precision fp16|bf16|fp32]
    torchrun --nproc_per_node 8 swin_quant_flow.py ... --quantize
    python swin_quant_flow.py --cfg ... --resume weights/swin_tiny_patch4_window7_224_int8_qat.pth --data-path ...

With ``--quantize``, ``--resume`` is a plain (FP32) checkpoint: the model is
evaluated, wrapped with fake quantizers (placement: swin_trt/quant/placement.py),
calibrated on training images, evaluated (PTQ), fine-tuned for
``--num-finetune-epochs`` at a small cosine learning rate (QAT, DDP under
torchrun), evaluated again, saved, and exported as a Q/DQ ONNX file: the
FP16 graph of export.py plus Q/DQ pairs (swin_trt/quant/export.py).
Without ``--quantize``, ``--resume`` is a quantized checkpoint written by this
script: unfinished fine-tuning continues from its last epoch, then the model
is evaluated and exported again.

Files in ``--output`` (default ``weights/``): ``<MODEL.NAME>_<format>_ptq.pth``
(calibrated), ``<MODEL.NAME>_<format>_qat.pth`` (fine-tuned, rewritten each
epoch) and ``<MODEL.NAME>_<format>.onnx`` (Q/DQ graph).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from swin_trt import cli
from swin_trt.errors import run_main
from swin_trt.files import write_json
from swin_trt.onnx_tools.export import PRECISIONS
from swin_trt.onnx_tools.verify import ExportCheckError
from swin_trt.out_of_memory import out_of_memory_guard
from swin_trt.quant.flow import FlowOptions, check_inputs, make_config, run_quant_session
from swin_trt.quant.auto import format_rows
from swin_trt.quant.placement import format_placement, placement_table
from swin_trt.quant.sensitivity import BY, sensitivity_rows
from swin_trt.quant.quantize import CALIB_METHODS, FORMATS
from swin_trt.tables import format_table


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_config(p, required=False, what="model config under configs/ (optional when --resume is a model folder or "
                   "hf:ORG/NAME)")
    p.add_argument("--resume", help="plain weights (with --quantize: " + cli.WEIGHTS_HELP + ") or a quantized "
                   "checkpoint to resume")
    cli.add_data(p, holds="train/ (calibration, QAT) and val/", batch="images per process and step")
    p.add_argument("--quantize", action="store_true", help="calibrate and fine-tune the plain checkpoint --resume")
    p.add_argument("--format", choices=FORMATS, help="int8 (default), fp8 (E4M3, Hopper and later), mxfp8 or nvfp4 "
                   "(Blackwell; quantized on an NVIDIA GPU) or auto (a format per module by ModelOpt's AutoQuantize "
                   "within --effective-bits)")
    p.add_argument("--effective-bits", type=float, help="auto: average weight bits, 4..16 (default QUANT.EFFECTIVE_BITS; "
                   "NVFP4 counts 4.5 with its scales, as ModelOpt counts it)")
    p.add_argument("--auto-formats", nargs="+", choices=[f for f in FORMATS if f != "auto"],
                   help="auto: the formats searched per Linear (default QUANT.AUTO_FORMATS: int8 fp8)")
    p.add_argument("--high-precision", choices=PRECISIONS,
                   help="type of the exported graph between its Q/DQ pairs (default QUANT.HIGH_PRECISION: fp16)")
    p.add_argument("--calib-method", choices=CALIB_METHODS, help="activation ranges (default QUANT.CALIB_METHOD)")
    p.add_argument("--num-calib-batch", type=int, help="calibration batches (default QUANT.NUM_CALIB_BATCH)")
    p.add_argument("--num-finetune-epochs", type=int, help="QAT epochs (default QUANT.FINETUNE_EPOCHS)")
    p.add_argument("--ptq-only", action="store_true", help="calibrate only, no fine-tuning")
    cli.add_onnx_batch(p)
    p.add_argument("--output", default="weights", metavar="DIR", help="folder for checkpoints and the ONNX file")
    p.add_argument("--skip-fp32-eval", action="store_true", help="do not evaluate the plain model first")
    p.add_argument("--check-onnx", action="store_true",
                   help="compare the ONNX file with PyTorch over all of val/ in ONNX Runtime (CPU; slow on ImageNet)")
    p.add_argument("--show-placement", action="store_true", help="print the quantizer placement table and exit")
    p.add_argument("--sensitivity", action="store_true",
                   help="calibrate --resume (a plain checkpoint) once and measure each site alone and every site but "
                        "one on val/ (no QAT, no export)")
    p.add_argument("--calibrated", metavar="PTQ.pth",
                   help="with --sensitivity: reuse this calibrated checkpoint (the *_ptq.pth of --quantize) when it was "
                        "made from the same weights with the same calibration settings, instead of calibrating again")
    p.add_argument("--sensitivity-by", choices=BY, default="row",
                   help="sites: placement-table rows (default) or quantized modules (layers.2.blocks.3.mlp.fc1, ...)")
    p.add_argument("--disable-amp", "--disable_amp", dest="amp", action="store_false", default=None,
                   help="fine-tune in FP32 on GPU (default: FP16 autocast)")
    cli.add_device(p)
    p.add_argument("--seed", type=int, help="random seed (also picks the calibration images)")
    cli.add_output_json(p, "all metrics and the export report")
    cli.add_launcher(p)
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    config = make_config(args)
    if args.show_placement:
        print(format_placement(config.QUANT.DISABLED, placement_table(config.MODEL.TYPE), config.QUANT.FORMAT))
        return 0
    check_inputs(args, config)
    options = FlowOptions(args.quantize, args.output, args.skip_fp32_eval, args.check_onnx,
                          args.sensitivity_by if args.sensitivity else None, args.calibrated)
    try:
        with out_of_memory_guard(config.DATA.BATCH_SIZE):
            result, rank = run_quant_session(config, options, args.device)
    except ExportCheckError as err:
        print(f"error: {err} The ONNX file was not written; the quantized checkpoints in {args.output} are kept "
              "(swin_quant_flow.py --resume CHECKPOINT exports again).", file=sys.stderr)
        return 1
    if rank == 0 and args.sensitivity:
        print(format_table(sensitivity_rows(result)))
        if args.output_json:
            write_json(args.output_json, result)
        return 0
    if rank == 0:
        if "module_formats" in result:
            print(format_table(format_rows(result["module_formats"])))
        columns = ["stage", "acc1", "acc5", "loss", "images"]
        print(format_table(result["rows"], columns + ["top1_agreement"] * ("onnxrt" in [r["stage"] for r in result["rows"]])))
        for kind, path in result["files"].items():
            if os.path.isfile(path):
                print(f"{kind}: {path}")
        if args.output_json:
            write_json(args.output_json, result)
    return 0


if __name__ == "__main__":
    run_main(main)
