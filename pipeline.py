"""The whole deployment workflow, each step its own command, ending with the report.

    python pipeline.py                      # embedded digits data, micro model, CPU or GPU
    python pipeline.py --cfg configs/swin_tiny_patch4_window7_224.yaml \
        --resume weights/swin_tiny_patch4_window7_224.pth --data-path /path/to/imagenet

Steps: make the digits dataset → train → PyTorch eval → export FP32 and FP16
ONNX → ONNX Runtime eval of both → calibrate + QAT → INT8 ONNX → ONNX Runtime
eval → build FP32/FP16/INT8 engines → evaluate the engines (where a TensorRT
runtime and a GPU exist; otherwise the report says so) → benchmark → report.

A step is skipped when all its outputs exist and are newer than its inputs,
so rerunning the same command after an interruption continues where it
stopped (steps write their outputs atomically; training and QAT also resume
from their own per-epoch checkpoints). ``--force STEP`` reruns one step.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import List, Optional

from config import get_config
from trt.backend import load_backend, runtime_unavailable_reason
from utils import UserError, format_table, run_main, write_json

PY = sys.executable


def _is_placeholder(path: str) -> bool:
    """A ``{"status": "not run: ..."}`` file written for a step that could not run: never up to date."""
    if not path.endswith(".json"):
        return False
    try:
        with open(path, encoding="utf-8") as f:
            return set(json.load(f)) == {"status"}
    except (OSError, ValueError):
        return False


@dataclass
class Step:
    """One command of the workflow, with the files it reads and writes."""

    name: str
    command: List[str]
    inputs: List[str]
    outputs: List[str]
    note: str = ""  # written instead of running (a step that cannot run here)

    def is_fresh(self) -> bool:
        if not all(os.path.exists(o) for o in self.outputs) or any(map(_is_placeholder, self.outputs)):
            return False
        newest_input = max((os.path.getmtime(i) for i in self.inputs if os.path.exists(i)), default=0.0)
        return min(os.path.getmtime(o) for o in self.outputs) >= newest_input


def tensorrt_runtime_available() -> Optional[str]:
    """None when full TensorRT and a CUDA GPU are present, else the reason ("not run: ...").

    Only the ``tensorrt`` module counts: TensorRT-RTX refuses the Hopper GPUs this project was run on.
    """
    reason = runtime_unavailable_reason(("tensorrt",))
    return f"not run: {reason}" if reason else None


def tensorrt_builder_available() -> Optional[str]:
    """None when a TensorRT-family builder imports (tensorrt or TensorRT-RTX), else the reason."""
    try:
        load_backend("auto")
    except UserError:
        return "not run: no TensorRT builder installed (neither tensorrt nor the TensorRT-RTX wheels)"
    return None


def plan(args: argparse.Namespace) -> List[Step]:
    config = get_config(args.cfg)
    name = config.MODEL.NAME
    cfg = ["--cfg", args.cfg]
    data = args.data_path
    weights, results = args.weights, args.results
    acc = os.path.join(results, "accuracy")
    bs = ["--batch-size", str(args.batch_size)]
    steps: List[Step] = []
    if args.resume:
        ckpt = args.resume
    else:
        steps.append(Step("data", [PY, "-m", "data.make_digits", "--output", data], [], [os.path.join(data, "val")]))
        out_dir = os.path.join(args.output, name, "default")
        ckpt = os.path.join(out_dir, "ckpt_final.pth")
        steps.append(Step("train", [PY, "main.py", *cfg, "--data-path", data, "--output", args.output,
                                    "--output-json", os.path.join(results, "train_metrics.json")],
                          [os.path.join(data, "val")], [ckpt]))
    steps.append(Step("eval pytorch", [PY, "main.py", *cfg, "--data-path", data, "--eval", "--resume", ckpt,
                                       "--disable-amp", "--output", args.output, *bs,
                                       "--output-json", os.path.join(acc, "pytorch_fp32.json")],
                      [ckpt], [os.path.join(acc, "pytorch_fp32.json")]))
    onnx = {p: os.path.join(weights, f"{name}_{p}.onnx") for p in ("fp32", "fp16", "int8")}
    for precision in ("fp32", "fp16"):
        steps.append(Step(f"export {precision}", [PY, "export.py", *cfg, "--resume", ckpt, "--dynamic-batch",
                                                  "--precision", precision, "--output", onnx[precision]],
                          [ckpt], [onnx[precision]]))
    steps.append(Step("quantize (calibrate + QAT)", [PY, "swin_quant_flow.py", *cfg, "--resume", ckpt, "--data-path", data,
                                                     "--quantize", "--dynamic-batch", "--output", weights, *bs,
                                                     "--output-json", os.path.join(results, "quant_metrics.json")],
                      [ckpt], [onnx["int8"]]))
    for precision in ("fp32", "fp16", "int8"):
        out = os.path.join(acc, f"onnxrt_{precision}.json")
        steps.append(Step(f"eval onnxrt {precision}", [PY, "trt/eval_onnxrt.py", *cfg, "--resume", onnx[precision],
                                                       "--data-path", data, *bs, "--output-json", out],
                          [onnx[precision]], [out]))
    build_reason = tensorrt_builder_available()
    trt_reason = build_reason or tensorrt_runtime_available()
    engines = {}
    for precision in ("fp32", "fp16", "int8"):
        engines[precision] = os.path.join(weights, f"{name}_{precision}.engine")
        steps.append(Step(f"build engine {precision}", [PY, "trt/build_engine.py", *cfg, "--onnx-file", onnx[precision],
                                                        "--trt-engine", engines[precision], "--mode", precision,
                                                        "--min-batch", "1", "--opt-batch", str(args.batch_size),
                                                        "--max-batch", str(max(256, args.batch_size))],
                          [onnx[precision]], [engines[precision]], note=build_reason or ""))
    for precision in ("fp32", "fp16", "int8"):
        out = os.path.join(acc, f"tensorrt_{precision}.json")
        steps.append(Step(f"eval tensorrt {precision}", [PY, "trt/eval_trt.py", "--eval", *cfg, "--resume",
                                                         engines[precision], "--data-path", data, *bs,
                                                         "--compare-checkpoint", ckpt, "--output-json", out],
                          [engines[precision]], [out], note=trt_reason or ""))
    bench = os.path.join(results, "benchmark.json")
    backends = ["eager", "ort"] + (["compile", "trt"] if trt_reason is None else [])
    bench_cmd = [PY, "trt/benchmark.py", *cfg, "--resume", ckpt, "--backends", *backends,
                 "--precisions", "fp32", "fp16", "int8", "--batch-sizes", *map(str, args.bench_batches),
                 "--max-seconds", str(args.bench_seconds),
                 "--output-json", bench, "--output-md", os.path.join(results, "benchmark.md")]
    for precision in ("fp32", "fp16", "int8"):
        bench_cmd += ["--onnx", f"{precision}={onnx[precision]}"]
        if trt_reason is None:
            bench_cmd += ["--engine", f"{precision}={engines[precision]}"]
    steps.append(Step("benchmark", bench_cmd, [*onnx.values()], [bench]))
    steps.append(Step("report", [PY, "report.py", "--results", results, "--title", f"{name} deployment report"],
                      [os.path.join(acc, f) for f in ("pytorch_fp32.json", "onnxrt_fp32.json", "onnxrt_fp16.json",
                                                      "onnxrt_int8.json")] + [bench],
                      [os.path.join(results, "report.md"), os.path.join(results, "accuracy_vs_speed.png")]))
    return steps


def run(steps: List[Step], force: List[str]) -> List[dict]:
    summary = []
    for i, step in enumerate(steps, 1):
        head = f"[{i}/{len(steps)}] {step.name}"
        if step.note:
            print(f"{head}: {step.note}", flush=True)
            for out in step.outputs:
                if out.endswith(".json"):
                    write_json(out, {"status": step.note})
            summary.append({"step": step.name, "status": step.note.split(":")[0], "seconds": 0.0})
            continue
        if step.name not in force and step.is_fresh():
            print(f"{head}: up to date, skipped", flush=True)
            summary.append({"step": step.name, "status": "skipped (up to date)", "seconds": 0.0})
            continue
        print(f"{head}: {' '.join(step.command[1:])}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(step.command)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise UserError(f"step '{step.name}' failed (exit {proc.returncode}); fix the cause above and rerun the same command to continue from it.")
        summary.append({"step": step.name, "status": "done", "seconds": round(seconds, 1)})
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cfg", default="configs/swin_micro_digits.yaml", help="model config")
    p.add_argument("--resume", help="trained checkpoint (skips making the digits data and training)")
    p.add_argument("--data-path", default="datasets/digits", help="ImageNet-style root with train/ and val/")
    p.add_argument("--batch-size", type=int, default=64, help="batch for evaluation and QAT")
    p.add_argument("--bench-batches", type=int, nargs="+", default=[1, 16, 64, 256], help="benchmark batch sizes")
    p.add_argument("--bench-seconds", type=float, default=3.0, help="time limit per benchmark cell")
    p.add_argument("--output", default="output", help="training output root")
    p.add_argument("--weights", default="weights", help="folder for ONNX files and engines")
    p.add_argument("--results", default="results", help="folder for metrics and the report")
    p.add_argument("--force", nargs="+", default=[], metavar="STEP", help="rerun these steps even if up to date")
    args = p.parse_args()
    if args.resume and not os.path.isfile(args.resume):
        raise UserError(f"checkpoint {args.resume} does not exist: pass the .pth file to deploy.")
    # the folders the steps write into; each step makes its own files (and make_digits its own folder)
    for folder in (args.weights, os.path.join(args.results, "accuracy")):
        os.makedirs(folder, exist_ok=True)
    start = time.perf_counter()
    summary = run(plan(args), args.force)
    print(format_table(summary))
    print(f"pipeline finished in {time.perf_counter() - start:.0f} s; report: {os.path.join(args.results, 'report.md')}")


if __name__ == "__main__":
    run_main(main)
