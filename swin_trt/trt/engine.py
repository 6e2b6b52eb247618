"""One TensorRT engine as a callable: torch CUDA tensors in, torch CUDA tensors out.

Written to the TensorRT 10/11 Python API (also TensorRT-RTX's): I/O tensors
are found by name (``num_io_tensors``, ``get_tensor_name/mode/shape/dtype``),
never by binding index; shapes are set with ``set_input_shape``, buffers with
``set_tensor_address``, and ``execute_async_v3`` runs on a dedicated torch
stream that is ordered with the caller's current stream.

Execution contexts are created with user-managed device memory (one torch
buffer of ``device_memory_size_v2`` bytes shared by all of them: every
context runs on the same stream, so they never run at once). Optionally each
batch size gets its own context, captured once into a CUDA graph and replayed:
a graph records one context at one shape, so re-binding a context to another
batch would leave older graphs replaying stale state. TensorRT-RTX engines
capture only when built with ``REQUIRE_USER_ALLOCATION`` (trt/build_engine.py
sets it) and when ``is_stream_capturable`` says so.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from swin_trt.errors import UserError
from swin_trt.files import require_file
from swin_trt.trt.backend import Backend, cuda_device_summary, load_backend, torch_dtype
from swin_trt.trt.metadata import REBUILD, check_compatible, read_metadata

_LOG = logging.getLogger("swin")


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One I/O tensor of an engine.

    Attributes:
        name: tensor name (the ONNX input/output name).
        is_input: input (True) or output.
        shape: engine shape, -1 where dynamic.
        dtype: torch dtype of the buffer.
        profile: (min, opt, max) shapes of an input under the selected optimisation profile.
    """

    name: str
    is_input: bool
    shape: Tuple[int, ...]
    dtype: torch.dtype
    profile: Optional[Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]] = None


def describe_io(engine, profile_index: int = 0) -> List[TensorSpec]:
    """The I/O tensors of ``engine`` (any object with the ICudaEngine tensor API), in engine order."""
    specs = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = engine.get_tensor_mode(name)
        is_input = getattr(mode, "name", str(mode)).upper().endswith("INPUT")
        profile = None
        if is_input:
            lo, opt, hi = engine.get_tensor_profile_shape(name, profile_index)
            profile = (tuple(lo), tuple(opt), tuple(hi))
        specs.append(TensorSpec(name, is_input, tuple(engine.get_tensor_shape(name)),
                                torch_dtype(engine.get_tensor_dtype(name)), profile))
    return specs


def batch_limits(specs: Sequence[TensorSpec]) -> Tuple[int, int]:
    """Smallest and largest batch (first dimension) every input's profile accepts."""
    lows, highs = [], []
    for spec in specs:
        if not spec.is_input:
            continue
        if spec.shape and spec.shape[0] >= 0:
            lows.append(spec.shape[0])
            highs.append(spec.shape[0])
        elif spec.profile:
            lows.append(spec.profile[0][0])
            highs.append(spec.profile[2][0])
    if not lows:
        raise ValueError("engine has no inputs with a batch dimension")
    return max(lows), min(highs)


def plan_chunks(batch: int, low: int, high: int, split: bool, engine_file: str = "the engine") -> List[Tuple[int, int, int]]:
    """How to run ``batch`` images on an engine whose profile takes ``low``..``high``.

    Returns:
        ``(start, stop, run_batch)`` per engine call: images ``start:stop`` are run as a batch of
        ``run_batch`` (> stop - start when the chunk is padded up to ``low``).

    Raises:
        UserError: ``batch`` is outside the profile and ``split`` is False.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if low <= batch <= high:
        return [(0, batch, batch)]
    if not split:
        raise UserError(f"batch {batch} is outside the profile of {engine_file} (batch {low}..{high}): pass a batch "
                        f"in that range, or rebuild the engine with --min-batch/--max-batch covering {batch}.")
    chunks = []
    for start in range(0, batch, high):
        stop = min(start + high, batch)
        chunks.append((start, stop, max(stop - start, low)))
    return chunks


def explain_validity(trt, runtime, data: bytes) -> str:
    """What ``Runtime.get_engine_validity`` (TensorRT 11, TensorRT-RTX) says about ``data`` in words."""
    text = "this TensorRT version gives no further diagnostics"
    if hasattr(runtime, "get_engine_validity"):
        try:
            validity, bits = runtime.get_engine_validity(data)
        except Exception as err:  # diagnostics are best effort; the caller raises the real error
            return f"validity check failed: {err}"
        text = describe_validity(validity, int(bits), getattr(trt, "EngineInvalidityDiagnostics", None))
    return text


def describe_validity(validity, bits: int, diagnostics_enum) -> str:
    """``INVALID: VERSION_MISMATCH, UNSUPPORTED_CC`` from a validity and its diagnostics bit mask."""
    members = getattr(diagnostics_enum, "__members__", {})
    reasons = [name for name, member in members.items() if bits & int(member)]
    return getattr(validity, "name", str(validity)) + (f": {', '.join(reasons)}" if reasons else "")


def require_cuda(what: str) -> torch.device:
    """The current CUDA device; a :class:`UserError` when there is none."""
    if not torch.cuda.is_available():
        raise UserError(f"no CUDA device is visible, and {what} runs only on an NVIDIA GPU: run it on a GPU machine "
                        "(check the driver with nvidia-smi and that CUDA_VISIBLE_DEVICES does not hide the GPU).")
    return torch.device("cuda", torch.cuda.current_device())


ALIGNMENT = 256  # bytes: TensorRT refuses (set_tensor_address returns False) less aligned I/O addresses


def create_context(engine, trt, engine_file: str):
    """An execution context whose device memory the caller supplies (``USER_MANAGED``).

    TensorRT 10.13 (its published stubs), 11 and TensorRT-RTX take the strategy through an
    ``IRuntimeConfig`` (11.1's bindings have no other overload); 10.x releases without
    ``create_runtime_config`` take it as an argument.

    Raises:
        UserError: TensorRT returned no context (its log says why).
    """
    strategy = trt.ExecutionContextAllocationStrategy.USER_MANAGED
    if hasattr(engine, "create_runtime_config"):
        runtime_config = engine.create_runtime_config()
        runtime_config.set_execution_context_allocation_strategy(strategy)
        context = engine.create_execution_context(runtime_config)
    else:
        context = engine.create_execution_context(strategy)
    if context is None:
        raise UserError(f"TensorRT could not create an execution context for {engine_file} (see the TensorRT errors "
                        "above; usually the GPU is out of memory): free GPU memory or use a smaller engine.")
    return context


def select_profile(context, profile_index: int, stream_handle: int, engine_file: str, num_profiles: int) -> None:
    """Make ``profile_index`` the context's optimisation profile (on ``stream_handle``).

    Raises:
        UserError: the engine has no such profile, or TensorRT refuses it (False on 10.x, RuntimeError on 11).
    """
    if not 0 <= profile_index < num_profiles:
        raise UserError(f"engine {engine_file} has {num_profiles} optimisation profile(s) and profile {profile_index} "
                        f"was asked for: pass a profile index in 0..{num_profiles - 1}.")
    try:
        ok = context.set_optimization_profile_async(profile_index, stream_handle)
    except RuntimeError as err:
        ok, reason = False, str(err)
    else:
        reason = "it returned False"
    if not ok:
        raise UserError(f"TensorRT could not select optimisation profile {profile_index} of {engine_file} ({reason}): "
                        "pass a profile index the engine has.")


def bind_address(context, name: str, tensor: torch.Tensor) -> None:
    """``set_tensor_address`` that fails loudly: on False TensorRT keeps the previous address bound."""
    address = tensor.data_ptr()
    if not context.set_tensor_address(name, address):
        raise RuntimeError(f"TensorRT refused address {address:#x} for tensor {name} (it needs {ALIGNMENT}-byte "
                           f"aligned device memory: offset {address % ALIGNMENT})")


def aligned(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``, or a fresh copy when a view starts at an address TensorRT would refuse."""
    return tensor if tensor.data_ptr() % ALIGNMENT == 0 else tensor.clone()


class TRTEngine:
    """A deserialized engine with its execution context, run on a dedicated CUDA stream.

    Args:
        engine_file: the serialized engine (``ENGINE.json`` beside it, if present, is checked first).
        backend: auto (the one named in the JSON, else ``tensorrt``, else TensorRT-RTX) | tensorrt | tensorrt_rtx.
        cuda_graph: give each batch size its own execution context, captured into a CUDA graph on
            first use and replayed afterwards.
        profile_index: the optimisation profile to use.
        verbose: TensorRT's verbose log.

    Raises:
        UserError: missing file, engine from another TensorRT version or GPU, no CUDA device,
            CUDA graphs asked of a TensorRT-RTX engine built without ``REQUIRE_USER_ALLOCATION``.
    """

    def __init__(self, engine_file: str, backend: str = "auto", cuda_graph: bool = False, profile_index: int = 0,
                 verbose: bool = False) -> None:
        require_file(engine_file, "engine", "build one with trt/build_engine.py")
        self.engine_file = engine_file
        self.meta = read_metadata(engine_file)
        if backend == "auto" and self.meta and self.meta.get("backend"):
            backend = self.meta["backend"]
        self.backend: Backend = load_backend(backend)
        check_compatible(engine_file, self.meta, self.backend.name, self.backend.version, cuda_device_summary())
        if (self.meta or {}).get("quant_record"):  # MXFP8/NVFP4 run from Blackwell on: one sentence on an older GPU
            from swin_trt.trt.build import require_block_gpu

            require_block_gpu(self.meta["quant_record"], f"engine {engine_file}", "run")
        if cuda_graph and self.backend.is_rtx and not (self.meta or {}).get("require_user_allocation"):
            raise UserError(f"engine {engine_file} was not built with REQUIRE_USER_ALLOCATION, which TensorRT-RTX needs "
                            f"to record CUDA graphs: run without --cuda-graph, or {REBUILD}.")
        self.device = require_cuda(f"TensorRT engine {engine_file}")
        trt = self.backend.module
        self.trt_logger = self.backend.logger(verbose)
        self.runtime = trt.Runtime(self.trt_logger)
        with open(engine_file, "rb") as f:
            data = f.read()
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            gpu = torch.cuda.get_device_name(self.device)
            raise UserError(f"engine {engine_file} could not be loaded by {self.backend.describe()} on {gpu} "
                            f"({explain_validity(trt, self.runtime, data)}); engines load only with the TensorRT version and "
                            f"GPU architecture they were built for: {REBUILD}.")
        self.profile_index = profile_index
        self.stream = torch.cuda.Stream(self.device)
        size = self.engine.device_memory_size_v2
        self.context_memory = torch.empty(max(size, 1), dtype=torch.uint8, device=self.device)
        self.context = self._new_context()
        self.specs = describe_io(self.engine, profile_index)
        self.inputs = [s for s in self.specs if s.is_input]
        self.outputs = [s for s in self.specs if not s.is_input]
        self.batch_range = batch_limits(self.specs)
        self.cuda_graph = cuda_graph
        # batch -> (its own context, graph, static input, static outputs)
        self._graphs: Dict[int, Tuple[object, torch.cuda.CUDAGraph, torch.Tensor, Dict[str, torch.Tensor]]] = {}
        _LOG.info("loaded %s (%s): inputs %s, outputs %s, batch %d..%d", engine_file, self.backend.describe(),
                  [(s.name, s.shape, str(s.dtype)) for s in self.inputs],
                  [(s.name, s.shape, str(s.dtype)) for s in self.outputs], *self.batch_range)

    def _new_context(self):
        """A context on the shared device memory, with the selected profile."""
        context = create_context(self.engine, self.backend.module, self.engine_file)
        context.set_device_memory(self.context_memory.data_ptr(), self.context_memory.numel())
        if self.profile_index:  # profile 0 is active in a new context
            select_profile(context, self.profile_index, self.stream.cuda_stream, self.engine_file,
                           self.engine.num_optimization_profiles)
        return context

    # -- one engine call ----------------------------------------------------------------------------------

    def _bind(self, context, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        for spec in self.inputs:
            tensor = inputs[spec.name]
            if not context.set_input_shape(spec.name, tuple(tensor.shape)):
                raise UserError(f"engine {self.engine_file} rejected input {spec.name} of shape {list(tensor.shape)} "
                                f"(engine shape {list(spec.shape)}): pass images of the size it was built for.")
            bind_address(context, spec.name, tensor)
        outputs = {}
        for spec in self.outputs:
            shape = tuple(context.get_tensor_shape(spec.name))
            outputs[spec.name] = torch.empty(shape, dtype=spec.dtype, device=self.device)
            bind_address(context, spec.name, outputs[spec.name])
        return outputs

    def _enqueue(self, context) -> None:
        if not context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError(f"TensorRT execute_async_v3 failed for {self.engine_file} (see the TensorRT log)")

    def _prepare(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        missing = {s.name for s in self.inputs} - set(inputs)
        if missing:
            raise UserError(f"engine {self.engine_file} needs inputs {sorted(missing)}; got {sorted(inputs)}.")
        ready = {}
        for spec in self.inputs:
            tensor = inputs[spec.name]
            if len(tensor.shape) != len(spec.shape) or any(d >= 0 and d != t for d, t in zip(spec.shape[1:], tensor.shape[1:])):
                raise UserError(f"engine {self.engine_file} takes {spec.name} of shape {list(spec.shape)} (-1: any) but got "
                                f"{list(tensor.shape)}: pass the config the engine was built for.")
            ready[spec.name] = aligned(tensor.to(self.device, spec.dtype, non_blocking=True).contiguous())
        return ready

    def execute(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Run one batch that fits the profile. Inputs are cast to the engine's dtypes and moved to its GPU.

        Returns:
            output name -> tensor on the GPU, ordered after the computation on the caller's current stream.
        """
        ready = self._prepare(inputs)
        caller = torch.cuda.current_stream(self.device)
        if self.cuda_graph:
            outputs = self._replay(ready, caller)
        else:
            outputs = self._bind(self.context, ready)
            self.stream.wait_stream(caller)
            self._enqueue(self.context)
            for tensor in list(ready.values()) + list(outputs.values()):
                tensor.record_stream(self.stream)
        caller.wait_stream(self.stream)
        return outputs

    def _capture(self, x: torch.Tensor):
        """A new context bound to static buffers of ``x``'s shape, and the CUDA graph of one enqueue on it."""
        spec = self.inputs[0]
        context = self._new_context()
        static_in = torch.zeros_like(x)
        static_out = self._bind(context, {spec.name: static_in})
        if hasattr(context, "is_stream_capturable") and not context.is_stream_capturable(self.stream.cuda_stream):
            raise UserError(f"{self.backend.describe()} cannot record {self.engine_file} in a CUDA graph at batch "
                            f"{x.shape[0]} (is_stream_capturable is False): run without --cuda-graph.")
        with torch.cuda.stream(self.stream):
            self._enqueue(context)  # the first enqueue does lazy set-up that must not be captured
        self.stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
            self._enqueue(context)
        return context, graph, static_in, static_out

    def _replay(self, ready: Dict[str, torch.Tensor], caller: torch.cuda.Stream) -> Dict[str, torch.Tensor]:
        if len(self.inputs) != 1:
            raise UserError(f"CUDA graphs are supported here for single-input engines; {self.engine_file} has "
                            f"{len(self.inputs)} inputs: run without --cuda-graph.")
        x = ready[self.inputs[0].name]
        batch = x.shape[0]
        if batch not in self._graphs:
            self._graphs[batch] = self._capture(x)
        _, graph, static_in, static_out = self._graphs[batch]
        self.stream.wait_stream(caller)
        with torch.cuda.stream(self.stream):
            static_in.copy_(x, non_blocking=True)
            graph.replay()
            outputs = {name: t.clone() for name, t in static_out.items()}
        for tensor in [x] + list(outputs.values()):
            tensor.record_stream(self.stream)
        return outputs

    # -- classifier convenience ---------------------------------------------------------------------------

    def __call__(self, images: torch.Tensor, split: bool = True) -> torch.Tensor:
        """Logits of images (N, C, H, W) for a single-input, single-output engine.

        Args:
            images: any device and float dtype; cast to the engine's input dtype.
            split: run a batch outside the profile in profile-sized chunks (the last one
                zero-padded up to the profile's minimum); False raises a :class:`UserError` instead.

        Returns:
            (N, classes) on the GPU, in the engine's output dtype.
        """
        if len(self.inputs) != 1 or len(self.outputs) != 1:
            raise UserError(f"engine {self.engine_file} has {len(self.inputs)} inputs and {len(self.outputs)} outputs, "
                            "not one image input and one logits output: call execute() with named tensors.")
        name, out_name = self.inputs[0].name, self.outputs[0].name
        low, high = self.batch_range
        results = []
        for start, stop, run_batch in plan_chunks(len(images), low, high, split, self.engine_file):
            chunk = images[start:stop]
            if run_batch > len(chunk):
                padding = chunk.new_zeros((run_batch - len(chunk),) + tuple(chunk.shape[1:]))
                chunk = torch.cat([chunk, padding])  # run_batch, C, H, W
            results.append(self.execute({name: chunk})[out_name][:stop - start])
        return results[0] if len(results) == 1 else torch.cat(results)  # N, classes
