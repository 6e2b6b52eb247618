"""Turn a trained checkpoint into its outlier variant: the same function, with a few post-LayerNorm channels
``--factor`` times wider (swin_trt/quant/outliers.py), the test bed of the quantization recipes.

    python benchmarks/outlier_testbed.py --cfg configs/swin_micro_digits.yaml \\
        --resume output/swin_micro_digits/default/ckpt_final.pth --output weights/micro_outliers.pth \\
        [--factor 200] [--channels 4] [--seed 0] [--data-path datasets/digits]

Writes ``{"model": state_dict}`` (the original key names, so every command loads it) and prints, on one batch of
``val/`` when ``--data-path`` is given, the largest relative logit difference to the original (rounding only).
It emulates by a function-preserving rescaling the channel outliers reported for trained Swin and ViT models; they
are not a trained model's own outliers.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

import torch

from swin_trt.cli import WEIGHTS_HELP
from swin_trt.models.weight_source import weights_config
from swin_trt.errors import run_main
from swin_trt.files import atomic_torch_save
from swin_trt.models import build_model, load_weights
from swin_trt.quant.outliers import add_outlier_channels


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg", help="config of the weights (optional for a model folder or hf:ORG/NAME)")
    parser.add_argument("--resume", required=True, help="trained weights: " + WEIGHTS_HELP)
    parser.add_argument("--output", required=True, help="the outlier variant's checkpoint")
    parser.add_argument("--factor", type=float, default=200.0, help="how much wider the outlier channels are")
    parser.add_argument("--channels", type=int, default=4, help="outlier channels per stage")
    parser.add_argument("--seed", type=int, default=0, help="picks the channels")
    parser.add_argument("--data-path", help="dataset whose val/ checks the variant against the original")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    config = weights_config(args.cfg, [] if not args.data_path else ["DATA.DATA_PATH", args.data_path,
                                                                      "DATA.NUM_WORKERS", "0"], args.resume)
    model = build_model(config)
    load_weights(model, args.resume)
    model.eval()
    images = None
    if args.data_path:
        from swin_trt.data import build_loader

        images = next(iter(build_loader(config, "val", shuffle=False, shard=False)))[0]
        with torch.no_grad():
            before = model(images)
    picked = add_outlier_channels(model, args.factor, args.channels, args.seed)
    atomic_torch_save({"model": model.state_dict()}, args.output)
    print(f"{args.output}: channels x{args.factor:g} by stage {picked}")
    if images is not None:
        with torch.no_grad():
            after = model(images)
        relative = float((after - before).abs().max() / before.abs().max())
        print(f"largest relative logit difference to {args.resume} on {len(images)} val images: {relative:.2e}")


if __name__ == "__main__":
    run_main(main)
