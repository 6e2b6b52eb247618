"""The TensorRT builder of one network: builder, strongly typed network, ONNX parser and builder config.

Shared by the engine build (trt/build.py) and the precision plan (trt/network_plan.py), which parses a graph
without building it; neither imports the other.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Dict, List, Optional

import onnx

from swin_trt.errors import UserError
from swin_trt.files import atomic_path, atomic_write_bytes
from swin_trt.trt.backend import Backend

_LOG = logging.getLogger("swin")


@dataclasses.dataclass(frozen=True)
class BatchProfile:
    """Batch sizes of one optimisation profile (the other dimensions are fixed by the graph)."""

    min: int
    opt: int
    max: int

    def as_dict(self) -> Dict[str, int]:
        return dataclasses.asdict(self)


def parser_errors(parser) -> List[str]:
    """One line per ONNX parser error, naming the node and its op where the parser says them."""
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        node = err.node_name() if hasattr(err, "node_name") else ""
        op = err.node_operator() if hasattr(err, "node_operator") else ""
        where = f"node {node or err.node()}" + (f" ({op})" if op else "")
        lines.append(f"{where}: {err.desc()} [{err.code()}]")
    return lines


def load_timing_cache(config, path: str):
    """Attach the timing cache in ``path`` (empty when the file does not exist yet) to ``config``.

    Raises:
        UserError: the file is not a timing cache, or was made on another GPU or TensorRT version.
    """
    data = b""
    if os.path.isfile(path):
        with open(path, "rb") as f:
            data = f.read()
    cache = config.create_timing_cache(data)
    if cache is None:
        raise UserError(f"timing cache {path} could not be read by TensorRT (not a timing cache, or damaged): delete it.")
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        raise UserError(f"timing cache {path} was made on another GPU or TensorRT version: delete it.")
    return cache


def register_profile(builder, config, shapes: Dict[str, Dict[str, List[int]]], onnx_file: str) -> int:
    """Add one optimisation profile with ``shapes`` (input name -> min/opt/max) to ``config``; returns its index.

    Raises:
        UserError: TensorRT rejects the profile (``add_optimization_profile`` returns -1).
    """
    profile = builder.create_optimization_profile()
    for name, dims in shapes.items():
        profile.set_shape(name, dims["min"], dims["opt"], dims["max"])
    index = config.add_optimization_profile(profile)
    if index < 0:
        raise UserError(f"TensorRT rejected the optimisation profile {shapes} for {onnx_file} (see its error above): "
                        "use batch sizes with 1 <= --min-batch <= --opt-batch <= --max-batch and the graph's image size.")
    return index


class EngineBuilder:
    """Owns the builder, the network, the ONNX parser and the builder config of one build.

    Args:
        backend: the TensorRT-family module to build with.
        verbose: TensorRT's verbose log.
        workspace_mib: workspace memory-pool limit.
        optimization_level: builder optimisation level (0..5).
        timing_cache: file to read tactic timings from and write them back to (None: none). Ignored,
            with a warning, by TensorRT-RTX: its timing cache is deprecated (1.2), changes nothing in the
            engine and needs a GPU during the ahead-of-time build.
        detailed_profiling: ``ProfilingVerbosity.DETAILED`` so the engine inspector can name
            layers, precisions and tactics later (a few kB more in the engine, no runtime cost).
        tf32: let FP32 convolutions and matrix multiplies run in TF32. TensorRT (and TensorRT-RTX)
            enable it by default; it is cleared unless asked, because precision lives in the ONNX
            graph and an FP32 tensor there means FP32.

    Raises:
        UserError: no builder can be created here, or a bad optimisation level or timing cache.
    """

    def __init__(self, backend: Backend, verbose: bool = False, workspace_mib: int = 4096, optimization_level: int = 3,
                 timing_cache: Optional[str] = None, detailed_profiling: bool = True, tf32: bool = False) -> None:
        trt = backend.module
        self.backend = backend
        self.trt_logger = backend.logger(verbose)
        self.builder = backend.create_builder(self.trt_logger)
        self.config = self.builder.create_builder_config()
        self.config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
        if not 0 <= optimization_level <= 5:
            raise UserError(f"--builder-optimization-level {optimization_level} is outside 0..5: pick a level in that range.")
        self.config.builder_optimization_level = optimization_level
        if detailed_profiling:
            self.config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        if tf32:
            self.config.set_flag(trt.BuilderFlag.TF32)
        else:
            self.config.clear_flag(trt.BuilderFlag.TF32)
        # TensorRT-RTX records CUDA graphs of a context only when the engine takes user-allocated memory
        # (TensorRT-RTX 1.2 release notes); trt/engine.py always supplies it
        self.require_user_allocation = False
        if backend.is_rtx:
            self.config.set_flag(trt.BuilderFlag.REQUIRE_USER_ALLOCATION)
            self.require_user_allocation = True
        self.timing_cache_file = timing_cache
        if timing_cache and backend.is_rtx:
            _LOG.warning("ignoring --timing-cache %s: %s deprecates the timing cache (a no-op that needs a GPU during "
                         "the ahead-of-time build)", timing_cache, backend.describe())
            self.timing_cache_file = None
        if self.timing_cache_file:
            load_timing_cache(self.config, self.timing_cache_file)
        self.network = None
        self.parser = None

    @property
    def tf32(self) -> bool:
        """Whether the config lets FP32 layers use TF32 (read back from TensorRT)."""
        trt = self.backend.module
        return bool(self.config.get_flag(trt.BuilderFlag.TF32))

    def create_network(self, onnx_file: str, model: Optional[onnx.ModelProto] = None):
        """Parse ``model`` (or the file itself when None) into a strongly typed network.

        Raises:
            UserError: the parser rejects the graph; the message lists each error with its node.
        """
        trt = self.backend.module
        self.network = self.builder.create_network(self.backend.network_flags())
        self.parser = trt.OnnxParser(self.network, self.trt_logger)
        if model is None:
            ok = self.parser.parse_from_file(os.path.abspath(onnx_file))
        else:
            ok = self.parser.parse(model.SerializeToString(), os.path.abspath(onnx_file))
        if not ok or self.parser.num_errors:
            errors = parser_errors(self.parser)
            for line in errors:
                _LOG.error("ONNX parser: %s", line)
            raise UserError(f"{self.backend.describe()} could not parse {onnx_file} ({len(errors)} errors; first: "
                            f"{errors[0] if errors else 'no message'}): check the opset and ops the ONNX uses.")
        return self.network

    def input_shapes(self) -> Dict[str, tuple]:
        """Network input name -> shape (-1 where dynamic)."""
        return {self.network.get_input(i).name: tuple(self.network.get_input(i).shape) for i in range(self.network.num_inputs)}

    def add_profile(self, profile: BatchProfile, onnx_file: str) -> Dict[str, Dict[str, List[int]]]:
        """Add one optimisation profile; only the batch (first) dimension may be dynamic.

        Returns:
            input name -> {"min", "opt", "max"} shapes, as recorded in the metadata.
        """
        shapes = {}
        for name, shape in self.input_shapes().items():
            if any(d < 0 for d in shape[1:]):
                raise UserError(f"{onnx_file} input {name} has shape {list(shape)} with dynamic dimensions besides the "
                                "batch: export it with a fixed image size.")
            rest = list(shape[1:])
            shapes[name] = {k: [getattr(profile, k)] + rest for k in ("min", "opt", "max")}
        register_profile(self.builder, self.config, shapes, onnx_file)
        return shapes

    def create_engine(self, engine_file: str) -> int:
        """Build and write the engine atomically; returns its size in bytes.

        Raises:
            UserError: the builder failed (its log says why).
        """
        serialized = self.builder.build_serialized_network(self.network, self.config)
        if serialized is None:
            raise UserError(f"{self.backend.describe()} failed to build {engine_file}: see the TensorRT errors above "
                            "(rerun with --verbose for the full log).")
        with atomic_path(engine_file, serialized.nbytes) as tmp:
            with open(tmp, "wb") as f:
                f.write(memoryview(serialized))
        if self.timing_cache_file:
            atomic_write_bytes(self.timing_cache_file, bytes(memoryview(self.config.get_timing_cache().serialize())))
        return serialized.nbytes

    def build_targets(self) -> Optional[List[str]]:
        """TensorRT-RTX compute capabilities the engine targets (None: full TensorRT, or the library's default set)."""
        targets = None
        if self.backend.is_rtx:
            config = self.config
            targets = [config.get_compute_capability(i).name for i in range(config.num_compute_capabilities)] or None
        return targets
