"""The whole deployment workflow as steps, each a command with the files it reads and writes, and when a step is up to date."""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import torch
import yaml
from yacs.config import CfgNode

from swin_trt.benchmark import pipeline_backends
from swin_trt.config import get_config
from swin_trt.errors import UserError
from swin_trt.files import write_json
from swin_trt.quant.paths import default_paths
from swin_trt.quant.placement import BLOCK_FORMATS
from swin_trt.trt.backend import load_backend, runtime_unavailable_reason
from swin_trt.trt.metadata import file_sha256
from swin_trt.validation import check_config

DEPLOYMENT_NODES = ("QUANT", "ONNX", "TRT")  # read by the deployment steps only, never by main.py
DEFAULT_CFG = "configs/swin_micro_digits.yaml"  # the embedded default: the micro model on the digits


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


class Fingerprints:
    """What each input looks like now: files by SHA-256 (cached by size and mtime), folders by their listings' times."""

    def __init__(self) -> None:
        self._files: Dict[Tuple[str, int, int], str] = {}

    def of(self, path: str) -> Optional[str]:
        """The fingerprint of ``path`` (None when it does not exist)."""
        if os.path.isdir(path):
            # a folder of images changes by files added or removed: its own and its class folders' mtimes say so,
            # at one stat per class instead of one read per image
            folders = [path] + sorted(e.path for e in os.scandir(path) if e.is_dir())
            listing = "\n".join(f"{f} {os.stat(f).st_mtime_ns}" for f in folders)
            return "dir:" + hashlib.sha256(listing.encode()).hexdigest()
        if not os.path.isfile(path):
            return None
        stat = os.stat(path)
        key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._files:
            self._files[key] = file_sha256(path)
        return self._files[key]


@dataclass
class Step:
    """One command of the workflow, with the files it reads and writes and the config nodes it depends on.

    ``config_nodes`` are the top-level config nodes whose values the step's outputs depend on (empty for a
    command without ``--cfg``); ``config`` is the pipeline's config, whose values are recorded.
    """

    name: str
    command: List[str]
    inputs: List[str]
    outputs: List[str]
    note: str = ""  # written instead of running (a step that cannot run here)
    config_nodes: Sequence[str] = ()
    config: Optional[CfgNode] = None
    cfg_file: str = ""

    @property
    def stamp_path(self) -> str:
        """``results/accuracy/x.json`` -> ``results/accuracy/.x.json.step.json``."""
        folder, name = os.path.split(self.outputs[0])
        return os.path.join(folder, f".{name}.step.json")

    def record(self, fingerprints: Fingerprints) -> Dict[str, Any]:
        """What makes this step's outputs what they are: command line, config values, inputs."""
        values = {node: hashlib.sha256(yaml.safe_dump(_plain(self.config[node]), sort_keys=True).encode()).hexdigest()
                  for node in self.config_nodes} if self.config is not None else {}
        return {"command": self.command[1:],  # not the interpreter: another venv's python is the same step
                "config": {"file": self.cfg_file, "sha256": values},
                "inputs": {path: fingerprints.of(path) for path in self.inputs}}

    def staleness(self, fingerprints: Fingerprints, rebuilt: Set[str] = frozenset()) -> Optional[str]:
        """None when the outputs are up to date, else why the step must run.

        Args:
            fingerprints: the inputs as they are now.
            rebuilt: outputs of earlier steps that will run first (for ``--dry-run``).
        """
        for out in self.outputs:
            if not os.path.exists(out):
                return f"{out} does not exist"
            if _is_placeholder(out):
                return f"{out} records a step that could not run"
        for path in self.inputs:
            if path in rebuilt:
                return f"{path} is rebuilt by an earlier step"
        try:
            with open(self.stamp_path, encoding="utf-8") as f:
                stamp = json.load(f)
        except (OSError, ValueError):
            return "no record of a finished run"
        now = self.record(fingerprints)
        if stamp.get("command") != now["command"]:
            return "its command line changed"
        if stamp.get("config") != now["config"]:
            before = (stamp.get("config") or {}).get("sha256")
            before = before if isinstance(before, dict) else {}
            changed = [n for n in sorted(set(before) | set(now["config"]["sha256"]))
                       if before.get(n) != now["config"]["sha256"].get(n)]
            return f"config {self.cfg_file} changed in {', '.join(changed) or 'its file name'}"
        for path, print_now in now["inputs"].items():
            if stamp.get("inputs", {}).get(path) != print_now:
                return f"{path} changed"
        return None


def _plain(value: Any) -> Any:
    """Config values as plain dicts/lists (yaml.safe_dump does not take CfgNode or tuples)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


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


ONNXRUNTIME_CANNOT = ("not run: ONNX Runtime cannot run MXFP8/NVFP4 nodes (the export checks the graph on the CPU "
                      "against the fake-quantized model instead: quant/block_check.py)")


def block_format_reason(fmt: str) -> str:
    """Why a block format's steps cannot run here ("not run: ..."), or '' (not a block format, or a CUDA GPU)."""
    if fmt in BLOCK_FORMATS and not torch.cuda.is_available():
        return (f"not run: {fmt.upper()} is quantized on an NVIDIA GPU (ModelOpt's block quantizers run on CUDA only); "
                "run the pipeline with --formats on one")
    return ""


def weight_inputs(reference: str) -> List[str]:
    """The files a step's weights are fingerprinted by: a checkpoint file itself; a folder's (or a Hub snapshot's)
    config files and weight files."""
    from swin_trt.models.weight_source import is_folder_reference, resolve

    if not is_folder_reference(reference):
        return [reference]
    source = resolve(reference)
    extra = [os.path.join(source.path, n) for n in ("config.json", "preprocessor_config.json")]
    return [p for p in extra if os.path.isfile(p)] + list(source.weight_files)


def pipeline_config(args: argparse.Namespace) -> Tuple[CfgNode, str]:
    """The pipeline's config and the YAML its steps take as ``--cfg``: ``--cfg`` itself, or (for a ``--resume``
    folder without ``--cfg``) the folder's own config, written to ``<weights>/<MODEL.NAME>.yaml`` (not in a dry run)."""
    from swin_trt.config import save_config
    from swin_trt.files import make_folder
    from swin_trt.models.weight_source import is_folder_reference, weights_config

    if not (args.resume and is_folder_reference(args.resume)):
        cfg_file = args.cfg or DEFAULT_CFG
        config = get_config(cfg_file)
    elif args.cfg:
        cfg_file, config = args.cfg, weights_config(args.cfg, [], args.resume)
    else:
        config = weights_config(None, [], args.resume)
        cfg_file = os.path.join(args.weights, f"{config.MODEL.NAME}.yaml")
        if not getattr(args, "dry_run", False):
            save_config(config, os.path.join(make_folder(args.weights), os.path.basename(cfg_file)))
    check_config(config, cfg_file)
    return config, cfg_file


def plan(args: argparse.Namespace) -> List[Step]:
    """The workflow's steps in order, each with its inputs, outputs and the config nodes it reads."""
    config, cfg_file = pipeline_config(args)
    name = config.MODEL.NAME
    cfg = ["--cfg", cfg_file]
    data = args.data_path
    train_data, val_data = os.path.join(data, "train"), os.path.join(data, "val")
    weights, results = args.weights, args.results
    acc = os.path.join(results, "accuracy")
    bs = ["--batch-size", str(args.batch_size)]
    every_node = tuple(config.keys())
    # what each script reads: main.py and the evaluations never read the deployment nodes, export.py and
    # trt/benchmark.py no QUANT or TRT, swin_quant_flow.py no TRT, trt/build_engine.py only ONNX (the FP16
    # keep-list) and TRT
    pytorch_nodes = tuple(n for n in every_node if n not in DEPLOYMENT_NODES)
    export_nodes = tuple(n for n in every_node if n not in ("QUANT", "TRT"))
    quant_nodes = tuple(n for n in every_node if n != "TRT")
    build_nodes = ("ONNX", "TRT")

    def step(name: str, command: List[str], inputs: List[str], outputs: List[str], nodes: Sequence[str] = (),
             note: str = "") -> Step:
        inputs = [path for item in inputs for path in (weight_files if item == ckpt else [item])]
        return Step(name, command, inputs, outputs, note, tuple(nodes), config if nodes else None,
                    cfg_file if nodes else "")

    steps: List[Step] = []
    if args.resume:
        ckpt = args.resume
        weight_files = weight_inputs(args.resume)
    else:
        steps.append(step("data", [PY, "make_digits.py", "--output", data], [], [val_data]))
        out_dir = os.path.join(args.output, name, "default")
        ckpt = os.path.join(out_dir, "ckpt_final.pth")
        weight_files = [ckpt]
        steps.append(step("train", [PY, "main.py", *cfg, "--data-path", data, "--output", args.output,
                                    "--output-json", os.path.join(results, "train_metrics.json")],
                          [train_data, val_data], [ckpt], pytorch_nodes))
    steps.append(step("eval pytorch", [PY, "main.py", *cfg, "--data-path", data, "--eval", "--resume", ckpt,
                                       "--disable-amp", "--output", args.output, *bs,
                                       "--output-json", os.path.join(acc, "pytorch_fp32.json")],
                      [ckpt, val_data], [os.path.join(acc, "pytorch_fp32.json")], pytorch_nodes))
    formats = list(args.formats or [config.QUANT.FORMAT])  # the quantized graphs to make
    onnx = {p: os.path.join(weights, f"{name}_{p}.onnx") for p in ["fp32", "fp16"] + formats}
    for precision in ("fp32", "fp16"):
        steps.append(step(f"export {precision}", [PY, "export.py", *cfg, "--resume", ckpt, "--dynamic-batch",
                                                  "--precision", precision, "--output", onnx[precision]],
                          [ckpt], [onnx[precision]], export_nodes))
    quant_metrics = {}  # the fake-quantized PTQ and QAT accuracy of each format
    for i, fmt in enumerate(formats):
        quant_metrics[fmt] = os.path.join(results, "quant_metrics.json" if i == 0 else f"quant_metrics_{fmt}.json")
        flag = [] if fmt == config.QUANT.FORMAT else ["--format", fmt]
        steps.append(step("quantize (calibrate + QAT)" if i == 0 else f"quantize {fmt} (calibrate + QAT)",
                          [PY, "swin_quant_flow.py", *cfg, "--resume", ckpt, "--data-path", data, "--quantize", *flag,
                           "--dynamic-batch", "--output", weights, *bs, "--output-json", quant_metrics[fmt]],
                          [ckpt, train_data, val_data], [onnx[fmt], quant_metrics[fmt]], quant_nodes,
                          note=block_format_reason(fmt)))
    sensitivity = os.path.join(results, "sensitivity.json")  # each placement row's harm, for the report
    calibrated = default_paths(config, config.QUANT.FORMAT, weights)["ptq"]  # the quantize step's: reused when it fits
    steps.append(step("sensitivity by row", [PY, "swin_quant_flow.py", *cfg, "--resume", ckpt, "--data-path", data,
                                             "--sensitivity", "--calibrated", calibrated, *bs, "--output-json",
                                             sensitivity],
                      [ckpt, calibrated, train_data, val_data], [sensitivity], quant_nodes))
    precisions = ["fp32", "fp16"] + formats
    for precision in precisions:
        out = os.path.join(acc, f"onnxrt_{precision}.json")
        steps.append(step(f"eval onnxrt {precision}", [PY, "trt/eval_onnxrt.py", *cfg, "--resume", onnx[precision],
                                                       "--data-path", data, *bs, "--output-json", out],
                          [onnx[precision], val_data], [out], pytorch_nodes,
                          note=ONNXRUNTIME_CANNOT if precision in BLOCK_FORMATS else ""))
    build_reason = tensorrt_builder_available()
    trt_reason = build_reason or tensorrt_runtime_available()
    made = [onnx[p] for p in precisions if not block_format_reason(p)]
    plans = os.path.join(results, "precision_plan.json")
    steps.append(step("precision plans", [PY, "trt/inspect_engine.py", "--compare", *made, "--output-json", plans],
                      made, [plans], note=build_reason or ""))
    engines = {}
    for precision in precisions:
        engines[precision] = os.path.join(weights, f"{name}_{precision}.engine")
        steps.append(step(f"build engine {precision}", [PY, "trt/build_engine.py", *cfg, "--onnx-file", onnx[precision],
                                                        "--trt-engine", engines[precision], "--mode", precision,
                                                        "--min-batch", "1", "--opt-batch", str(args.batch_size),
                                                        "--max-batch", str(max(256, args.batch_size))],
                          [onnx[precision]], [engines[precision]], build_nodes,
                          note=build_reason or block_format_reason(precision)))
    trt_results = {p: os.path.join(acc, f"tensorrt_{p}.json") for p in precisions}
    for precision in precisions:
        steps.append(step(f"eval tensorrt {precision}", [PY, "trt/eval_trt.py", "--eval", *cfg, "--resume",
                                                         engines[precision], "--data-path", data, *bs,
                                                         "--compare-checkpoint", ckpt, "--output-json",
                                                         trt_results[precision]],
                          [engines[precision], ckpt, val_data], [trt_results[precision]], pytorch_nodes,
                          note=trt_reason or block_format_reason(precision)))
    bench = os.path.join(results, "benchmark.json")
    backends = pipeline_backends(torch.cuda.is_available(), trt_reason is None)
    benched = [p for p in precisions if p not in BLOCK_FORMATS]  # ONNX Runtime cannot run the block formats
    bench_cmd = [PY, "trt/benchmark.py", *cfg, "--resume", ckpt, "--backends", *backends,
                 "--precisions", *benched, "--batch-sizes", *map(str, args.bench_batches),
                 "--max-seconds", str(args.bench_seconds),
                 "--output-json", bench, "--output-md", os.path.join(results, "benchmark.md")]
    bench_inputs = [ckpt] + [onnx[p] for p in benched]
    for precision in benched:
        bench_cmd += ["--onnx", f"{precision}={onnx[precision]}"]
        if trt_reason is None:
            bench_cmd += ["--engine", f"{precision}={engines[precision]}"]
            bench_inputs.append(engines[precision])
    steps.append(step("benchmark", bench_cmd, bench_inputs, [bench], export_nodes))
    accuracy = [os.path.join(acc, "pytorch_fp32.json")] + [os.path.join(acc, f"onnxrt_{p}.json") for p in precisions]
    accuracy += list(trt_results.values())
    steps.append(step("report", [PY, "report.py", "--results", results, "--title", f"{name} deployment report",
                                 "--cfg", cfg_file, "--checkpoint", ckpt],
                      accuracy + list(quant_metrics.values()) + [sensitivity, plans, bench, ckpt],
                      [os.path.join(results, "report.md"), os.path.join(results, "accuracy_vs_speed.png")]))
    return steps


def first_writes(steps: List[Step], args: argparse.Namespace) -> List[Tuple[str, int]]:
    """``(path, bytes)`` of the first large file each output folder of the steps that will run gets: the training
    checkpoint (weights and optimizer state) and the FP32 ONNX file (the weights again), computed from the model.
    Steps that are up to date write nothing and are not counted."""
    from swin_trt.training.checkpoints import checkpoint_bytes

    config = next(s.config for s in steps if s.config is not None)
    fingerprints = Fingerprints()
    found = []
    for step in steps:
        if step.note or (step.name not in args.force and step.staleness(fingerprints) is None):
            continue
        if step.name == "train":
            found.append((os.path.join(args.output, config.MODEL.NAME, "default", "ckpt_epoch_0.pth"),
                          checkpoint_bytes(config)))
        elif step.name == "export fp32":
            found.append((step.outputs[0], checkpoint_bytes(config, with_optimizer=False)))
    return found


def run(steps: List[Step], force: List[str], dry_run: bool = False) -> List[dict]:
    """Run each step that is not up to date (see the module docstring); with ``dry_run`` only say which and why.

    Raises:
        UserError: ``force`` names no step of ``steps``, or a step failed.
    """
    unknown = [name for name in force if name not in {s.name for s in steps}]
    if unknown:
        raise UserError(f"--force names {', '.join(map(repr, unknown))}, not a step of this pipeline: use one of "
                        f"{', '.join(repr(s.name) for s in steps)}.")
    summary = []
    fingerprints = Fingerprints()
    rebuilt: Set[str] = set()  # outputs of steps that would run, for the dry run
    for i, step in enumerate(steps, 1):
        head = f"[{i}/{len(steps)}] {step.name}"
        if step.note:
            print(f"{head}: {step.note}", flush=True)
            if not dry_run:
                for out in step.outputs:
                    if out.endswith(".json"):
                        write_json(out, {"status": step.note})
            summary.append({"step": step.name, "status": step.note.split(":")[0], "seconds": 0.0})
            continue
        reason = "--force" if step.name in force else step.staleness(fingerprints, rebuilt)
        if reason is None:
            print(f"{head}: up to date, skipped", flush=True)
            summary.append({"step": step.name, "status": "skipped (up to date)", "seconds": 0.0})
            continue
        if dry_run:
            print(f"{head}: would run ({reason})", flush=True)
            summary.append({"step": step.name, "status": f"would run: {reason}", "seconds": 0.0})
            rebuilt.update(step.outputs)
            continue
        print(f"{head}: {' '.join(step.command[1:])}\n    (runs because {reason})", flush=True)
        if os.path.exists(step.stamp_path):
            os.remove(step.stamp_path)  # outputs half-replaced by a failed run must not look finished
        start = time.perf_counter()
        proc = subprocess.run(step.command)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise UserError(f"step '{step.name}' failed (exit {proc.returncode}); fix the cause above and rerun the same command to continue from it.")
        stamp = {"step": step.name, **step.record(fingerprints), "outputs": step.outputs,
                 "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        write_json(step.stamp_path, stamp)
        summary.append({"step": step.name, "status": "done", "seconds": round(seconds, 1)})
    return summary
