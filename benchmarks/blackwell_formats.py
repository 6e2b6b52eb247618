"""MXFP8 and NVFP4 on an NVIDIA GPU: the accuracy table of every format, and the small graphs the CPU tests read.

    python benchmarks/blackwell_formats.py --data-path datasets/digits --checkpoint v1=V1.pth --checkpoint v2=V2.pth \\
        --fixtures tests/fixtures/blackwell --output-json results/blackwell_formats.json [--swin-t-epochs 12]

ModelOpt's block quantizers run on CUDA only, so this runs on a GPU (an H100 or H200 fake-quantizes the formats; only
Blackwell runs them in its tensor cores). For each model (the trained micro Swin V1 and V2, the V1 outlier test bed
of quant/outliers.py, and with ``--swin-t-epochs`` a Swin-T trained here on the digits at 224 px) and each format
(INT8, FP8, MXFP8, NVFP4) it calibrates (PTQ), evaluates the fake-quantized model on val/, fine-tunes one QAT epoch
and evaluates again: the table of docs/RESULTS.md. For the micro V1 and V2 in MXFP8 and NVFP4 it also exports the
PTQ graph through swin_quant_flow's export (checked by quant/block_check.py against the live model) into
``--fixtures``, with the reference values the CPU tests compare the graph against (``*_references.npz``: each block
Linear's fake-quantized weight, 64 calibration activations and their fake quantization) and the versions that made
them (``versions.json``).
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from swin_trt.config import get_config
from swin_trt.data import build_loader
from swin_trt.errors import UserError, run_main
from swin_trt.evaluation import evaluate_model
from swin_trt.files import atomic_path, make_folder, write_json
from swin_trt.logs import create_logger
from swin_trt.models import build_model, load_weights
from swin_trt.provenance import module_version
from swin_trt.quant.block_check import model_references
from swin_trt.quant.calibrate import build_calib_loader, calibrate
from swin_trt.quant.export import export_quantized
from swin_trt.quant.finetune import QATFineTuner
from swin_trt.quant.outliers import add_outlier_channels
from swin_trt.tables import format_table

CONFIGS = {"v1": "configs/swin_micro_digits.yaml", "v2": "configs/swinv2_micro_digits.yaml",
           "swin_t": "configs/swin_tiny_patch4_window7_224.yaml"}
FORMATS = ("int8", "fp8", "mxfp8", "nvfp4")
FIXTURE_MODELS = ("v1", "v2")
# NVIDIA's published ImageNet top-1 of Swin-T TensorRT engines (ModelOpt examples/torch_onnx), quoted as the reference
MODELOPT_SWIN_T = {"fp16": 81.37, "fp8": 81.29, "int8": 81.12, "mxfp8": 81.32, "nvfp4": 80.79, "auto": 80.84}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-path", required=True, help="the digits dataset (make_digits.py)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="v1|v2=PTH", help="trained micro models")
    p.add_argument("--fixtures", help="folder for the micro models' MXFP8/NVFP4 graphs and their references")
    p.add_argument("--swin-t-epochs", type=int, default=0, help="also train a Swin-T on the digits at 224 px")
    p.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    p.add_argument("--qat-epochs", type=int, default=1)
    p.add_argument("--output-json", required=True)
    return p.parse_args(argv)


def config_for(name: str, data: str, fmt: str = "int8", extra: Sequence[str] = ()):
    opts = ["QUANT.FORMAT", fmt, "QUANT.CALIB_METHOD", "max", "DATA.DATA_PATH", data, "DATA.NUM_WORKERS", "4",
            "QUANT.FINETUNE_EPOCHS", "1"]
    if name == "swin_t":  # the digits at 224 px, 10 classes, no augmentation (as the micro configs)
        opts += ["MODEL.NUM_CLASSES", "10", "DATA.MEAN", "[0.5, 0.5, 0.5]", "DATA.STD", "[0.5, 0.5, 0.5]",
                 "TEST.CROP", "False", "AUG.AUTO_AUGMENT", "none", "AUG.MIXUP", "0.0", "AUG.CUTMIX", "0.0",
                 "AUG.REPROB", "0.0", "AUG.COLOR_JITTER", "0.0", "AUG.HFLIP", "0.0", "DATA.BATCH_SIZE", "64",
                 "MODEL.DROP_PATH_RATE", "0.0", "TRAIN.WARMUP_EPOCHS", "1", "TRAIN.BASE_LR", "1e-3",
                 "QUANT.FINETUNE_LR", "1e-5"]
    return get_config(CONFIGS[name], opts + list(extra))


def train_swin_t(data: str, epochs: int, out: str, device: torch.device) -> str:
    """A Swin-T trained on the digits at 224 px for ``epochs`` epochs (main.py's session, in-process)."""
    from swin_trt.training.session import run_session

    config = config_for("swin_t", data, extra=["TRAIN.EPOCHS", str(epochs), "OUTPUT", out])
    metrics, _ = run_session(config, device.type)
    print(f"Swin-T on the digits: Acc@1 {metrics['acc1']:.3f} after {epochs} epochs")
    return os.path.join(out, config.MODEL.NAME, config.TAG, "ckpt_final.pth")


def fake_quant_row(name: str, fmt: str, checkpoint: str, data: str, device: torch.device, qat_epochs: int,
                   fixtures: Optional[str], outliers: bool = False) -> Dict[str, Any]:
    config = config_for(name.split("+")[0], data, fmt)
    model = build_model(config)
    load_weights(model, checkpoint)
    if outliers:
        add_outlier_channels(model, 200.0, 4, 0)
    model.to(device)
    val = build_loader(config, "val", shuffle=False, shard=False)
    row: Dict[str, Any] = {"model": name, "format": fmt}
    images = build_calib_loader(config, config.QUANT.NUM_CALIB_BATCH, config.DATA.BATCH_SIZE)
    start = time.perf_counter()
    calibrate(model, images, config, device)
    row["ptq"] = evaluate_model(model, val, device, desc=f"{name} {fmt} ptq")["acc1"]
    if fixtures and name in FIXTURE_MODELS and fmt in ("mxfp8", "nvfp4"):
        try:  # a graph that fails its check is reported; the accuracy rows still run
            write_fixture(model, config, fixtures, name, fmt, images)
        except Exception as err:
            row["fixture_error"] = f"{type(err).__name__}: {err}"[:600]
            print(f"{name} {fmt} fixture failed: {row['fixture_error']}", flush=True)
        model.to(device)
    tuner = QATFineTuner(model, model, build_loader(config, "train"), config, device, 1, qat_epochs)
    tuner.run(0)
    row["qat"] = evaluate_model(model, val, device, desc=f"{name} {fmt} qat")["acc1"]
    row["seconds"] = round(time.perf_counter() - start, 1)
    print(f"{name} {fmt}: PTQ {row['ptq']:.3f}, QAT {row['qat']:.3f} ({row['seconds']} s)", flush=True)
    return row


def write_fixture(model, config, folder: str, name: str, fmt: str, images) -> None:
    """The PTQ graph (checked against the live model by the export) and the references the CPU tests use."""
    make_folder(folder)
    stem = os.path.join(folder, f"micro_{name}_{fmt}")
    report = export_quantized(copy.deepcopy(model), stem + ".onnx", config, fmt, images, dynamic_batch=True)
    model.cuda()
    references = model_references(model, images)
    arrays = {f"{linear}/{key}": value for linear, ref in references.items() for key, value in ref.items()}
    with atomic_path(stem + "_references.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    print(f"{stem}.onnx: {report['checks']['numbers']}", flush=True)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    create_logger()
    if not torch.cuda.is_available():
        raise UserError("benchmarks/blackwell_formats.py quantizes MXFP8 and NVFP4 with ModelOpt, which runs them on "
                        "CUDA only: run it on a machine with an NVIDIA GPU.")
    device = torch.device("cuda")
    checkpoints = dict(item.split("=", 1) for item in args.checkpoint)
    if args.swin_t_epochs:
        checkpoints["swin_t"] = train_swin_t(args.data_path, args.swin_t_epochs, "output/blackwell_swin_t", device)
    runs = [(n, c, False) for n, c in checkpoints.items()]
    if "v1" in checkpoints:
        runs.insert(1, ("v1+outliers", checkpoints["v1"], True))
    rows: List[Dict[str, Any]] = []
    for name, checkpoint, outliers in runs:
        config = config_for(name.split("+")[0], args.data_path)
        model = build_model(config)
        load_weights(model, checkpoint)
        if outliers:
            add_outlier_channels(model, 200.0, 4, 0)
        fp32 = evaluate_model(model.to(device), build_loader(config, "val", shuffle=False, shard=False), device)["acc1"]
        rows.append({"model": name, "format": "fp32", "ptq": fp32, "qat": None})
        for fmt in args.formats:
            try:
                rows.append(fake_quant_row(name, fmt, checkpoint, args.data_path, device, args.qat_epochs,
                                           args.fixtures, outliers))
            except Exception as err:  # a format that fails is a row that says why; the others still run
                rows.append({"model": name, "format": fmt, "error": f"{type(err).__name__}: {err}"[:400]})
                print(f"{name} {fmt} failed: {rows[-1]['error']}", flush=True)
            write_json(args.output_json, {"rows": rows, "versions": versions()})
    if args.fixtures:
        write_json(os.path.join(args.fixtures, "versions.json"), versions())
    write_json(args.output_json, {"rows": rows, "versions": versions(), "modelopt_swin_t_engines": MODELOPT_SWIN_T})
    print(format_table(rows, ["model", "format", "ptq", "qat", "seconds", "error"]))


def versions() -> Dict[str, Any]:
    return {"torch": torch.__version__, "modelopt": module_version("modelopt"), "onnx": module_version("onnx"),
            "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "python": platform.python_version(), "made": time.strftime("%Y-%m-%d")}


if __name__ == "__main__":
    run_main(main)
