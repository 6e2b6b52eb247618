"""Every quantization recipe on one checkpoint, run as a user runs them, in one table.

    python benchmarks/quant_recipes.py --cfg configs/swin_micro_digits.yaml --resume CKPT --data-path datasets/digits \\
        --work-dir output/recipes [--keep PATTERN ...] [--smooth-alpha 0.5] [--effective-bits 9] \\
        [--output-json results/quant_recipes.json]

For each recipe of ``swin_trt/quant/recipes.py`` (PTQ max / percentile / entropy, FP8, SmoothQuant, kept modules,
AutoQuantize, QAT): ``swin_quant_flow.py ... --check-onnx`` (the ONNX Runtime Acc@1 of the Q/DQ graph on all of
``val/``, and the fake-quantized model's), then ``trt/inspect_engine.py --compare`` of the FP16 graph and every
recipe's graph (GEMMs by precision, activation bytes against FP16: TensorRT-RTX's parse, no GPU needed). Prints the
table and the wall time of each recipe; ``--output-json`` writes what the report's "Quantization recipes" table
reads. On ``benchmarks/outlier_testbed.py``'s checkpoint this is the test bed of docs/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from swin_trt.cli import WEIGHTS_HELP
from swin_trt.models.weight_source import weights_config
from swin_trt.errors import UserError, run_main
from swin_trt.files import make_folder, require_room, write_json
from swin_trt.training.checkpoints import checkpoint_bytes
from swin_trt.quant.recipes import gemm_counts, recipe_table, recipes
from swin_trt.tables import format_table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg", help="model config (optional for a model folder or hf:ORG/NAME)")
    parser.add_argument("--resume", required=True, help="plain weights (e.g. the outlier test bed's): " + WEIGHTS_HELP)
    parser.add_argument("--data-path", required=True, help="dataset with train/ (calibration, QAT) and val/")
    parser.add_argument("--work-dir", required=True, help="folder for every recipe's checkpoints and graphs")
    parser.add_argument("--keep", nargs="+", help="QUANT.KEEP_HIGH_PRECISION patterns of the kept-modules recipe")
    parser.add_argument("--smooth-alpha", type=float, default=0.5, help="SmoothQuant's alpha")
    parser.add_argument("--effective-bits", type=float, default=9.0, help="AutoQuantize's weight-bit budget")
    parser.add_argument("--only", nargs="+", help="run only the recipes whose name starts with one of these")
    parser.add_argument("--output-json", help="write the recipes' results here (the report reads quant_recipes.json)")
    return parser.parse_args(argv)


def run(args: List[str]) -> float:
    """Run a project command with this interpreter from the repository root; returns its seconds."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise UserError(f"{args[0]} failed with exit code {proc.returncode} ({last.removeprefix('error: ')}).")
    return time.perf_counter() - start


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    config = weights_config(args.cfg, [], args.resume)
    # every recipe writes a calibrated checkpoint and a graph of the model's size: check before the first
    require_room(os.path.join(args.work_dir, "recipe0", "flow.json"), 2 * checkpoint_bytes(config, with_optimizer=False))
    make_folder(args.work_dir)
    cfg = ["--cfg", args.cfg] if args.cfg else []  # a folder's commands read its own config
    fp16 = os.path.join(args.work_dir, "fp16.onnx")
    run(["export.py", *cfg, "--resume", args.resume, "--dynamic-batch", "--precision", "fp16", "--output", fp16])
    results: List[Dict[str, Any]] = []
    for index, (name, flags) in enumerate(recipes(config.MODEL.TYPE, args.keep, args.smooth_alpha, args.effective_bits)):
        if args.only and not any(name.startswith(prefix) for prefix in args.only):
            continue
        out = os.path.join(args.work_dir, f"recipe{index}")
        metrics = os.path.join(out, "flow.json")
        make_folder(out)
        seconds = run(["swin_quant_flow.py", *cfg, "--resume", args.resume, "--data-path", args.data_path,
                       "--dynamic-batch", "--check-onnx", "--output", out, "--output-json", metrics, *flags])
        with open(metrics, encoding="utf-8") as f:
            flow = json.load(f)
        stages = {row["stage"]: row for row in flow["rows"]}
        results.append({"recipe": name, "flags": flags, "seconds": seconds, "onnx": flow["files"]["onnx"],
                        "fp32_acc1": stages["fp32"]["acc1"], "torch_acc1": stages.get("qat", stages["ptq"])["acc1"],
                        "onnx_acc1": stages["onnxrt"]["acc1"], "module_formats": flow.get("module_formats"),
                        "check_steps": {k: v["worst_steps"] for k, v in flow["onnx"]["checks"].items()
                                        if "worst_steps" in v}})
        print(f"{name}: ONNX Runtime Acc@1 {results[-1]['onnx_acc1']:.3f} in {seconds:.0f} s", flush=True)
    plans = os.path.join(args.work_dir, "plans.json")
    run(["trt/inspect_engine.py", "--compare", fp16, *[r["onnx"] for r in results], "--output-json", plans])
    with open(plans, encoding="utf-8") as f:
        summaries = [g["summary"] for g in json.load(f)["graphs"]]
    for result, summary in zip(results, summaries[1:]):
        result.update(gemms=gemm_counts(summary), bytes_vs_fp16=summary["bytes"] / summaries[0]["bytes"],
                      fp32_compute_layers=summary["fp32_compute_layers"])
    report = {"model": config.MODEL.NAME, "checkpoint": args.resume, "fp32_acc1": results[0]["fp32_acc1"] if results else None,
              "fp16_gemms": gemm_counts(summaries[0]), "recipes": results}
    print(format_table(recipe_table(report)))
    if args.output_json:
        write_json(args.output_json, report)


if __name__ == "__main__":
    run_main(main)
