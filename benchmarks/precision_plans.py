"""The precision plans of a model's FP32, FP16, INT8 and FP8 (and MXFP8, NVFP4) graphs, made by the project's code.

    python benchmarks/precision_plans.py [--cfg configs/swin_tiny_patch4_window7_224.yaml] [--work-dir DIR] \
        [--formats int8 fp8 mxfp8 nvfp4] [--build]

Writes an official-format checkpoint (``{"model": state_dict}``, seeded random
weights: the plan does not depend on the weights), a small folder of
synthetic images for calibration, then runs, as a user would:
``export.py`` (FP32 and FP16), ``swin_quant_flow.py --quantize --ptq-only``
(INT8 and FP8, FP16 between the Q/DQ pairs) and ``trt/inspect_engine.py
--compare`` over the graphs, whose table it prints. The byte counts are
a plan read from TensorRT's parse of each graph (trt/network_plan.py), not a
measurement of an engine.

MXFP8 and NVFP4: ``swin_quant_flow.py`` quantizes them on a GPU only (ModelOpt
fake-quantizes them on CUDA). Without CUDA their graphs are made here in this
process by the flow's own calibration and export (calibration only takes
ranges; the export checks the graph's numbers against ModelOpt's numerics
emulated on the CPU), so their plans, and with ``--build`` their
TensorRT-RTX builds (``trt/build_engine.py --mode mxfp8|nvfp4``), are
available on any machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from swin_trt.config import get_config
from swin_trt.errors import run_main
from swin_trt.files import atomic_torch_save, write_json
from swin_trt.models import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CFG = os.path.join(REPO, "configs", "swin_tiny_patch4_window7_224.yaml")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg", default=DEFAULT_CFG, help="model config")
    parser.add_argument("--work-dir", help="keep the files here (default: a temporary folder)")
    parser.add_argument("--images", type=int, default=8, help="synthetic calibration images (and as many for val/)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the images")
    parser.add_argument("--formats", nargs="+", default=["int8", "fp8"], choices=["int8", "fp8", "mxfp8", "nvfp4"],
                        help="quantized graphs to make (besides FP32 and FP16)")
    parser.add_argument("--build", action="store_true",
                        help="also build every graph with trt/build_engine.py (the TensorRT-RTX builder here)")
    parser.add_argument("--output-json", help="write the plans (inspect_engine.py --compare JSON) here")
    return parser.parse_args(argv)


def write_images(root: str, count: int, size: int, seed: int) -> None:
    """``count`` seeded noise PNGs of ``size`` pixels in ``root/{train,val}/0``."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        folder = os.path.join(root, split, "0")
        os.makedirs(folder, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, f"{i:03d}.png"))


def run(args: List[str]) -> float:
    """Run a project command with this interpreter from the repository root; returns its seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=REPO, check=True)
    return time.perf_counter() - start


def block_graph(cfg: str, checkpoint: str, data: str, fmt: str, path: str, images: int) -> float:
    """An MXFP8 or NVFP4 graph made in this process by the flow's calibration and export; returns its seconds."""
    from swin_trt.models import load_weights
    from swin_trt.quant.calibrate import build_calib_loader, calibrate
    from swin_trt.quant.export import export_quantized

    start = time.perf_counter()
    config = get_config(cfg, ["QUANT.FORMAT", fmt, "DATA.DATA_PATH", data, "DATA.NUM_WORKERS", "0"])
    model = build_model(config)
    load_weights(model, checkpoint)
    batch = min(4, images)
    loader = build_calib_loader(config, max(1, images // batch), batch)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    calibrate(model.to(device), loader, config, device)
    report = export_quantized(model, path, config, fmt, loader, dynamic_batch=True)
    numbers = report["checks"]["numbers"]
    print(f"{path}: {numbers['linears']} {fmt.upper()} GEMMs equal {numbers['reference']}")
    return time.perf_counter() - start


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    config = get_config(args.cfg)
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work_dir or scratch
        os.makedirs(work, exist_ok=True)
        torch.manual_seed(args.seed)
        checkpoint = os.path.join(work, f"{config.MODEL.NAME}.pth")
        atomic_torch_save({"model": build_model(config).state_dict()}, checkpoint)
        data = os.path.join(work, "images")
        write_images(data, args.images, config.DATA.IMG_SIZE, args.seed)
        cfg = ["--cfg", args.cfg]
        names = ["fp32", "fp16", *args.formats]
        graphs = {p: os.path.join(work, f"{config.MODEL.NAME}_{p}.onnx") for p in names}
        seconds = {}
        for precision in ("fp32", "fp16"):
            seconds[precision] = run(["export.py", *cfg, "--resume", checkpoint, "--dynamic-batch", "--precision", precision,
                                      "--output", graphs[precision]])
        for fmt in args.formats:
            if fmt in ("mxfp8", "nvfp4"):
                seconds[fmt] = block_graph(args.cfg, checkpoint, data, fmt, graphs[fmt], args.images)
                continue
            seconds[fmt] = run(["swin_quant_flow.py", *cfg, "--resume", checkpoint, "--data-path", data, "--quantize",
                                "--ptq-only", "--format", fmt, "--dynamic-batch", "--skip-fp32-eval",
                                "--batch-size", str(min(4, args.images)), "--num-calib-batch", "2",
                                "--opts", "DATA.NUM_WORKERS", "0", "--output", work])
        plans = os.path.join(work, "plans.json")
        run(["trt/inspect_engine.py", "--compare", *graphs.values(), "--output-json", plans])
        if args.build:
            for name, graph in graphs.items():
                seconds[f"build {name}"] = run(["trt/build_engine.py", "--onnx-file", graph, "--mode", name,
                                                "--trt-engine", graph.replace(".onnx", ".engine")])
        if args.output_json:
            with open(plans, encoding="utf-8") as f:
                summaries = [g["summary"] for g in json.load(f)["graphs"]]
            write_json(args.output_json, {"config": args.cfg, "seconds": seconds, "summaries": summaries})
        print("seconds per step: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))


if __name__ == "__main__":
    run_main(main)
