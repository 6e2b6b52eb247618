"""What the sensitivity sweep costs on ImageNet: the fake-quantized model's evaluation speed times the sweep's size.

    python benchmarks/sensitivity_cost.py --cfg configs/swin_tiny_patch4_window7_224.yaml \\
        configs/swin_large_patch4_window12_384.yaml [--batch-size 64] [--images 512] [--output-json cost.json]

The sweep evaluates ``2 x sites + 2`` times (sites: the placement rows that hold quantizers, by row) on
``QUANT.SENSITIVITY_IMAGES`` images. This calibrates each config's model (random weights: speed does not depend on
them) in INT8 on random images, times its fake-quantized evaluation in FP32 (as the sweep runs it) on ``--images``
random images, and prints the sweep's time on the default sample and on all 50,000 ImageNet validation images.
Decoding the images is not counted (the sweep decodes its sample once and keeps it in memory when it fits).
"""
from __future__ import annotations

import argparse
import time
from typing import Any, Dict, List, Optional, Sequence

import torch

from swin_trt.config import get_config
from swin_trt.errors import run_main
from swin_trt.files import write_json
from swin_trt.logs import create_logger
from swin_trt.models import build_model
from swin_trt.quant.calibrate import calibrate
from swin_trt.quant.placement import placement_table
from swin_trt.quant.quantize import enabled_quantizers
from swin_trt.quant.sensitivity import sites_by_row
from swin_trt.tables import format_table

IMAGENET_VAL = 50_000


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cfg", nargs="+", required=True, help="model configs")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--images", type=int, default=512, help="random images timed per model")
    p.add_argument("--output-json")
    return p.parse_args(argv)


def measure(cfg: str, batch: int, images: int, device: torch.device) -> Dict[str, Any]:
    config = get_config(cfg)
    size = config.DATA.IMG_SIZE
    model = build_model(config).to(device)
    generator = torch.Generator().manual_seed(0)
    calibration = [(torch.randn(batch, 3, size, size, generator=generator), torch.zeros(batch, dtype=torch.long))]
    calibrate(model, calibration, config, device)
    sites = len(sites_by_row(enabled_quantizers(model), placement_table(config.MODEL.TYPE)))
    x = torch.randn(batch, 3, size, size, device=device)
    with torch.no_grad():
        model(x)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, done = time.perf_counter(), 0
        while done < images:
            model(x)
            done += batch
        if device.type == "cuda":
            torch.cuda.synchronize()
    rate = done / (time.perf_counter() - start)
    evaluations = 2 * sites + 2
    sample = config.QUANT.SENSITIVITY_IMAGES
    return {"model": config.MODEL.NAME, "device": torch.cuda.get_device_name() if device.type == "cuda" else "CPU",
            "fake_quant_images_per_s": round(rate, 1), "sites_by_row": sites, "evaluations": evaluations,
            "sample_images": sample, "sweep_seconds_sample": round(evaluations * sample / rate, 1),
            "sweep_hours_imagenet": round(evaluations * IMAGENET_VAL / rate / 3600, 2)}


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    create_logger()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows: List[Dict[str, Any]] = [measure(cfg, args.batch_size, args.images, device) for cfg in args.cfg]
    print(format_table(rows))
    if args.output_json:
        write_json(args.output_json, {"rows": rows})


if __name__ == "__main__":
    run_main(main)
