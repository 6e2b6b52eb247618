"""INT8 (or FP8) quantization of a Swin model with NVIDIA ModelOpt: calibrate, fine-tune, export Q/DQ ONNX.

    python swin_quant_flow.py --cfg configs/swin_tiny_patch4_window7_224.yaml \\
        --resume swin_tiny_patch4_window7_224.pth --data-path /data/imagenet --batch-size 32 --quantize \\
        [--calib-method max|histogram|percentile] [--num-calib-batch 10] [--num-finetune-epochs 1] \\
        [--batch-size-onnx 1 | --dynamic-batch] [--output weights] [--ptq-only] [--format int8|fp8] \\
        [--high-precision fp16|bf16|fp32]
    torchrun --nproc_per_node 8 swin_quant_flow.py ... --quantize
    python swin_quant_flow.py --cfg ... --resume weights/swin_tiny_patch4_window7_224_int8_qat.pth --data-path ...

With ``--quantize``, ``--resume`` is a plain (FP32) checkpoint: the model is
evaluated, wrapped with fake quantizers (placement: quant/placement.py),
calibrated on training images, evaluated (PTQ), fine-tuned for
``--num-finetune-epochs`` at a small cosine learning rate (QAT, DDP under
torchrun), evaluated again, saved, and exported as a Q/DQ ONNX file: the
FP16 graph of export.py plus Q/DQ pairs (quant/export.py).
Without ``--quantize``, ``--resume`` is a quantized checkpoint written by this
script: unfinished fine-tuning continues from its last epoch, then the model
is evaluated and exported again.

Files in ``--output`` (default ``weights/``): ``<MODEL.NAME>_<format>_ptq.pth``
(calibrated), ``<MODEL.NAME>_<format>_qat.pth`` (fine-tuned, rewritten each
epoch) and ``<MODEL.NAME>_<format>.onnx`` (Q/DQ graph).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from yacs.config import CfgNode

from config import get_config
from data import build_loader
from distributed import barrier, cleanup, init_distributed
from evaluation import evaluate_model
from models import build_model, load_weights
from onnx_tools.export import PRECISIONS, check_precision
from onnx_tools.verify import ExportCheckError
from quant.calibrate import amax_digests_over_ranks, build_calib_loader, calibrate
from quant.checkpoint import is_quant_checkpoint, load_quant_checkpoint, save_quant_checkpoint
from quant.export import default_paths, export_quantized
from quant.finetune import QATFineTuner
from quant.placement import format_placement
from quant.quantize import CALIB_METHODS, FORMATS, check_quant_options
from utils import UserError, create_logger, format_table, load_checkpoint_file, run_main, write_json
from validation import check_args, check_config, require_checkpoint, require_dataset, require_modelopt_onnx


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cfg", required=True, metavar="FILE", help="model config under configs/")
    p.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE", help="override config keys")
    p.add_argument("--resume", help="plain checkpoint (with --quantize) or a quantized one to resume")
    p.add_argument("--data-path", help="ImageNet-style root with train/ (calibration, QAT) and val/")
    p.add_argument("--batch-size", type=int, help="images per process and step (calibration, QAT, evaluation)")
    p.add_argument("--quantize", action="store_true", help="calibrate and fine-tune the plain checkpoint --resume")
    p.add_argument("--format", choices=FORMATS, help="int8 (default) or fp8 (E4M3, Hopper and later)")
    p.add_argument("--high-precision", choices=PRECISIONS,
                   help="type of the exported graph between its Q/DQ pairs (default QUANT.HIGH_PRECISION: fp16)")
    p.add_argument("--calib-method", choices=CALIB_METHODS, help="activation ranges (default QUANT.CALIB_METHOD)")
    p.add_argument("--num-calib-batch", type=int, help="calibration batches (default QUANT.NUM_CALIB_BATCH)")
    p.add_argument("--num-finetune-epochs", type=int, help="QAT epochs (default QUANT.FINETUNE_EPOCHS)")
    p.add_argument("--ptq-only", action="store_true", help="calibrate only, no fine-tuning")
    p.add_argument("--batch-size-onnx", type=int, help="fixed batch of the exported graph (default ONNX.BATCH_SIZE)")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="symbolic batch in the exported graph (default ONNX.DYNAMIC_BATCH)")
    p.add_argument("--output", default="weights", metavar="DIR", help="folder for checkpoints and the ONNX file")
    p.add_argument("--skip-fp32-eval", action="store_true", help="do not evaluate the plain model first")
    p.add_argument("--check-onnx", action="store_true",
                   help="compare the ONNX file with PyTorch over all of val/ in ONNX Runtime (CPU; slow on ImageNet)")
    p.add_argument("--show-placement", action="store_true", help="print the quantizer placement table and exit")
    p.add_argument("--disable-amp", "--disable_amp", dest="amp", action="store_false", default=None,
                   help="fine-tune in FP32 on GPU (default: FP16 autocast)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto", help="where to run")
    p.add_argument("--seed", type=int, help="random seed (also picks the calibration images)")
    p.add_argument("--output-json", metavar="PATH", help="write all metrics and the export report here")
    p.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def make_config(args: argparse.Namespace) -> CfgNode:
    # an explicit --batch-size-onnx asks for that fixed batch, unless --dynamic-batch is given too
    dynamic_batch = True if args.dynamic_batch else (False if args.batch_size_onnx is not None else None)
    return get_config(args.cfg, args.opts, DATA__BATCH_SIZE=args.batch_size, DATA__DATA_PATH=args.data_path,
                      MODEL__RESUME=args.resume, QUANT__FORMAT=args.format, QUANT__CALIB_METHOD=args.calib_method,
                      QUANT__HIGH_PRECISION=args.high_precision,
                      QUANT__NUM_CALIB_BATCH=args.num_calib_batch,
                      QUANT__FINETUNE_EPOCHS=0 if args.ptq_only else args.num_finetune_epochs,
                      ONNX__BATCH_SIZE=args.batch_size_onnx, ONNX__DYNAMIC_BATCH=dynamic_batch,
                      AMP_ENABLE=args.amp, SEED=args.seed)


def check_inputs(args: argparse.Namespace, config: CfgNode) -> None:
    """Every number and input file of the run, before any work (each mistake is one :class:`UserError`)."""
    check_args(args, {"batch_size": 1, "num_calib_batch": 1, "num_finetune_epochs": 0, "batch_size_onnx": 1})
    check_config(config, args.cfg)
    if not config.MODEL.RESUME:
        raise UserError("no --resume given: pass a trained checkpoint (with --quantize) or a *_qat.pth / *_ptq.pth "
                        "to resume.")
    require_checkpoint(config.MODEL.RESUME, "checkpoint",
                       "pass a trained .pth (with --quantize) or a *_qat.pth / *_ptq.pth")
    if not config.DATA.DATA_PATH:
        raise UserError("no --data-path given: pass the folder that holds train/ and val/ (e.g. datasets/digits).")
    require_dataset(config.DATA.DATA_PATH, ["train", "val"])
    check_precision(config.QUANT.HIGH_PRECISION)
    if config.QUANT.HIGH_PRECISION != "fp32":  # found at export, it would cost the whole calibration and QAT
        require_modelopt_onnx(f"the {config.QUANT.HIGH_PRECISION.upper()}-based Q/DQ export (ModelOpt AutoCast)")


def evaluate_stage(stage: str, model: nn.Module, loader, device: torch.device, logger: logging.Logger) -> Dict[str, Any]:
    """FP32 evaluation (fake quantization is simulated in FP32, as the Q/DQ graph computes), summed over ranks."""
    metrics = evaluate_model(model, loader, device, amp=False, desc=stage, over_ranks=True)
    logger.info("%s: Acc@1 %.3f Acc@5 %.3f loss %.4f on %d images", stage, metrics["acc1"], metrics["acc5"],
                metrics["loss"], metrics["images"])
    return {"stage": stage, **metrics}


def calibrated_model(config: CfgNode, device: torch.device, val_loader, skip_fp32: bool,
                     logger: logging.Logger) -> Tuple[nn.Module, List[Dict[str, Any]]]:
    """Plain checkpoint → calibrated model; returns (model, metric rows)."""
    resume = config.MODEL.RESUME
    if is_quant_checkpoint(load_checkpoint_file(resume)):
        raise UserError(f"checkpoint {resume} is already quantized: drop --quantize to resume, evaluate or export it.")
    calib_loader = build_calib_loader(config, config.QUANT.NUM_CALIB_BATCH, config.DATA.BATCH_SIZE)
    model = build_model(config)
    load_weights(model, resume)
    model.to(device)
    rows = [] if skip_fp32 else [evaluate_stage("fp32", model, val_loader, device, logger)]
    calibrate(model, calib_loader, config, device)
    rows.append(evaluate_stage("ptq", model, val_loader, device, logger))
    return model, rows


def restored_model(config: CfgNode, device: torch.device, logger: logging.Logger) -> Tuple[nn.Module, Dict[str, Any]]:
    """Quantized checkpoint → model on ``device``; returns (model, checkpoint dict)."""
    model = build_model(config)
    checkpoint = load_quant_checkpoint(model, config.MODEL.RESUME)
    model.to(device)
    logger.info("restored %s quantized model from %s (QAT epochs done: %d)", checkpoint["quant"]["format"],
                config.MODEL.RESUME, int(checkpoint["epoch"]) + 1)
    return model, checkpoint


def finetune(model: nn.Module, config: CfgNode, device: torch.device, rank: int, world_size: int,
             start_epoch: int, trainer_state: Optional[Dict[str, Any]], save: Callable[..., Any]) -> Dict[str, Any]:
    """QAT epochs ``start_epoch .. QUANT.FINETUNE_EPOCHS-1`` (DDP over ranks), saving the checkpoint after each.

    Returns:
        (the final optimizer/scheduler/scaler state, for the last checkpoint; per-epoch training stats).
    """
    runner = model
    if world_size > 1:
        runner = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    tuner = QATFineTuner(model, runner, build_loader(config, "train"), config, device, world_size,
                         config.QUANT.FINETUNE_EPOCHS)
    if trainer_state is not None:
        tuner.load_state_dict(trainer_state)

    def save_epoch(epoch: int, stats: Dict[str, Any]) -> None:
        if rank == 0:
            save(epoch, tuner.state_dict(), {"train": stats})
        barrier()

    history = tuner.run(start_epoch, save_epoch)
    return tuner.state_dict(), history


def run_flow(config: CfgNode, args: argparse.Namespace, device: torch.device, rank: int, world_size: int,
             logger: logging.Logger) -> Dict[str, Any]:
    """The whole flow (see the module docstring); returns the metrics rows, files and export report."""
    if not config.MODEL.RESUME:
        raise UserError("no --resume given: pass a trained checkpoint (with --quantize) or a *_qat.pth / *_ptq.pth to resume.")
    if not config.DATA.DATA_PATH:
        raise UserError("no --data-path given: pass the folder that holds train/ and val/ (e.g. datasets/digits).")
    check_quant_options(config.QUANT.FORMAT, config.QUANT.CALIB_METHOD)
    os.makedirs(args.output, exist_ok=True)
    val_loader = build_loader(config, "val")
    result: Dict[str, Any] = {"world_size": world_size}
    if args.quantize:
        model, rows = calibrated_model(config, device, val_loader, args.skip_fp32_eval, logger)
        result["calib_amax_digests"] = amax_digests_over_ranks(model)
        info = {"format": config.QUANT.FORMAT, "calib_method": config.QUANT.CALIB_METHOD}
        start_epoch, trainer_state = 0, None
    else:
        model, checkpoint = restored_model(config, device, logger)
        rows = []
        info = {k: v for k, v in checkpoint["quant"].items() if k != "sites"}
        start_epoch = int(checkpoint["epoch"]) + 1
        trainer_state = checkpoint if "optimizer" in checkpoint else None
    fmt = info["format"]
    paths = default_paths(config, fmt, args.output)

    def save(path: str, epoch: int, trainer: Optional[Dict[str, Any]], metrics: Dict[str, Any]) -> None:
        save_quant_checkpoint(path, model, info, epoch, trainer, metrics, config.dump())

    if args.quantize and rank == 0:
        save(paths["ptq"], -1, None, rows[-1])
    if start_epoch < config.QUANT.FINETUNE_EPOCHS:
        trainer_state, history = finetune(model, config, device, rank, world_size, start_epoch, trainer_state,
                                          lambda epoch, trainer, metrics: save(paths["qat"], epoch, trainer, metrics))
        result["qat_train"] = history
        rows.append(evaluate_stage("qat", model, val_loader, device, logger))
        if rank == 0:
            save(paths["qat"], config.QUANT.FINETUNE_EPOCHS - 1, trainer_state, rows[-1])
    elif not args.quantize:
        rows.append(evaluate_stage("restored", model, val_loader, device, logger))
    result.update(format=fmt, rows=rows, files=paths)
    if rank == 0:
        result["onnx"] = export_stage(model, paths["onnx"], config, fmt, args.check_onnx, rows)
    return result


def export_stage(model: nn.Module, path: str, config: CfgNode, fmt: str, check_on_val: bool,
                 rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Export the Q/DQ file; with ``check_on_val`` add the ONNX Runtime accuracy as an ``onnxrt`` row.

    Only rank 0 exports, so the check reads all of val/ itself (no shard, no collective).
    """
    check_loader = build_loader(config, "val", shuffle=False, shard=False) if check_on_val else None
    report = export_quantized(model, path, config, fmt, config.ONNX.BATCH_SIZE, config.ONNX.DYNAMIC_BATCH, check_loader)
    if "val" in report["checks"]:
        val = report["checks"]["val"]
        rows.append({"stage": "onnxrt", "acc1": val["onnx_acc1"], "acc5": val["onnx_acc5"], "images": val["images"],
                     "top1_agreement": 100.0 * val["top1_agreement"]})
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    config = make_config(args)
    if args.show_placement:
        print(format_placement(config.QUANT.DISABLED))
        return 0
    check_inputs(args, config)
    device, rank, world_size = init_distributed(args.device)
    try:
        logger = create_logger("swin", rank=rank)
        logger.info("%s: quantization flow on %s, %d process(es)", config.MODEL.NAME, device, world_size)
        logger.info("quantizer placement (QUANT.DISABLED=%s):\n%s", list(config.QUANT.DISABLED),
                    format_placement(config.QUANT.DISABLED))
        result = run_flow(config, args, device, rank, world_size, logger)
    except ExportCheckError as err:
        print(f"error: {err} The ONNX file was not written; the quantized checkpoints in {args.output} are kept "
              "(swin_quant_flow.py --resume CHECKPOINT exports again).", file=sys.stderr)
        return 1
    finally:
        cleanup()
    if rank == 0:
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
