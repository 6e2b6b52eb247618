"""The quantization flow of swin_quant_flow.py: calibrate (PTQ) or restore, fine-tune (QAT, DDP under torchrun), evaluate, save, export the Q/DQ graph."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from timm.utils import random_seed
from yacs.config import CfgNode

from swin_trt import cli
from swin_trt.config import config_beside, save_config
from swin_trt.data import build_loader
from swin_trt.data.build import build_sample_loader
from swin_trt.distributed import barrier, cleanup, init_distributed
from swin_trt.errors import UserError
from swin_trt.files import make_folder, require_room
from swin_trt.evaluation import evaluate_model
from swin_trt.logs import create_logger
from swin_trt.models import build_model, load_weights
from swin_trt.models.weight_source import read_checkpoint, resolve, weights_config
from swin_trt.onnx_tools.export import check_precision
from swin_trt.quant.auto import format_rows, search_formats
from swin_trt.quant.calibrate import amax_digests_over_ranks, build_calib_loader, calibrate
from swin_trt.quant.checkpoint import is_quant_checkpoint, load_quant_checkpoint, save_quant_checkpoint
from swin_trt.quant.export import export_quantized
from swin_trt.quant.paths import default_paths
from swin_trt.quant.export_check import check_batches
from swin_trt.quant.finetune import QATFineTuner
from swin_trt.quant.placement import enabled_sites, format_placement, placement_table, site_format
from swin_trt.quant.sensitivity import active_quantizers, sensitivity, sites_by_layer, sites_by_row
from swin_trt.quant.quantize import check_quant_options, quantized_formats, require_cuda_for
from swin_trt.tables import format_table
from swin_trt.training.checkpoints import checkpoint_bytes
from swin_trt.validation import check_args, check_config, require_dataset, require_modelopt_onnx


def make_config(args: argparse.Namespace) -> CfgNode:
    """The config of a swin_quant_flow.py run: YAML (or the weights folder's own files), ``--opts``, then the flags
    (an explicit --batch-size-onnx asks for that fixed batch, unless --dynamic-batch is given too)."""
    return weights_config(args.cfg, args.opts, args.resume, DATA__BATCH_SIZE=args.batch_size,
                          DATA__DATA_PATH=args.data_path, DATA__NUM_WORKERS=args.num_workers,
                          MODEL__RESUME=args.resume, QUANT__FORMAT=args.format, QUANT__CALIB_METHOD=args.calib_method,
                          QUANT__HIGH_PRECISION=args.high_precision, QUANT__EFFECTIVE_BITS=args.effective_bits,
                          QUANT__AUTO_FORMATS=args.auto_formats,
                          QUANT__NUM_CALIB_BATCH=args.num_calib_batch,
                          QUANT__FINETUNE_EPOCHS=0 if args.ptq_only else args.num_finetune_epochs,
                          AMP_ENABLE=args.amp, SEED=args.seed, **cli.onnx_batch_overrides(args))


def check_inputs(args: argparse.Namespace, config: CfgNode) -> None:
    """Every number and input file of the run, before any work (each mistake is one :class:`UserError`)."""
    check_args(args, {"batch_size": 1, "num_workers": 0, "num_calib_batch": 1, "num_finetune_epochs": 0, "batch_size_onnx": 1,
                      "effective_bits": (4, 16)})
    check_config(config, args.cfg)
    if not config.MODEL.RESUME:
        raise UserError("no --resume given: pass a trained checkpoint (with --quantize) or a *_qat.pth / *_ptq.pth "
                        "to resume.")
    resolve(config.MODEL.RESUME)
    if not config.DATA.DATA_PATH:
        raise UserError("no --data-path given: pass the folder that holds train/ and val/ (e.g. datasets/digits).")
    require_dataset(config.DATA.DATA_PATH, ["train", "val"])
    placement_table(config.MODEL.TYPE)
    check_quant_options(config.QUANT.FORMAT, config.QUANT.CALIB_METHOD, list(config.QUANT.AUTO_FORMATS))
    if args.device == "cpu":
        require_cuda_for(quantized_formats(config), device_is_cpu=True)
    else:
        require_cuda_for(quantized_formats(config))
    check_precision(config.QUANT.HIGH_PRECISION)
    if config.QUANT.HIGH_PRECISION != "fp32":  # found at export, it would cost the whole calibration and QAT
        require_modelopt_onnx(f"the {config.QUANT.HIGH_PRECISION.upper()}-based Q/DQ export (ModelOpt AutoCast)")
    if not args.sensitivity:  # calibration and QAT must not end at a checkpoint the disk cannot take
        qat = config.QUANT.FINETUNE_EPOCHS > 0
        first = default_paths(config, config.QUANT.FORMAT, args.output)["qat" if qat else "ptq"]
        require_room(first, checkpoint_bytes(config, with_optimizer=qat))


def evaluate_stage(stage: str, model: nn.Module, loader, device: torch.device, logger: logging.Logger) -> Dict[str, Any]:
    """FP32 evaluation (fake quantization is simulated in FP32, as the Q/DQ graph computes), summed over ranks."""
    metrics = evaluate_model(model, loader, device, amp=False, desc=stage, over_ranks=True)
    logger.info("%s: Acc@1 %.3f Acc@5 %.3f loss %.4f on %d images", stage, metrics["acc1"], metrics["acc5"],
                metrics["loss"], metrics["images"])
    return {"stage": stage, **metrics}


def calibrated_model(config: CfgNode, device: torch.device, val_loader, skip_fp32: bool,
                     logger: logging.Logger) -> Tuple[nn.Module, List[Dict[str, Any]], Optional[Dict[str, str]]]:
    """Plain checkpoint → calibrated model; returns (model, metric rows, the formats AutoQuantize chose or None)."""
    resume = config.MODEL.RESUME
    if is_quant_checkpoint(read_checkpoint(resume)):
        raise UserError(f"checkpoint {resume} is already quantized: drop --quantize to resume, evaluate or export it.")
    calib_loader = build_calib_loader(config, config.QUANT.NUM_CALIB_BATCH, config.DATA.BATCH_SIZE)
    model = build_model(config)
    load_weights(model, resume)
    model.to(device)
    rows = [] if skip_fp32 else [evaluate_stage("fp32", model, val_loader, device, logger)]
    formats = None
    if config.QUANT.FORMAT == "auto":
        formats = search_formats(model, config, calib_loader, config.QUANT.EFFECTIVE_BITS, device)
        logger.info("AutoQuantize chose, per module:\n%s", format_table(format_rows(formats)))
    calibrate(model, calib_loader, config, device, formats)
    if val_loader is not None:
        rows.append(evaluate_stage("ptq", model, val_loader, device, logger))
    return model, rows, formats


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


CACHE_BYTES = 2 << 30  # a validation set this small (as FP32 tensors) is held in memory for the sensitivity sweep


@dataclasses.dataclass(frozen=True)
class FlowOptions:
    """What swin_quant_flow.py's flags ask of :func:`run_flow`.

    Attributes:
        quantize: ``--resume`` is a plain checkpoint to calibrate (else a quantized one to resume).
        output: folder of the checkpoints and the ONNX file.
        skip_fp32_eval: do not evaluate the plain model first.
        check_onnx: compare the ONNX file with PyTorch over all of val/ (rank 0).
        sensitivity: ``row`` or ``layer``: measure each site's harm instead (:func:`run_sensitivity`), no export.
        calibrated: with ``sensitivity``, a ``*_ptq.pth`` of ``--quantize`` to reuse (:func:`reused_calibration`).
    """

    quantize: bool
    output: str
    skip_fp32_eval: bool = False
    check_onnx: bool = False
    sensitivity: Optional[str] = None
    calibrated: Optional[str] = None


def run_flow(config: CfgNode, options: FlowOptions, device: torch.device, rank: int, world_size: int,
             logger: logging.Logger) -> Dict[str, Any]:
    """The whole flow (see the module docstring); returns the metrics rows, files and export report."""
    if not config.MODEL.RESUME:
        raise UserError("no --resume given: pass a trained checkpoint (with --quantize) or a *_qat.pth / *_ptq.pth to resume.")
    if not config.DATA.DATA_PATH:
        raise UserError("no --data-path given: pass the folder that holds train/ and val/ (e.g. datasets/digits).")
    check_quant_options(config.QUANT.FORMAT, config.QUANT.CALIB_METHOD)
    make_folder(options.output)
    val_loader = build_loader(config, "val")
    result: Dict[str, Any] = {"world_size": world_size}
    if options.quantize:
        model, rows, formats = calibrated_model(config, device, val_loader, options.skip_fp32_eval, logger)
        result["calib_amax_digests"] = amax_digests_over_ranks(model)
        info = {"format": config.QUANT.FORMAT, "calib_method": config.QUANT.CALIB_METHOD,
                "smooth_alpha": config.QUANT.SMOOTH_ALPHA, "keep_high_precision": list(config.QUANT.KEEP_HIGH_PRECISION),
                "source": resolve(config.MODEL.RESUME).describe(),  # where the weights came from
                "calibration": calibration_settings(config),  # what the sensitivity sweep checks before reusing it
                # the format each placement row took (the block formats leave the non-GEMM rows in FP8)
                "placement": {site.name: site_format(site, config.QUANT.FORMAT) for site in
                              enabled_sites(config.QUANT.DISABLED, placement_table(config.MODEL.TYPE))}}
        if formats is not None:
            info["module_formats"] = formats
        start_epoch, trainer_state = 0, None
    else:
        model, checkpoint = restored_model(config, device, logger)
        rows = []
        info = {k: v for k, v in checkpoint["quant"].items() if k != "sites"}
        start_epoch = int(checkpoint["epoch"]) + 1
        trainer_state = checkpoint if "optimizer" in checkpoint else None
    fmt = info["format"]
    paths = default_paths(config, fmt, options.output)

    def save(path: str, epoch: int, trainer: Optional[Dict[str, Any]], metrics: Dict[str, Any]) -> None:
        save_quant_checkpoint(path, model, info, epoch, trainer, metrics, config.dump())

    if options.quantize and rank == 0:
        save(paths["ptq"], -1, None, rows[-1])
    if start_epoch < config.QUANT.FINETUNE_EPOCHS:
        trainer_state, history = finetune(model, config, device, rank, world_size, start_epoch, trainer_state,
                                          lambda epoch, trainer, metrics: save(paths["qat"], epoch, trainer, metrics))
        result["qat_train"] = history
        rows.append(evaluate_stage("qat", model, val_loader, device, logger))
        if rank == 0:
            save(paths["qat"], config.QUANT.FINETUNE_EPOCHS - 1, trainer_state, rows[-1])
    elif not options.quantize:
        rows.append(evaluate_stage("restored", model, val_loader, device, logger))
    result.update(format=fmt, rows=rows, files=paths)
    if "module_formats" in info:
        result["module_formats"] = info["module_formats"]
    if rank == 0:
        result["onnx"] = export_stage(model, paths["onnx"], config, fmt, options.check_onnx, rows)
    return result


def calibration_settings(config: CfgNode) -> Dict[str, Any]:
    """Everything a calibration depends on besides the weights: equal settings and weights give equal ranges."""
    q = config.QUANT
    return {"format": q.FORMAT, "calib_method": q.CALIB_METHOD, "percentile": q.PERCENTILE,
            "num_calib_batch": q.NUM_CALIB_BATCH, "batch_size": config.DATA.BATCH_SIZE, "seed": config.SEED,
            "train": os.path.abspath(os.path.join(config.DATA.DATA_PATH, "train")), "disabled": list(q.DISABLED),
            "keep_high_precision": list(q.KEEP_HIGH_PRECISION), "smooth_alpha": q.SMOOTH_ALPHA,
            "effective_bits": q.EFFECTIVE_BITS if q.FORMAT == "auto" else None}


def reused_calibration(config: CfgNode, path: Optional[str], device: torch.device,
                       logger: logging.Logger) -> Tuple[Optional[nn.Module], Optional[Dict[str, str]]]:
    """The calibrated model of ``path`` (a ``*_ptq.pth`` of ``--quantize``) when it was made from the same weights
    with the same :func:`calibration_settings`, and the formats AutoQuantize chose; ``(None, None)`` otherwise, with
    the reason logged (the caller then calibrates)."""
    if not path:
        return None, None
    if not os.path.isfile(path):
        logger.info("no calibrated checkpoint %s yet: calibrating here", path)
        return None, None
    checkpoint = read_checkpoint(path)
    info = checkpoint.get("quant") or {}
    weights = [w["sha256"] for w in resolve(config.MODEL.RESUME).describe()["weights"]]
    recorded = [w.get("sha256") for w in (info.get("source") or {}).get("weights", [])]
    settings, theirs = calibration_settings(config), info.get("calibration") or {}
    differs = [k for k, v in settings.items() if theirs.get(k) != v] + (["the weights"] if recorded != weights else [])
    if not is_quant_checkpoint(checkpoint) or int(checkpoint.get("epoch", 0)) != -1 or differs:
        why = f"it differs in {', '.join(differs)}" if differs else "it is not a calibrated-only (PTQ) checkpoint"
        logger.info("calibrating here rather than reusing %s: %s", path, why)
        return None, None
    model = build_model(config)
    load_quant_checkpoint(model, path)
    logger.info("reusing the calibration of %s (same weights, same calibration settings)", path)
    return model.to(device).eval(), info.get("module_formats")


def run_sensitivity(config: CfgNode, options: FlowOptions, device: torch.device, rank: int, world_size: int,
                    logger: logging.Logger) -> Dict[str, Any]:
    """Calibrate the plain checkpoint once, then evaluate each site alone and every site but one
    (quant/sensitivity.py); returns the result (``sensitivity`` rows sorted by harm, ``fp32``, ``all``)."""
    val_loader = build_sample_loader(config, "val", config.QUANT.SENSITIVITY_IMAGES)
    images = len(val_loader.dataset)
    if images * 4 * 3 * config.DATA.IMG_SIZE ** 2 <= CACHE_BYTES:  # decoded once, not 2 x sites + 2 times
        val_loader = check_batches(val_loader, images)
    model, formats = reused_calibration(config, options.calibrated, device, logger)
    reused = model is not None
    if not reused:
        model, _, formats = calibrated_model(config, device, None, True, logger)
    names = list(active_quantizers(model))
    sites = (sites_by_row(names, placement_table(config.MODEL.TYPE)) if options.sensitivity == "row"
             else sites_by_layer(names))
    logger.info("sensitivity of %d sites (by %s): %d evaluations of %d images each (QUANT.SENSITIVITY_IMAGES %d)",
                len(sites), options.sensitivity, 2 * len(sites) + 2, images, config.QUANT.SENSITIVITY_IMAGES)

    def evaluate(m: nn.Module, label: str) -> Dict[str, Any]:
        metrics = evaluate_model(m, val_loader, device, amp=False, desc=label, over_ranks=True)
        logger.info("%s: Acc@1 %.3f loss %.4f", label, metrics["acc1"], metrics["loss"])
        return metrics

    result = sensitivity(model, sites, evaluate)
    result.update(by=options.sensitivity, format=config.QUANT.FORMAT, calib_method=config.QUANT.CALIB_METHOD,
                  model=config.MODEL.NAME, world_size=world_size, images=images,
                  calibration=options.calibrated if reused else "calibrated here")
    if formats is not None:
        result["module_formats"] = formats
    return result


def export_stage(model: nn.Module, path: str, config: CfgNode, fmt: str, check_on_val: bool,
                 rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Export the Q/DQ file, checked on the calibration images (the same seeded pick as the calibration's); with
    ``check_on_val`` also on all of val/, whose ONNX Runtime accuracy becomes an ``onnxrt`` row.

    Only rank 0 exports, so the check reads all of val/ itself (no shard, no collective).
    """
    calibration_images = build_calib_loader(config, config.QUANT.NUM_CALIB_BATCH, config.DATA.BATCH_SIZE)
    val_loader = build_loader(config, "val", shuffle=False, shard=False) if check_on_val else None
    report = export_quantized(model, path, config, fmt, calibration_images, config.ONNX.BATCH_SIZE,
                              config.ONNX.DYNAMIC_BATCH, val_loader)
    save_config(config, config_beside(path))  # what a later step takes as --cfg
    if "val" in report["checks"]:
        val = report["checks"]["val"]
        rows.append({"stage": "onnxrt", "acc1": val["onnx_acc1"], "acc5": val["onnx_acc5"], "images": val["images"],
                     "top1_agreement": 100.0 * val["top1_agreement"]})
    return report


def run_quant_session(config: CfgNode, options: FlowOptions, device_arg: str = "auto") -> Tuple[Dict[str, Any], int]:
    """swin_quant_flow.py's job: :func:`run_flow` inside torch.distributed (under torchrun) with the run's log.

    Returns the flow's result and this process's rank.

    Raises:
        onnx_tools.verify.ExportCheckError: the exported graph failed its check (the checkpoints are kept).
    """
    device, rank, world_size = init_distributed(device_arg)
    try:
        logger = create_logger("swin", options.output, rank)  # its log file keeps the third-party notes at DEBUG
        logger.info("%s: quantization flow on %s, %d process(es)", config.MODEL.NAME, device, world_size)
        random_seed(config.SEED, rank)  # QAT's shuffle and augmentation, as main.py's training
        logger.info("quantizer placement (QUANT.DISABLED=%s):\n%s", list(config.QUANT.DISABLED),
                    format_placement(config.QUANT.DISABLED, placement_table(config.MODEL.TYPE), config.QUANT.FORMAT))
        work = run_sensitivity if options.sensitivity else run_flow
        return work(config, options, device, rank, world_size, logger), rank
    finally:
        cleanup()
