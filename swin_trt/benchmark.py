"""Throughput of a model in every backend: PyTorch eager and compiled, ONNX Runtime, TensorRT engines; a cell per batch size."""
from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from swin_trt.errors import UserError
from swin_trt.files import require_file
from swin_trt.out_of_memory import is_out_of_memory, out_of_memory_error, release_cached_memory
from swin_trt.timing import cpu_median_ms, cuda_images_per_s

_LOG = logging.getLogger("swin")


BATCH_SIZES = (1, 16, 64, 256)


BACKENDS = ("trt", "ort", "eager", "compile")


LABELS = {"trt": "TensorRT", "ort": "ONNX Runtime", "eager": "PyTorch eager", "compile": "torch.compile"}


PYTORCH_BACKENDS = ("eager", "compile")


Runner = Callable[[torch.Tensor], Any]


def pipeline_backends(cuda_available: bool, tensorrt_runtime: bool) -> List[str]:
    """The backends the pipeline's benchmark step measures on this machine.

    PyTorch eager and ONNX Runtime (with its best provider: :func:`onnx_tools.runtime.default_providers`) always;
    ``torch.compile`` on a GPU only: on a CPU, inductor's C++ compile of every batch size costs more than the rest of
    the default run (``trt/benchmark.py --backends compile`` measures it when wanted); TensorRT where a runtime can
    run engines.
    """
    return ["eager"] + (["compile"] if cuda_available else []) + ["ort"] + (["trt"] if tensorrt_runtime else [])


def pytorch_skip_reason(precision: str, device_type: str) -> Optional[str]:
    """Why a PyTorch (eager or compiled) row at ``precision`` is not measured on ``device_type``, or None.

    PyTorch rows are FP32 and FP16 (autocast); FP16 autocast on a CPU runs emulated half-precision kernels, slower
    than FP32 and unlike any deployment, so it is not measured there.
    """
    if precision not in ("fp32", "fp16"):
        return f"PyTorch rows are FP32 and FP16: {precision.upper()} speed is the Q/DQ graph's (ONNX Runtime, TensorRT)"
    if precision == "fp16" and device_type != "cuda":
        return "CPU autocast FP16 says nothing about a deployment"
    return None


def row_label(backend: str, precision: str, provider: Optional[str] = None) -> str:
    """``PyTorch eager FP16 (autocast)``, ``ONNX Runtime (CUDA provider) INT8``, ``TensorRT FP16``, ..."""
    label = f"{LABELS[backend]}" + (f" ({provider} provider)" if provider else "") + f" {precision.upper()}"
    return label + (" (autocast)" if backend in PYTORCH_BACKENDS and precision == "fp16" else "")


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


def ort_provider(providers: Sequence[str]) -> str:
    """``CUDA`` or ``CPU``: the first (preferred) provider of a session, without ONNX Runtime's suffix."""
    return providers[0].replace("ExecutionProvider", "")


def ort_runner(path: str) -> Tuple[Runner, str, torch.device, torch.dtype]:
    """ONNX Runtime session over ``path`` fed through an I/O binding, so images already on the provider's device are
    read in place (no host round trip on a GPU).

    Returns:
        the runner (returns the output as an ``OrtValue`` where the provider left it), the provider, the device the
        images must be on and their dtype.
    """
    from swin_trt.onnx_tools.runtime import OrtPredictor

    predictor = OrtPredictor(path)
    provider = ort_provider(predictor.providers)
    session, binding = predictor.session, predictor.session.io_binding()
    if provider == "CUDA":
        options = session.get_provider_options().get("CUDAExecutionProvider", {})
        device = torch.device("cuda", int(options.get("device_id", 0)))
    else:
        device = torch.device("cpu")
    dtype = torch.from_numpy(np.zeros(0, predictor.input_dtype)).dtype

    def run(images: torch.Tensor):
        images = images.contiguous()
        if device.type == "cuda":  # ONNX Runtime reads on its own stream: torch's writes must be done
            torch.cuda.current_stream(device).synchronize()
        binding.bind_input(predictor.input_name, device.type, device.index or 0, predictor.input_dtype,
                           list(images.shape), images.data_ptr())
        binding.bind_output(predictor.output_name, device.type, device.index or 0)
        session.run_with_iobinding(binding)
        return binding.get_outputs()[0]

    return run, provider, device, dtype


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


@dataclasses.dataclass
class _Timed:
    """What one row times: the runner, the device and dtype of its input, the provider (ORT) and batch range (TensorRT)."""

    run: Runner
    device: torch.device
    dtype: torch.dtype = torch.float32
    provider: Optional[str] = None
    limits: Optional[Tuple[int, int]] = None


def _timed(backend: str, precision: str, engine_file: Optional[str], model: torch.nn.Module, config, dev: torch.device,
           onnx_files: Dict[str, str], tmp: str, compile_mode: str, cuda_graph: bool) -> _Timed:
    """The runner of one row. Raises UserError when the row cannot run here (no file, no GPU, ...)."""
    if backend in PYTORCH_BACKENDS:
        return _Timed(torch_runner(model.to(dev).float(), precision, backend == "compile", compile_mode), dev)
    if backend == "ort":
        path = onnx_files.get(precision)
        if path is None and precision in ("fp32", "fp16"):
            path = export_for_ort(model, config, tmp, precision)
        if path is None:
            raise UserError(f"no ONNX file for ort {precision}: pass --onnx {precision}=FILE.")
        run, provider, device, dtype = ort_runner(path)
        return _Timed(run, device, dtype, provider)
    from swin_trt.trt.engine import TRTEngine

    engine = TRTEngine(engine_file, cuda_graph=cuda_graph)
    return _Timed(lambda x: engine(x, split=False), engine.device, engine.inputs[0].dtype, limits=engine.batch_range)


def run_benchmark(config, backends: Sequence[str], precisions: Sequence[str], batch_sizes: Sequence[int],
                  engines: Dict[str, str], onnx_files: Dict[str, str], checkpoint: Optional[str] = None,
                  warmup: int = 10, iters: int = 30, repeats: int = 5, compile_mode: str = "default",
                  cuda_graph: bool = False, device: Optional[str] = None,
                  max_seconds: float = 30.0) -> List[Dict[str, Any]]:
    """Time every (backend, precision) at every batch size.

    Returns one dict per cell; a row that cannot run here (or means nothing here: :func:`pytorch_skip_reason`) is
    one dict with ``batch`` None and the reason. PyTorch is not asked for INT8/FP8 rows (logged, no dict). A batch
    that runs out of GPU memory is one cell with ``out_of_memory`` True and the sentence as ``reason``; the row's
    larger batch sizes are not tried (their columns stay empty).
    """
    from swin_trt.models import build_model, load_weights

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = build_model(config)
    if checkpoint:
        load_weights(model, checkpoint)
    model.eval()
    shape = (3, config.DATA.IMG_SIZE, config.DATA.IMG_SIZE)
    cpu_name = f"CPU ({os.cpu_count()} cores)"
    results: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            plan = sorted(engines.items()) if backend == "trt" else [(p, None) for p in precisions]
            for precision, engine_file in plan:
                why_not = pytorch_skip_reason(precision, dev.type) if backend in PYTORCH_BACKENDS else None
                if why_not and precision not in ("fp32", "fp16"):
                    _LOG.info("%s %s: not measured (%s)", LABELS[backend], precision, why_not)
                    continue
                timed, means_nothing_here = None, why_not is not None
                out_of_memory = None
                if why_not is None:
                    try:
                        timed = _timed(backend, precision, engine_file, model, config, dev, onnx_files, tmp,
                                       compile_mode, cuda_graph)
                    except UserError as err:
                        why_not = str(err)
                    except Exception as err:  # out of GPU memory while loading the model or the engine
                        if not is_out_of_memory(err):
                            raise
                        out_of_memory = err
                column = row_label(backend, precision, timed.provider if timed else None)
                row = {"column": column, "backend": backend, "precision": precision}
                if out_of_memory is not None:
                    results.append(_out_of_memory_cell(row, batch_sizes[0], out_of_memory, column))
                    continue
                if timed is None:  # a row that means nothing here is expected; one that cannot run is a warning
                    _LOG.log(logging.INFO if means_nothing_here else logging.WARNING, "%s: not measured: %s", column,
                             why_not)
                    results.append(dict(row, batch=None, note="not measured", reason=why_not))
                    continue
                row["device"] = torch.cuda.get_device_name(timed.device) if timed.device.type == "cuda" else cpu_name
                if timed.provider:
                    row["provider"] = timed.provider
                for batch in batch_sizes:
                    cell = dict(row, batch=batch)
                    if timed.limits and not timed.limits[0] <= batch <= timed.limits[1]:
                        results.append(dict(cell, note="outside profile"))
                        continue
                    try:
                        images = torch.randn((batch,) + shape, device=timed.device).to(timed.dtype)
                        rate = cell_images_per_s(lambda: timed.run(images), batch, timed.device, warmup, iters,
                                                 repeats, max_seconds)
                    except Exception as err:  # out of GPU memory: this cell and the row's larger batches are not run
                        if not is_out_of_memory(err):
                            raise
                        results.append(_out_of_memory_cell(row, batch, err, column))
                        break
                    results.append(dict(cell, ms_per_batch=batch / rate * 1e3, images_per_s=rate))
                    _LOG.info("%s batch %d: %.0f images/s", column, batch, rate)
    return results


def _out_of_memory_cell(row: Dict[str, Any], batch: int, err: BaseException, column: str) -> Dict[str, Any]:
    """The one ``not run`` cell of a row that ran out of GPU memory at ``batch`` (its sentence as ``reason``)."""
    release_cached_memory()
    sentence = str(out_of_memory_error(err, batch, "--batch-sizes"))
    _LOG.error("%s: %s", column, sentence)
    return dict(row, batch=batch, note=f"not run: out of GPU memory at batch {batch}", reason=sentence,
                out_of_memory=True)


def benchmark_config(cfg_file: Optional[str], opts: Sequence[str], onnx_files: Dict[str, str], engines: Dict[str, str],
                     pytorch_backends: Sequence[str] = (), weights: Optional[str] = None):
    """The benchmark's config: ``cfg_file`` (or the config a ``weights`` folder carries) checked against every file's
    recorded preprocessing, or, without either, made from the first record (PyTorch backends need a config: the
    record has no architecture).

    Raises:
        UserError: a file records other images than the config, or there is neither a config nor a record.
    """
    from swin_trt.contract import Preprocessing, read_onnx_contract, resolve_config
    from swin_trt.models.weight_source import is_folder_reference, weights_config
    from swin_trt.trt.metadata import read_metadata

    own = bool(weights) and is_folder_reference(weights)
    if not cfg_file and not own and pytorch_backends:
        raise UserError(f"--backends {' '.join(sorted(pytorch_backends))} run the PyTorch model, whose architecture only "
                        "the config describes: pass --cfg.")
    records = []
    for path in onnx_files.values():
        require_file(path, "ONNX file", "pass --onnx PRECISION=FILE with a file written by export.py")
        records.append((f"ONNX file {path}", read_onnx_contract(path)))
    for path in engines.values():
        record = (read_metadata(path) or {}).get("preprocessing")
        records.append((f"engine {path}", Preprocessing.from_dict(record) if record else None))
    if cfg_file or own:
        config = weights_config(cfg_file, opts, weights if own else None)
        for source, contract in records:
            if contract is not None:
                contract.check_config(config, source, cfg_file or weights)
        return config
    found = [(source, contract) for source, contract in records if contract is not None]
    if not found:
        raise UserError("no --cfg and no --onnx/--engine file that records its preprocessing: pass --cfg.")
    source, contract = found[0]
    return resolve_config(None, opts, contract, source)
