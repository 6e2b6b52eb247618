"""The model table: parameters and GMACs of every shipped config, against the original repository's figures.

    python benchmarks/model_table.py [--configs configs/a.yaml configs/b.yaml ...] [--output-json table.json]

Each config's model is built on the meta device (structure only, no weights), its parameters are counted and
its multiply-accumulates are counted as the original's models count their own FLOPs
(``swin_trt/models/flops.py``). Nothing is run, so the whole table takes seconds on a CPU. The published columns
are the original's ImageNet-1K figures (``PUBLISHED_IMAGENET_1K``); "agrees" says whether ours round to them at
the precision they are published in.
"""
from __future__ import annotations

import argparse
import glob
import os
from dataclasses import asdict, dataclass
from typing import Callable, List, Optional, Sequence

import torch.nn as nn
from yacs.config import CfgNode

from swin_trt.config import get_config, model_node
from swin_trt.errors import run_main
from swin_trt.files import write_json
from swin_trt.models.flops import PUBLISHED_IMAGENET_1K, build_structure, count_gmacs, count_params

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = {"swin": "Swin V1", "swinv2": "Swin V2", "swin_mlp": "Swin-MLP"}


@dataclass
class Row:
    """One config's line of the table."""

    config: str
    family: str
    resolution: int
    window: str
    params: int
    gmacs: float
    published_params: Optional[str]
    published_flops: Optional[str]
    agrees: Optional[bool]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", help="config files (default: every configs/*.yaml)")
    parser.add_argument("--output-json", help="write the rows here as JSON")
    return parser.parse_args(argv)


def window_text(config: CfgNode) -> str:
    """The config's window side, as ``12→24`` when it was fine-tuned from a smaller pre-training window."""
    node = model_node(config)
    window = str(node.WINDOW_SIZE)
    pretrained = [w for w in node.get("PRETRAINED_WINDOW_SIZES", []) if w > 0]
    return f"{max(pretrained)}→{window}" if pretrained else window


def table_row(config_path: str, build: Callable[[CfgNode], nn.Module] = build_structure) -> Row:
    """Count one config's model (made by ``build``, by default on the meta device); look up the original's figures."""
    config = get_config(config_path)
    model = build(config)
    params, gmacs = count_params(model), count_gmacs(model)
    published = PUBLISHED_IMAGENET_1K.get(config.MODEL.NAME)
    agrees = None if published is None else published.params_agree(params) and published.flops_agree(gmacs)
    return Row(config.MODEL.NAME, FAMILIES[config.MODEL.TYPE], config.DATA.IMG_SIZE, window_text(config),
               params, gmacs, published and published.params, published and published.flops, agrees)


def markdown(rows: List[Row]) -> str:
    """The rows as a markdown table."""
    lines = ["| config | family | resolution | window | params (M) | GMACs | published #params | published FLOPs "
             "| agrees |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        agrees = "—" if r.agrees is None else ("yes" if r.agrees else "**no**")
        lines.append(f"| {r.config} | {r.family} | {r.resolution} | {r.window} | {r.params / 1e6:.2f} | "
                     f"{r.gmacs:.3f} | {r.published_params or '—'} | {r.published_flops or '—'} | {agrees} |")
    return "\n".join(lines)


def build_table(config_paths: Sequence[str], build: Callable[[CfgNode], nn.Module] = build_structure) -> List[Row]:
    """The rows of ``config_paths``, by family, then resolution, parameters and MACs."""
    rows = [table_row(path, build) for path in config_paths]
    order = list(FAMILIES.values())
    return sorted(rows, key=lambda r: (order.index(r.family), r.resolution, r.params, r.gmacs))


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    rows = build_table(args.configs or sorted(glob.glob(os.path.join(REPO, "configs", "*.yaml"))))
    print(markdown(rows))
    if args.output_json:
        write_json(args.output_json, {"rows": [asdict(r) for r in rows]})


if __name__ == "__main__":
    run_main(main)
