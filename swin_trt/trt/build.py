"""ONNX → TensorRT engine: the optimisation profile, the builder (strongly typed, precision from the graph) and the engine's JSON sidecar."""
from __future__ import annotations

import datetime
import logging
import os
import time
from typing import Any, Dict, Optional, Sequence

import onnx

from swin_trt.contract import onnx_contract
from swin_trt.quant.block_formats import quant_record
from swin_trt.errors import UserError
from swin_trt.files import atomic_path, require_file, require_parent_dir
from swin_trt.trt.backend import cuda_device_summary, dtype_name, load_backend
from swin_trt.trt.engine_builder import BatchProfile, EngineBuilder
from swin_trt.trt.metadata import file_sha256, write_metadata
from swin_trt.trt.network_plan import precision_plan
from swin_trt.trt.onnx_precision import BLOCK_MODES, check_mode, graph_precision

_LOG = logging.getLogger("swin")


def resolve_profile(onnx_batch: Optional[int], batch_size: Optional[int] = None, min_batch: Optional[int] = None,
                    opt_batch: Optional[int] = None, max_batch: Optional[int] = None,
                    defaults: BatchProfile = BatchProfile(1, 64, 256), onnx_file: str = "the ONNX file") -> BatchProfile:
    """The optimisation profile from the command line, the graph and the config defaults.

    Args:
        onnx_batch: the graph's fixed batch, or None if it is symbolic.
        batch_size: ``--batch-size`` (a fixed profile), exclusive with the three below.
        min_batch, opt_batch, max_batch: ``--min-batch/--opt-batch/--max-batch``.
        defaults: TRT.MIN_BATCH/OPT_BATCH/MAX_BATCH of the config, for what is not given.

    Raises:
        UserError: options contradict each other or the graph's fixed batch.
    """
    ranged = (min_batch, opt_batch, max_batch)
    if batch_size is not None and any(v is not None for v in ranged):
        raise UserError("--batch-size fixes the profile and cannot be combined with --min-batch/--opt-batch/--max-batch: pass one or the other.")
    if onnx_batch is not None:
        asked = {v for v in (batch_size,) + ranged if v is not None}
        if asked - {onnx_batch}:
            raise UserError(f"{onnx_file} has a fixed batch of {onnx_batch}, so the engine takes exactly that batch: drop "
                            f"the batch options or re-export the ONNX with a dynamic batch (ONNX.DYNAMIC_BATCH True).")
        return BatchProfile(onnx_batch, onnx_batch, onnx_batch)
    if batch_size is not None:
        profile = BatchProfile(batch_size, batch_size, batch_size)
    else:
        lo = defaults.min if min_batch is None else min_batch
        hi = defaults.max if max_batch is None else max_batch
        # without --opt-batch the default optimum is moved inside an explicit range
        opt = max(lo, min(defaults.opt, hi)) if opt_batch is None else opt_batch
        profile = BatchProfile(lo, opt, hi)
    if not 1 <= profile.min <= profile.opt <= profile.max:
        raise UserError(f"batch profile min {profile.min}, opt {profile.opt}, max {profile.max} is not ordered: "
                        "use 1 <= --min-batch <= --opt-batch <= --max-batch.")
    return profile


def require_block_gpu(record: Dict[str, str], source: str, what: str) -> None:
    """Raise a :class:`UserError` when this machine's GPU is older than the block formats ``record`` names need (on a
    machine without a GPU, TensorRT-RTX builds ahead of time for its targets: nothing to refuse)."""
    gpu = cuda_device_summary()
    if not record or gpu is None:
        return
    need = tuple(int(v) for v in record["min_compute_capability"].split("."))
    have = tuple(int(v) for v in gpu["compute_capability"].split("."))
    if have < need:
        raise UserError(f"{source} holds {record['format'].upper()}, which TensorRT runs from compute capability "
                        f"{record['min_compute_capability']} (Blackwell); this GPU, {gpu['name']}, has "
                        f"{gpu['compute_capability']}: the engine cannot be {what} here: use a Blackwell GPU, or the "
                        "FP8 or INT8 graph on this one.")


def check_block_graph(onnx_file: str) -> None:
    """The structure check of quant/block_check.py before the builder sees the graph (one sentence if it fails)."""
    from swin_trt.onnx_tools.verify import ExportCheckError
    from swin_trt.quant.block_check import check_block_structure

    try:
        check_block_structure(onnx.load(onnx_file), f"ONNX {onnx_file}")
    except ExportCheckError as err:
        raise UserError(f"{err} Export it again with swin_quant_flow.py; the builder was not run.") from None


def build_engine(onnx_file: str, engine_file: str, mode: str = "fp32", batch_size: Optional[int] = None,
                 min_batch: Optional[int] = None, opt_batch: Optional[int] = None, max_batch: Optional[int] = None,
                 workspace_mib: int = 4096, timing_cache: Optional[str] = None, optimization_level: int = 3,
                 backend: str = "auto", verbose: bool = False,
                 fp16_keep_fp32_ops: Optional[Sequence[str]] = None,
                 default_profile: BatchProfile = BatchProfile(1, 64, 256),
                 save_fp16_onnx: Optional[str] = None, tf32: bool = False) -> Dict[str, Any]:
    """ONNX -> engine file + metadata JSON. Returns the metadata.

    Args:
        onnx_file: the graph (FP32, FP16, or with Q/DQ nodes).
        engine_file: output path; ``engine_file + ".json"`` gets the metadata.
        mode: fp32 | fp16 | int8 | fp8; must match the graph (see :func:`trt.onnx_precision.check_mode`).
        batch_size / min_batch / opt_batch / max_batch: the profile (see :func:`resolve_profile`).
        workspace_mib: workspace limit.
        timing_cache: timing-cache file (read if present, written after the build).
        optimization_level: builder optimisation level 0..5.
        backend: auto | tensorrt | tensorrt_rtx.
        verbose: TensorRT's verbose log.
        fp16_keep_fp32_ops: ops left in FP32 when ``--mode fp16`` converts an FP32 graph
            (None: the config default, ONNX.FP16_KEEP_FP32_OPS).
        default_profile: the config's TRT.MIN/OPT/MAX_BATCH.
        save_fp16_onnx: where to keep the converted graph when ``--mode fp16`` converts one
            (for trt/inspect_engine.py and trt/debug/compare.py).
        tf32: let FP32 layers use TF32 (off by default, see :class:`EngineBuilder`).
    """
    require_file(onnx_file, "ONNX file", "pass the path of a file written by export.py")
    require_parent_dir(engine_file)
    trt_backend = load_backend(backend)
    start = time.perf_counter()
    header = onnx.load(onnx_file, load_external_data=False)
    precision = graph_precision(header)
    convert = check_mode(mode, precision, onnx_file)
    record = quant_record(header)
    if mode in BLOCK_MODES:
        require_block_gpu(record, onnx_file, "built")
        check_block_graph(onnx_file)
    profile = resolve_profile(precision.batch, batch_size, min_batch, opt_batch, max_batch, default_profile, onnx_file)
    model = None
    if fp16_keep_fp32_ops is None:
        from swin_trt.config import default_config

        fp16_keep_fp32_ops = list(default_config().ONNX.FP16_KEEP_FP32_OPS)
    if convert:
        from swin_trt.onnx_tools.fp16 import convert_to_fp16

        _LOG.info("converting %s to FP16 (kept in FP32: %s)", onnx_file, ", ".join(fp16_keep_fp32_ops))
        model = convert_to_fp16(onnx.load(onnx_file), fp16_keep_fp32_ops)
        if save_fp16_onnx:
            require_parent_dir(save_fp16_onnx)
            with atomic_path(save_fp16_onnx, model.ByteSize()) as tmp:
                onnx.save(model, tmp)
    contract = onnx_contract(header)
    del header
    builder = EngineBuilder(trt_backend, verbose, workspace_mib, optimization_level, timing_cache, tf32=tf32)
    builder.create_network(onnx_file, model)
    shapes = builder.add_profile(profile, onnx_file)
    network = builder.network
    outputs = {network.get_output(i).name: dtype_name(network.get_output(i).dtype) for i in range(network.num_outputs)}
    inputs = {network.get_input(i).name: dtype_name(network.get_input(i).dtype) for i in range(network.num_inputs)}
    # -1 where the dimension follows the batch (what a Triton config declares: swin_trt/serving/repository.py)
    output_shapes = {network.get_output(i).name: list(network.get_output(i).shape) for i in range(network.num_outputs)}
    # what the strongly typed network stores per image and computes in (trt/network_plan.py), parsed at batch 1
    summary = precision_plan(onnx_file, trt_backend, 1, model or onnx.load(onnx_file)).summary()
    del summary["source"]
    _LOG.info("building %s engine with %s (ONNX: %s%s; batch %d..%d, opt %d; TF32 %s)", mode, trt_backend.describe(),
              precision.summary(), ", converted to FP16" if convert else "", profile.min, profile.max, profile.opt,
              "on" if builder.tf32 else "off")
    size = builder.create_engine(engine_file)
    meta = {
        "onnx_file": os.path.abspath(onnx_file), "onnx_sha256": file_sha256(onnx_file), "mode": mode,
        "converted_to_fp16": bool(convert), "fp16_keep_fp32_ops": list(fp16_keep_fp32_ops) if convert else [],
        "graph_precision": precision.summary(), "profile": profile.as_dict(), "shapes": shapes,
        "inputs": inputs, "outputs": outputs, "output_shapes": output_shapes, "backend": trt_backend.name, "module": trt_backend.module_name,
        "version": trt_backend.version, "gpu": cuda_device_summary(), "build_targets": builder.build_targets(),
        "quant_record": record or None,  # block formats and the compute capability they need (quant/block_formats.py)
        "strongly_typed": True, "tf32": builder.tf32, "require_user_allocation": builder.require_user_allocation,
        "precision_summary": summary,
        # the images the engine takes, copied from the ONNX file (None for a file made elsewhere): swin_trt/contract.py
        "preprocessing": contract.as_dict() if contract else None,
        "timing_cache": os.path.abspath(builder.timing_cache_file) if builder.timing_cache_file else None,
        "builder_optimization_level": optimization_level, "workspace_mib": workspace_mib,
        "engine_bytes": size, "build_seconds": round(time.perf_counter() - start, 2),
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    write_metadata(engine_file, meta)
    _LOG.info("wrote %s (%.1f MB) in %.1f s", engine_file, size / 1e6, meta["build_seconds"])
    return meta
