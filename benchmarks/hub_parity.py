"""Parity with the Hub's own libraries: logits and top-1 of our model against transformers' and timm's, per source,
family and number of classes, at Swin-T and Swin V2-T sizes.

    python benchmarks/hub_parity.py [--images 24] [--output-json results/hub_parity.json]

For each source (a transformers folder written by ``save_pretrained``, a timm folder by ``save_for_hf``), family
(Swin, Swin V2) and head (1,000 classes, a fine-tuned 5-class one with names), on random weights spread off their
initial values: the largest logit difference to the source's model on the same input tensors, in PyTorch and in the
ONNX file export.py writes from the folder (ONNX Runtime), and the top-1 agreement over JPEGs of several sizes, each
side with its own preprocessing (transformers' ``AutoImageProcessor``, timm's ``create_transform``; ours from the
ONNX file's contract, as ``trt/eval_onnxrt.py`` reads it).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from hub_folders import decoded, jpegs, timm_folder, transformers_folder  # its sibling: run as a script from the root
from swin_trt.errors import run_main
from swin_trt.files import write_json
from swin_trt.tables import format_table

REPO = Path(__file__).resolve().parents[1]
NAMES = ["tabby cat", "golden retriever", "sports car", "tulip", "lighthouse"]
# Swin-T and Swin V2-T as transformers and timm name them
SHAPES = {("transformers", "swin"): dict(image_size=224, embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
                                         window_size=7),
          ("transformers", "swinv2"): dict(image_size=256, embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
                                           window_size=8),
          ("timm", "swin"): "swin_tiny_patch4_window7_224", ("timm", "swinv2"): "swinv2_tiny_window8_256"}


def source_model(source: str, folder: Path):
    """The source library's own model and preprocessing for ``folder``: (model, images -> pixel tensor)."""
    if source == "transformers":
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        processor = AutoImageProcessor.from_pretrained(folder)
        model = AutoModelForImageClassification.from_pretrained(folder).eval()
        return (lambda x: model(pixel_values=x).logits), (lambda imgs: processor(imgs, return_tensors="pt")["pixel_values"])
    import timm
    from safetensors.torch import load_file
    from timm.data import create_transform, resolve_data_config

    config = json.loads((folder / "config.json").read_text())
    model = timm.create_model(config["architecture"], pretrained=False, **config["model_args"]).eval()
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    transform = create_transform(**resolve_data_config(pretrained_cfg=config["pretrained_cfg"]))
    return model, (lambda imgs: torch.stack([transform(i) for i in imgs]))


def make_folder(source: str, family: str, classes: int, root: Path) -> Path:
    names = NAMES if classes == len(NAMES) else None
    if source == "transformers":
        return transformers_folder(root / "hf", family, num_labels=classes, names=names, **SHAPES[(source, family)])
    return timm_folder(root / "timm", SHAPES[(source, family)], classes, names)


def measure(source: str, family: str, classes: int, images: int) -> Dict[str, Any]:
    from swin_trt.config import get_config
    from swin_trt.contract import read_onnx_contract
    from swin_trt.data.transforms import build_transform
    from swin_trt.models import build_model, load_weights
    from swin_trt.models.weight_source import weights_config
    from swin_trt.onnx_tools.runtime import OrtPredictor

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = make_folder(source, family, classes, root)
        theirs, their_pixels = source_model(source, folder)
        config = weights_config(None, [], str(folder))
        ours = build_model(config)
        load_weights(ours, str(folder))
        size = config.DATA.IMG_SIZE
        x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            reference = theirs(x)
            torch_diff = float((ours.eval()(x) - reference).abs().max())
        onnx_file = root / "model.onnx"
        subprocess.run([sys.executable, "export.py", "--resume", str(folder), "--dynamic-batch", "--output",
                        str(onnx_file)], cwd=REPO, check=True, capture_output=True)
        predictor = OrtPredictor(str(onnx_file), providers=["CPUExecutionProvider"])
        onnx_diff = float((predictor(x) - reference).abs().max())
        files = decoded(jpegs(images, seed=11))
        ours_transform = build_transform(read_onnx_contract(str(onnx_file)).config(get_config()), is_train=False)
        with torch.no_grad():
            their_top1 = theirs(their_pixels(files)).argmax(1)
        our_top1 = predictor(torch.stack([ours_transform(i) for i in files])).argmax(1)
        return {"source": source, "family": "Swin V2-T" if family == "swinv2" else "Swin-T", "classes": classes,
                "max_abs_pytorch": torch_diff, "max_abs_onnx": onnx_diff, "logit_scale": float(reference.abs().max()),
                "top1_agreement": float((their_top1 == our_top1).float().mean()), "images": images}


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=24, help="JPEGs of several sizes for the top-1 agreement")
    p.add_argument("--output-json")
    args = p.parse_args(argv)
    rows: List[Dict[str, Any]] = []
    for source in ("transformers", "timm"):
        for family in ("swin", "swinv2"):
            for classes in (1000, len(NAMES)):
                rows.append(measure(source, family, classes, args.images))
                print(rows[-1], flush=True)
    print(format_table([{**r, "max_abs_pytorch": f"{r['max_abs_pytorch']:.2e}", "max_abs_onnx": f"{r['max_abs_onnx']:.2e}"}
                        for r in rows]))
    if args.output_json:
        write_json(args.output_json, {"rows": rows, "torch": torch.__version__, "onnxruntime": _version("onnxruntime-gpu"),
                                      "transformers": _version("transformers"), "timm": _version("timm")})


def _version(dist: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(dist)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run_main(main)
