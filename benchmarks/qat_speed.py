"""QAT training images/s against plain FP16 AMP training of the same Swin, on synthetic images, one GPU.

    python benchmarks/qat_speed.py --batch-size 64 --steps 30 [--cfg configs/swin_tiny_patch4_window7_224.yaml] \\
        [--format int8|fp8] [--compile] [--output-json PATH]

Both rows run the same training step (FP16 autocast forward, GradScaler
backward, AdamW step) on one fixed batch of random 224 images, timed with CUDA
events (median of 3 repeats of ``--steps`` steps after a warm-up). The QAT
model is our Swin wrapped by quant/ (the placement table's quantizers) and
max-calibrated on two synthetic batches. ModelOpt's fake-quant CUDA extension
is built (or loaded) before timing; whether it loaded is printed, since
without it fake quantization falls back to slower PyTorch ops.
"""
from __future__ import annotations

import argparse
import time
from typing import Dict

import torch
import torch.nn as nn

from swin_trt.benchmark import cuda_images_per_s
from swin_trt.config import get_config
from swin_trt.errors import UserError, run_main
from swin_trt.files import write_json
from swin_trt.models import build_model
from swin_trt.tables import format_table
from swin_trt.training.optimizer import build_optimizer


def load_fake_quant_kernels() -> Dict[str, object]:
    """Build/load ModelOpt's CUDA fake-quant extensions now, so compilation is not timed; report the outcome."""
    from modelopt.torch.quantization.extensions import get_cuda_ext, get_cuda_ext_fp8

    start = time.perf_counter()
    int8_ext, fp8_ext = get_cuda_ext(), get_cuda_ext_fp8()
    return {"int8_ext": int8_ext is not None, "fp8_ext": fp8_ext is not None,
            "ext_seconds": round(time.perf_counter() - start, 1)}


def training_step(model: nn.Module, config, batch: int, compile_model: bool = False, device: str = "cuda"):
    """A closure running one training step of ``model`` on a fixed synthetic batch (FP16 AMP on CUDA)."""
    size, classes = config.DATA.IMG_SIZE, config.MODEL.NUM_CLASSES
    model.to(device).train()
    runner = torch.compile(model) if compile_model else model
    optimizer = build_optimizer(config, model, lr=1e-5)
    amp = device == "cuda"
    scaler = torch.amp.GradScaler(device, enabled=amp)
    criterion = nn.CrossEntropyLoss()
    images = torch.randn(batch, 3, size, size, device=device)
    target = torch.randint(0, classes, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device, dtype=torch.float16, enabled=amp):
            loss = criterion(runner(images), target)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    return step


def quantized_model(config, batch: int, device: str = "cuda") -> nn.Module:
    """Our Swin with the placement table's quantizers, max-calibrated on two synthetic batches."""
    from swin_trt.quant.quantize import quantize_model

    model = build_model(config).to(device).eval()
    calib = [torch.randn(batch, 3, config.DATA.IMG_SIZE, config.DATA.IMG_SIZE, device=device) for _ in range(2)]

    def forward_loop(m: nn.Module) -> None:
        with torch.no_grad():
            for images in calib:
                m(images)

    return quantize_model(model, config, forward_loop)


def measure(name: str, model: nn.Module, config, batch: int, steps: int, compile_model: bool) -> Dict[str, object]:
    torch.cuda.reset_peak_memory_stats()
    rate = cuda_images_per_s(training_step(model, config, batch, compile_model), batch, warmup=5, iters=steps, repeats=3)
    return {"mode": name, "batch": batch, "images/s": round(rate, 1),
            "peak GiB": round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cfg", default="configs/swin_tiny_patch4_window7_224.yaml", help="model config")
    p.add_argument("--batch-size", type=int, default=64, help="images per training step")
    p.add_argument("--steps", type=int, default=30, help="timed steps per repeat")
    p.add_argument("--format", choices=("int8", "fp8"), default="int8", help="QAT format")
    p.add_argument("--compile", action="store_true", help="also time both with torch.compile")
    p.add_argument("--output-json", metavar="PATH")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise UserError("this benchmark needs a CUDA GPU; none is visible.")
    config = get_config(args.cfg, ["QUANT.FORMAT", args.format, "QUANT.CALIB_METHOD", "max"])
    kernels = load_fake_quant_kernels()
    torch.manual_seed(0)
    rows = []
    for compiled in ([False, True] if args.compile else [False]):
        suffix = " + compile" if compiled else ""
        try:
            fp16 = measure(f"FP16 AMP{suffix}", build_model(config), config, args.batch_size, args.steps, compiled)
            qat = measure(f"QAT {args.format} + AMP{suffix}", quantized_model(config, args.batch_size), config,
                          args.batch_size, args.steps, compiled)
        except Exception as err:  # torch.compile of the fake-quant graph is optional: report, keep the eager rows
            if not compiled:
                raise
            rows.append({"mode": f"torch.compile failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}"})
            continue
        finally:
            torch._dynamo.reset()
        fp16["vs FP16"], qat["vs FP16"] = 1.0, round(qat["images/s"] / fp16["images/s"], 3)
        rows += [fp16, qat]
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {config.MODEL.NAME}, "
          f"ModelOpt CUDA fake-quant extension: int8 {kernels['int8_ext']}, fp8 {kernels['fp8_ext']} "
          f"({kernels['ext_seconds']} s to build/load)")
    print(format_table(rows))
    if args.output_json:
        write_json(args.output_json, {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                      **kernels, "rows": rows})


if __name__ == "__main__":
    run_main(main)
