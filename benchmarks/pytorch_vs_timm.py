"""Inference images/s of our Swin (V1 or V2) against timm's, eager FP16 (autocast) and torch.compile, on one GPU.

    python benchmarks/pytorch_vs_timm.py --cfg configs/swin_tiny_patch4_window7_224.yaml --batch-sizes 64 256
    python benchmarks/pytorch_vs_timm.py --cfg configs/swinv2_tiny_patch4_window8_256.yaml

Random weights, synthetic inputs; prints a markdown table and optionally JSON. Ours runs as every evaluation here
runs it: Swin V2's logit scale and position bias computed once (models/constants.py), timm's on every call.
"""
from __future__ import annotations

import argparse

import torch
from timm.models.swin_transformer import SwinTransformer as TimmSwin
from timm.models.swin_transformer_v2 import SwinTransformerV2 as TimmSwinV2

from swin_trt.benchmark import cuda_images_per_s
from swin_trt.config import get_config, model_node
from swin_trt.errors import UserError, run_main
from swin_trt.files import write_json
from swin_trt.models import build_model
from swin_trt.models.constants import frozen_constants
from swin_trt.tables import format_table


def timm_twin(config) -> torch.nn.Module:
    """timm's model of the config's architecture (Swin V1 or V2)."""
    s = model_node(config)
    shape = dict(img_size=config.DATA.IMG_SIZE, patch_size=s.PATCH_SIZE, embed_dim=s.EMBED_DIM, depths=tuple(s.DEPTHS),
                 num_heads=tuple(s.NUM_HEADS), window_size=s.WINDOW_SIZE, num_classes=config.MODEL.NUM_CLASSES)
    if config.MODEL.TYPE == "swinv2":
        return TimmSwinV2(pretrained_window_sizes=tuple(s.PRETRAINED_WINDOW_SIZES), **shape)
    if config.MODEL.TYPE != "swin":
        raise UserError(f"timm has no twin of MODEL.TYPE {config.MODEL.TYPE}: use a swin or swinv2 config.")
    return TimmSwin(**shape)


def measure(model: torch.nn.Module, batch: int, size: int, compiled: bool) -> float:
    model = model.cuda().eval()
    runner = torch.compile(model) if compiled else model
    x = torch.randn(batch, 3, size, size, device="cuda")

    @torch.no_grad()
    def step():
        with torch.autocast("cuda", dtype=torch.float16):
            return runner(x)

    with frozen_constants(model):
        return cuda_images_per_s(step, batch)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cfg", default="configs/swin_tiny_patch4_window7_224.yaml")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    p.add_argument("--output-json", metavar="PATH")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise UserError("this benchmark needs a CUDA GPU; none is visible.")
    config = get_config(args.cfg)
    size = config.DATA.IMG_SIZE
    rows = []
    modes = [False] if args.no_compile else [False, True]
    for compiled in modes:
        for batch in args.batch_sizes:
            ours = measure(build_model(config), batch, size, compiled)
            theirs = measure(timm_twin(config), batch, size, compiled)
            rows.append({"mode": "compile FP16" if compiled else "eager FP16", "batch": batch,
                         "ours img/s": round(ours, 1), "timm img/s": round(theirs, 1), "ours/timm": round(ours / theirs, 3)})
            torch._dynamo.reset()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {config.MODEL.NAME}")
    print(format_table(rows))
    if args.output_json:
        write_json(args.output_json, {"device": torch.cuda.get_device_name(), "rows": rows})


if __name__ == "__main__":
    run_main(main)
