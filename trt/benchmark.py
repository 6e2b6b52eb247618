"""Throughput table: rows batch 1, 16, 64, 256; a column per backend and precision.

    python trt/benchmark.py --cfg configs/swin_tiny_patch4_window7_224.yaml --backends eager compile ort
    python trt/benchmark.py --cfg configs/swin_tiny_patch4_window7_224.yaml --backends trt \
        --engine fp16=weights/swin_tiny_fp16.engine --engine int8=weights/swin_tiny_int8.engine

Backends: ``trt`` (engines given with ``--engine PRECISION=FILE``), ``ort``
(ONNX Runtime with its best provider here; ``--onnx PRECISION=FILE``, or the
config's model exported on the fly for fp32), ``eager`` (PyTorch; fp16 is
autocast) and ``compile`` (``torch.compile`` of the same). Weights are random
unless ``--resume`` names a checkpoint: speed does not depend on them.
Inputs are random tensors already on the device, so the table measures the
model, not the data pipeline. On a GPU a cell is the median of ``--repeats``
CUDA-event timings of ``--iters`` back-to-back calls (benchmarks/timing.py);
on the CPU the median wall-clock time of single calls. The table is printed as
markdown and written as CSV/JSON/markdown on request, and for every engine
the equivalent ``trtexec`` command line is printed (trtexec reports
``Throughput: X qps`` in batches per second: images/s = X * batch).
"""
from __future__ import annotations

import argparse
import csv
import datetime
import io
import logging
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ""):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import torch

from utils import UserError, atomic_write_bytes, create_logger, run_main, write_json

_LOG = logging.getLogger("swin")
BATCH_SIZES = (1, 16, 64, 256)
BACKENDS = ("trt", "ort", "eager", "compile")
LABELS = {"trt": "TensorRT", "ort": "ONNX Runtime", "eager": "PyTorch eager", "compile": "torch.compile"}

Runner = Callable[[torch.Tensor], Any]


def parse_assignments(items: Sequence[str], flag: str) -> Dict[str, str]:
    """``["fp16=a.engine", "int8=b.engine"]`` -> ``{"fp16": "a.engine", "int8": "b.engine"}``."""
    out = {}
    for item in items:
        precision, sep, path = item.partition("=")
        if not sep or not precision or not path:
            raise UserError(f"{flag} {item!r} is not PRECISION=FILE: write e.g. {flag} fp16=weights/swin_tiny_fp16.engine.")
        out[precision] = path
    return out


def cpu_median_ms(run: Callable[[], Any], warmup: int, iters: int, max_seconds: float = 30.0) -> float:
    """Median wall-clock milliseconds of ``run()`` over ``iters`` calls, stopping after ``max_seconds``
    once 3 calls are timed (a CPU cell of Swin-T at batch 256 takes seconds per call)."""
    for _ in range(warmup):
        run()
    times: List[float] = []
    start = time.perf_counter()
    while len(times) < max(iters, 1):
        if len(times) >= 3 and time.perf_counter() - start > max_seconds:
            break
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def cell_images_per_s(run: Callable[[], Any], batch: int, device: torch.device, warmup: int, iters: int, repeats: int,
                      max_seconds: float) -> float:
    """images/s of one cell: CUDA events around ``iters`` back-to-back calls, median of ``repeats``
    (benchmarks/timing.py) on a GPU; the median call time on the CPU."""
    if device.type == "cuda":
        from benchmarks.timing import cuda_images_per_s

        return cuda_images_per_s(run, batch, warmup, iters, repeats)
    return batch / (cpu_median_ms(run, min(warmup, 2), iters, max_seconds) / 1e3)


def torch_runner(model: torch.nn.Module, precision: str, compiled: bool, compile_mode: str) -> Runner:
    """PyTorch forward in fp32, or fp16 under autocast (CUDA only); optionally ``torch.compile``-d."""
    if precision not in ("fp32", "fp16"):
        raise UserError(f"PyTorch rows take fp32 or fp16, not {precision!r}: INT8/FP8 speed is a TensorRT question.")
    if compiled:
        torch._dynamo.reset()  # a fresh cache per column: 4 batch sizes x precisions must not hit the recompile limit
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 16)
    forward = torch.compile(model, mode=compile_mode, dynamic=False) if compiled else model
    use_amp = precision == "fp16"

    @torch.no_grad()
    def run(images: torch.Tensor):
        with torch.autocast(device_type=images.device.type, dtype=torch.float16, enabled=use_amp):
            return forward(images)

    return run


def export_for_ort(model: torch.nn.Module, config, folder: str, precision: str) -> str:
    """The model as a dynamic-batch ONNX file in ``folder`` (for ORT columns without ``--onnx``).

    fp16 goes through onnx_tools/fp16.py, which needs ModelOpt.
    """
    import onnx

    from onnx_tools.export import export_onnx
    from onnx_tools.graph import lean_graph

    path = os.path.join(folder, f"{config.MODEL.NAME}_fp32.onnx")
    if not os.path.isfile(path):
        graph = export_onnx(model.cpu(), path, config.DATA.IMG_SIZE, batch_size=1, dynamic_batch=True,
                            opset=config.ONNX.OPSET)
        onnx.save(lean_graph(graph), path)
    if precision == "fp32":
        return path
    try:
        from onnx_tools.fp16 import convert_to_fp16

        converted = convert_to_fp16(onnx.load(path), list(config.ONNX.FP16_KEEP_FP32_OPS))
    except ImportError as err:
        raise UserError(f"FP16 conversion is not available here ({err}): pass --onnx fp16=FILE.") from None
    fp16_path = os.path.join(folder, f"{config.MODEL.NAME}_fp16.onnx")
    onnx.save(converted, fp16_path)
    return fp16_path


def ort_runner(path: str) -> Tuple[Runner, str]:
    """ONNX Runtime session over ``path``; returns the runner and the provider it got."""
    from onnx_tools.runtime import OrtPredictor

    predictor = OrtPredictor(path)
    provider = predictor.providers[0].replace("ExecutionProvider", "")

    def run(images: torch.Tensor):
        return predictor.run(images.cpu().numpy())

    return run, provider


def trtexec_command(engine_file: str, batch: int, input_name: str, shape: Sequence[int],
                    tensorrt_version: Optional[str] = None) -> str:
    """The ``trtexec`` line that times ``engine_file`` at ``batch`` (no host copies, CUDA graph, spin wait).

    TensorRT 10's trtexec needs ``--useCudaGraph --noDataTransfers --useSpinWait`` for that; TensorRT 11 made
    them the defaults and the flags deprecated no-ops (its ``samples/common/sampleOptions.cpp``), so they are
    left out for an engine built with 11 or later.
    """
    dims = "x".join(str(d) for d in [batch] + list(shape))
    major = int(tensorrt_version.split(".")[0]) if tensorrt_version and tensorrt_version[0].isdigit() else 10
    flags = "" if major >= 11 else " --useCudaGraph --noDataTransfers --useSpinWait"
    return f"trtexec --loadEngine={engine_file} --shapes={input_name}:{dims}{flags} --warmUp=500 --duration=10"


def engine_io(engine_file: str, config) -> Tuple[str, List[int], Optional[Tuple[int, int]]]:
    """Input name, per-image shape and batch range of an engine, from its metadata JSON (no GPU needed)."""
    from trt.metadata import read_metadata

    meta = read_metadata(engine_file) or {}
    for name, shapes in (meta.get("shapes") or {}).items():
        return name, list(shapes["opt"][1:]), (shapes["min"][0], shapes["max"][0])
    return "input", [3, config.DATA.IMG_SIZE, config.DATA.IMG_SIZE], None


def format_markdown(results: List[Dict[str, Any]], batch_sizes: Sequence[int]) -> str:
    """Rows = batch sizes, columns = ``column`` of the results, cells = images/s (or the note)."""
    columns = list(dict.fromkeys(r["column"] for r in results))
    cell = {(r["column"], r["batch"]): r for r in results}
    lines = ["| batch | " + " | ".join(columns) + " |", "|---:|" + "---:|" * len(columns)]
    for batch in batch_sizes:
        values = []
        for column in columns:
            r = cell.get((column, batch))
            if r is None:
                values.append("")
            elif r.get("images_per_s"):
                rate = r["images_per_s"]
                values.append(f"{rate:.0f}" if rate >= 10 else f"{rate:.1f}")
            else:
                values.append(r.get("note", ""))
        lines.append(f"| {batch} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def format_csv(results: List[Dict[str, Any]]) -> str:
    keys = ["column", "backend", "precision", "batch", "images_per_s", "ms_per_batch", "device", "note"]
    out = io.StringIO()
    writer = csv.DictWriter(out, keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(results)
    return out.getvalue()


def run_benchmark(config, backends: Sequence[str], precisions: Sequence[str], batch_sizes: Sequence[int],
                  engines: Dict[str, str], onnx_files: Dict[str, str], checkpoint: Optional[str] = None,
                  warmup: int = 10, iters: int = 30, repeats: int = 5, compile_mode: str = "default",
                  cuda_graph: bool = False, device: Optional[str] = None,
                  max_seconds: float = 30.0) -> List[Dict[str, Any]]:
    """Time every (backend, precision) at every batch size; returns one dict per cell."""
    from models import build_model, load_weights

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = build_model(config)
    if checkpoint:
        load_weights(model, checkpoint)
    model.eval()
    shape = (3, config.DATA.IMG_SIZE, config.DATA.IMG_SIZE)
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    results: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            plan = sorted(engines.items()) if backend == "trt" else [(p, None) for p in precisions]
            for precision, engine_file in plan:
                column, runner, input_dtype, run_device, limits, note = None, None, torch.float32, dev, None, ""
                try:
                    if backend in ("eager", "compile"):
                        run_model = model.to(dev).float()
                        runner = torch_runner(run_model, precision, backend == "compile", compile_mode)
                        column = f"{LABELS[backend]} {precision}" + (" (autocast)" if precision == "fp16" else "")
                    elif backend == "ort":
                        path = onnx_files.get(precision)
                        if path is None and precision in ("fp32", "fp16"):
                            path = export_for_ort(model, config, tmp, precision)
                        if path is None:
                            raise UserError(f"no ONNX file for ort {precision}: pass --onnx {precision}=FILE.")
                        runner, provider = ort_runner(path)
                        run_device = dev if provider == "CUDA" else torch.device("cpu")
                        column = f"{LABELS[backend]} {provider} {precision}"
                        model.to(dev)
                    else:
                        from trt.engine import TRTEngine

                        engine = TRTEngine(engine_file, cuda_graph=cuda_graph)
                        input_dtype, run_device, limits = engine.inputs[0].dtype, engine.device, engine.batch_range
                        runner = lambda x, e=engine: e(x, split=False)  # noqa: E731
                        column = f"{LABELS[backend]} {precision}"
                except UserError as err:
                    column = column or f"{LABELS[backend]} {precision}"
                    note = str(err)
                    _LOG.warning("%s: %s", column, note)
                for batch in batch_sizes:
                    row = {"column": column, "backend": backend, "precision": precision, "batch": batch,
                           "device": device_name if run_device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"}
                    if runner is None:
                        results.append(dict(row, note="n/a", reason=note))
                        continue
                    if limits and not limits[0] <= batch <= limits[1]:
                        results.append(dict(row, note="outside profile"))
                        continue
                    images = torch.randn((batch,) + shape, device=run_device).to(input_dtype)
                    try:
                        rate = cell_images_per_s(lambda: runner(images), batch, run_device, warmup, iters, repeats,
                                                 max_seconds)
                    except torch.cuda.OutOfMemoryError:
                        torch.cuda.empty_cache()
                        results.append(dict(row, note="out of memory"))
                        continue
                    results.append(dict(row, ms_per_batch=batch / rate * 1e3, images_per_s=rate))
                    _LOG.info("%s batch %d: %.0f images/s", column, batch, results[-1]["images_per_s"])
    return results


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg", required=True, help="config YAML of the model")
    parser.add_argument("--resume", help="checkpoint (random weights when omitted)")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=["eager", "compile", "ort"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "fp16"], help="for the ort/eager/compile columns")
    parser.add_argument("--engine", action="append", default=[], help="PRECISION=FILE, a TensorRT engine (repeatable)")
    parser.add_argument("--onnx", action="append", default=[], help="PRECISION=FILE for the ort columns (repeatable)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=list(BATCH_SIZES))
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls per cell (at most 2 on the CPU)")
    parser.add_argument("--iters", type=int, default=30, help="timed calls per repeat (GPU) or per cell (CPU)")
    parser.add_argument("--repeats", type=int, default=5, help="GPU: the median of this many timings")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="CPU: stop a cell after this long (3 calls at least)")
    parser.add_argument("--compile-mode", default="default", help="torch.compile mode (default, max-autotune, ...)")
    parser.add_argument("--cuda-graph", action="store_true", help="TensorRT engines replay CUDA graphs")
    parser.add_argument("--device", help="cuda or cpu (default: cuda when present)")
    parser.add_argument("--opts", nargs="+", default=[], help="config overrides, KEY VALUE pairs")
    parser.add_argument("--output-json", help="cells and context as JSON")
    parser.add_argument("--output-csv", help="cells as CSV")
    parser.add_argument("--output-md", help="the markdown table")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    create_logger()
    from config import get_config

    config = get_config(args.cfg, args.opts)
    engines = parse_assignments(args.engine, "--engine")
    if "trt" in args.backends and not engines:
        raise UserError("--backends trt needs at least one --engine PRECISION=FILE.")
    if engines and "trt" not in args.backends:
        args.backends = list(args.backends) + ["trt"]
    results = run_benchmark(config, args.backends, args.precisions, args.batch_sizes, engines,
                            parse_assignments(args.onnx, "--onnx"), args.resume, args.warmup, args.iters,
                            args.repeats, args.compile_mode, args.cuda_graph, args.device, args.max_seconds)
    devices = sorted({r["device"] for r in results})
    date = datetime.date.today().isoformat()
    table = format_markdown(results, args.batch_sizes)
    header = (f"{config.MODEL.NAME}, images/s (median), {', '.join(devices)}, torch {torch.__version__}, {date}; "
              f"weights {'from ' + args.resume if args.resume else 'random'}")
    print(header)
    print(table)
    from trt.metadata import read_metadata

    for precision, engine_file in sorted(engines.items()):
        name, shape, limits = engine_io(engine_file, config)
        meta = read_metadata(engine_file) or {}
        if meta.get("backend") == "tensorrt_rtx":
            print(f"# {precision}: {engine_file} is a TensorRT-RTX engine; trtexec (full TensorRT) cannot load it")
            continue
        for batch in args.batch_sizes:
            if limits is None or limits[0] <= batch <= limits[1]:
                line = trtexec_command(engine_file, batch, name, shape, meta.get("version"))
                print(f"# {precision} batch {batch}: {line}")
    if args.output_md:
        atomic_write_bytes(args.output_md, (header + "\n\n" + table + "\n").encode())
    if args.output_csv:
        atomic_write_bytes(args.output_csv, format_csv(results).encode())
    if args.output_json:
        write_json(args.output_json, {"model": config.MODEL.NAME, "date": date, "torch": torch.__version__,
                                      "devices": devices, "weights": args.resume or "random",
                                      "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "results": results})


if __name__ == "__main__":
    run_main(main)
