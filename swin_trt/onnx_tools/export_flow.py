"""export.py's job: the config of its flags, their checks, and the checked export of the config's model."""
from __future__ import annotations

import argparse
import os
from typing import Any, Dict

from yacs.config import CfgNode

from swin_trt import cli
from swin_trt.config import config_beside, save_config
from swin_trt.contract import Preprocessing
from swin_trt.errors import UserError
from swin_trt.files import make_folder, require_parent_dir
from swin_trt.models.build import model_with_weights
from swin_trt.models.weight_source import resolve, weights_config
from swin_trt.onnx_tools.export import default_onnx_path, export_checked
from swin_trt.validation import check_args, check_config, require_dataset, require_modelopt_onnx


def make_config(args: argparse.Namespace) -> CfgNode:
    """The config of an export.py run: YAML (or the weights folder's own files), ``--opts``, then the flags."""
    return weights_config(args.cfg, args.opts, args.resume, MODEL__RESUME=args.resume, DATA__DATA_PATH=args.data_path,
                          DATA__BATCH_SIZE=args.batch_size, DATA__NUM_WORKERS=args.num_workers, ONNX__OPSET=args.opset,
                          **cli.onnx_batch_overrides(args))


def check_inputs(args: argparse.Namespace, config: CfgNode) -> None:
    """Every number and input file of the run, before any work (each mistake is one :class:`UserError`)."""
    check_args(args, {"batch_size_onnx": 1, "batch_size": 1, "num_workers": 0, "opset": 17})
    if args.eval and not args.data_path:
        raise UserError("--eval compares on the validation images: pass --data-path (the folder holding val/).")
    check_config(config, args.cfg)
    if config.MODEL.RESUME:
        resolve(config.MODEL.RESUME)
    if args.data_path:
        require_dataset(args.data_path, ["val"])
    if args.precision == "fp16":
        require_modelopt_onnx("export.py --precision fp16 (FP16 conversion with ModelOpt AutoCast)")


def output_path(config: CfgNode, precision: str, output: str = "") -> str:
    """``output``, or ``weights/<MODEL.NAME>[_fp16].onnx`` (its folder made); its folder must exist."""
    path = output or default_onnx_path(config, precision)
    if not output:
        make_folder(os.path.dirname(path))
    return require_parent_dir(path)


def export_config_model(config: CfgNode, path: str, precision: str, check_on_val: bool) -> Dict[str, Any]:
    """The config's model (weights from MODEL.RESUME) exported to ``path`` and checked against PyTorch,
    also on DATA.DATA_PATH/val with ``check_on_val``; the file records its preprocessing contract, and the config is
    written beside it (``config.config_beside``).

    Raises:
        onnx_tools.verify.ExportCheckError: the graph failed a check (nothing is written).
    """
    model = model_with_weights(config, config.MODEL.RESUME)
    val_loader = None
    if check_on_val:
        from swin_trt.data import build_loader

        val_loader = build_loader(config, "val", shuffle=False)
    report = export_checked(model, path, Preprocessing.from_config(config), batch_size=config.ONNX.BATCH_SIZE,
                            dynamic_batch=config.ONNX.DYNAMIC_BATCH, opset=config.ONNX.OPSET, precision=precision,
                            keep_fp32_ops=config.ONNX.FP16_KEEP_FP32_OPS, val_loader=val_loader)
    save_config(config, config_beside(path))  # what a later step takes as --cfg (the file's contract says the same)
    return report
