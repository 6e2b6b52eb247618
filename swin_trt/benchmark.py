"""Throughput of a model in every backend: PyTorch eager and compiled, ONNX Runtime, TensorRT engines; a cell per batch size."""
from __future__ import annotations

import csv
import io
import logging
import os
import tempfile
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from swin_trt.errors import UserError
from swin_trt.files import require_file
from swin_trt.timing import cpu_median_ms, cuda_images_per_s

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


def cell_images_per_s(run: Callable[[], Any], batch: int, device: torch.device, warmup: int, iters: int, repeats: int,
                      max_seconds: float) -> float:
    """images/s of one cell: CUDA events around ``iters`` back-to-back calls, median of ``repeats``
    (swin_trt/timing.py) on a GPU; the median call time on the CPU."""
    if device.type == "cuda":
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

    from swin_trt.onnx_tools.export import export_onnx
    from swin_trt.onnx_tools.graph import lean_graph

    path = os.path.join(folder, f"{config.MODEL.NAME}_fp32.onnx")
    if not os.path.isfile(path):
        graph = export_onnx(model.cpu(), path, config.DATA.IMG_SIZE, batch_size=1, dynamic_batch=True,
                            opset=config.ONNX.OPSET)
        onnx.save(lean_graph(graph), path)
    if precision == "fp32":
        return path
    try:
        from swin_trt.onnx_tools.fp16 import convert_to_fp16

        converted = convert_to_fp16(onnx.load(path), list(config.ONNX.FP16_KEEP_FP32_OPS))
    except ImportError as err:
        raise UserError(f"FP16 conversion is not available here ({err}): pass --onnx fp16=FILE.") from None
    fp16_path = os.path.join(folder, f"{config.MODEL.NAME}_fp16.onnx")
    onnx.save(converted, fp16_path)
    return fp16_path


def ort_runner(path: str) -> Tuple[Runner, str]:
    """ONNX Runtime session over ``path``; returns the runner and the provider it got."""
    from swin_trt.onnx_tools.runtime import OrtPredictor

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
    from swin_trt.trt.metadata import read_metadata

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
    from swin_trt.models import build_model, load_weights

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
                        from swin_trt.trt.engine import TRTEngine

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


def benchmark_config(cfg_file: Optional[str], opts: Sequence[str], onnx_files: Dict[str, str], engines: Dict[str, str],
                     pytorch_backends: Sequence[str] = ()):
    """The benchmark's config: ``cfg_file`` checked against every file's recorded preprocessing, or, without it,
    made from the first record (PyTorch backends need ``cfg_file``: the record has no architecture).

    Raises:
        UserError: a file records other images than the config, or there is neither a config nor a record.
    """
    from swin_trt.contract import Preprocessing, read_onnx_contract, resolve_config
    from swin_trt.trt.metadata import read_metadata

    if not cfg_file and pytorch_backends:
        raise UserError(f"--backends {' '.join(sorted(pytorch_backends))} run the PyTorch model, whose architecture only "
                        "the config describes: pass --cfg.")
    records = []
    for path in onnx_files.values():
        require_file(path, "ONNX file", "pass --onnx PRECISION=FILE with a file written by export.py")
        records.append((f"ONNX file {path}", read_onnx_contract(path)))
    for path in engines.values():
        record = (read_metadata(path) or {}).get("preprocessing")
        records.append((f"engine {path}", Preprocessing.from_dict(record) if record else None))
    if cfg_file:
        config = resolve_config(cfg_file, opts, None, cfg_file)
        for source, contract in records:
            if contract is not None:
                contract.check_config(config, source, cfg_file)
        return config
    found = [(source, contract) for source, contract in records if contract is not None]
    if not found:
        raise UserError("no --cfg and no --onnx/--engine file that records its preprocessing: pass --cfg.")
    source, contract = found[0]
    return resolve_config(None, opts, contract, source)
