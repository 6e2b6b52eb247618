"""ONNX Runtime against TensorRT (or another ONNX file in ONNX Runtime) on the same inputs, whole model or tensor by tensor, through polygraphy."""
from __future__ import annotations

import logging
import os
import sys
from typing import Any, Dict, List, Optional

import numpy as np
import onnx

from swin_trt.errors import UserError
from swin_trt.files import require_file
from swin_trt.trt.tolerance import tolerance_report

_LOG = logging.getLogger("swin")


_NUMPY = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16}


def random_feed(onnx_file: str, batch_size: int, seed: int = 0) -> Dict[str, np.ndarray]:
    """Seeded standard-normal arrays for every graph input (symbolic dimensions become ``batch_size``)."""
    model = onnx.load(onnx_file, load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    rng = np.random.default_rng(seed)
    feed = {}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else batch_size
                for d in inp.type.tensor_type.shape.dim]
        feed[inp.name] = rng.standard_normal(dims).astype(_NUMPY.get(inp.type.tensor_type.elem_type, np.float32))
    return feed


def graph_outputs(onnx_file: str) -> List[str]:
    return [o.name for o in onnx.load(onnx_file, load_external_data=False).graph.output]


def use_trt_module(backend_choice: str = "auto") -> None:
    """Point polygraphy at the TensorRT-family module trt/backend.py picks.

    Polygraphy imports ``tensorrt``, or ``tensorrt_rtx`` when POLYGRAPHY_USE_TENSORRT_RTX=1;
    the PyPI wheels name the latter ``tensorrt_rtx_bindings``, registered here under both names.
    """
    from swin_trt.trt.backend import load_backend

    backend = load_backend(backend_choice)
    if backend.is_rtx:
        os.environ["POLYGRAPHY_USE_TENSORRT_RTX"] = "1"
        sys.modules.setdefault("tensorrt_rtx", backend.module)
        from polygraphy import config as polygraphy_config

        polygraphy_config.USE_TENSORRT_RTX = True


def ort_session(onnx_file: str, per_layer: bool):
    """An ONNX Runtime CPU session over ``onnx_file`` (every tensor an output if ``per_layer``).

    Its options match onnx_tools/runtime.py's predictor: ``session.disable_quant_qdq`` so Q/DQ graphs run as
    written (that predictor checks for one output, so it cannot hold an every-tensor graph).
    """
    import onnxruntime as ort

    model: Any = onnx_file
    if per_layer:
        from polygraphy import constants
        from polygraphy.backend.onnx import BytesFromOnnx, ModifyOutputs, OnnxFromPath

        model = BytesFromOnnx(ModifyOutputs(OnnxFromPath(onnx_file), outputs=constants.MARK_ALL))()
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own pybind types (InvalidProtobuf, Fail, NotImplemented...)
        reason = str(err).strip().splitlines()[0][:200]
        raise UserError(f"ONNX file {onnx_file} could not be loaded by ONNX Runtime ({reason}): is it an ONNX file "
                        "this ONNX Runtime can run?") from None


def onnxrt_runner(onnx_file: str, per_layer: bool, name: str):
    """A polygraphy ONNX Runtime runner over :func:`ort_session`."""
    from polygraphy.backend.onnxrt import OnnxrtRunner

    return OnnxrtRunner(ort_session(onnx_file, per_layer), name=name)


def trt_runner(onnx_file: Optional[str], engine_file: Optional[str], per_layer: bool, name: str,
               feed: Dict[str, np.ndarray], tf32: bool = False):
    """A polygraphy TensorRT runner: a built engine, or an engine built now from ``onnx_file`` (strongly typed,
    TF32 only if ``tf32``, one optimisation profile fixed at the shapes of ``feed``)."""
    from polygraphy import constants
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import (CreateConfig, EngineFromBytes, EngineFromNetwork, ModifyNetworkOutputs,
                                        NetworkFromOnnxPath, Profile, TrtRunner)

    from swin_trt.trt.metadata import read_metadata

    if engine_file:
        if per_layer:
            raise UserError("--per-layer builds its own engine from the ONNX (every tensor an output): "
                            "pass --candidate-onnx instead of --engine.")
        # a TensorRT-RTX engine built with REQUIRE_USER_ALLOCATION refuses contexts that allocate for themselves
        user_memory = (read_metadata(engine_file) or {}).get("require_user_allocation")
        return TrtRunner(EngineFromBytes(BytesFromPath(engine_file)), name=name,
                         allocation_strategy="profile" if user_memory else None)
    network = NetworkFromOnnxPath(onnx_file, strongly_typed=True)
    if per_layer:
        network = ModifyNetworkOutputs(network, outputs=constants.MARK_ALL)
    profile = Profile()
    for input_name, array in feed.items():
        profile.add(input_name, min=array.shape, opt=array.shape, max=array.shape)
    return TrtRunner(EngineFromNetwork(network, config=CreateConfig(tf32=tf32, profiles=[profile])), name=name)


def run_runner(runner, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Activate, infer once, deactivate; outputs as host numpy arrays."""
    with runner:
        outputs = runner.infer(feed)
    return {name: np.asarray(value.cpu().numpy() if hasattr(value, "cpu") else value) for name, value in outputs.items()}


def compare(onnx_file: str, candidate: str = "trt", candidate_onnx: Optional[str] = None,
            engine_file: Optional[str] = None, per_layer: bool = False, batch_size: int = 1, atol: float = 1e-3,
            rtol: float = 1e-3, seed: int = 0, backend: str = "auto", tf32: bool = False) -> Dict[str, Any]:
    """Reference ``onnx_file`` in ONNX Runtime against the candidate; returns the tolerance report.

    Args:
        onnx_file: the reference graph.
        candidate: ``trt`` (TensorRT; needs a GPU) or ``ort`` (ONNX Runtime).
        candidate_onnx: the candidate's graph (default ``onnx_file``); ignored with ``engine_file``.
        engine_file: a built engine as the candidate (``candidate`` must be ``trt``; outputs only).
        per_layer: compare every tensor, not only the outputs.
        batch_size: batch for symbolic batch dimensions.
        atol, rtol: the tolerance.
        seed: input seed.
        backend: TensorRT-family module for ``trt`` (see trt/backend.py).
        tf32: let the TensorRT candidate built from ONNX run FP32 layers in TF32.
    """
    require_file(onnx_file, "ONNX file", "pass the reference graph")
    if engine_file:
        require_file(engine_file, "engine", "build one with trt/build_engine.py")
        if candidate != "trt":
            raise UserError("--engine is a TensorRT candidate: drop --candidate ort.")
    candidate_onnx = candidate_onnx or onnx_file
    require_file(candidate_onnx, "candidate ONNX file", "pass the graph to compare")
    feed = random_feed(onnx_file, batch_size, seed)
    reference = run_runner(onnxrt_runner(onnx_file, per_layer, "onnxrt-reference"), feed)
    if candidate == "trt":
        from swin_trt.trt.engine import require_cuda

        require_cuda("TensorRT")
        use_trt_module(backend)
        runner = trt_runner(None if engine_file else candidate_onnx, engine_file, per_layer, "tensorrt", feed, tf32)
    elif candidate == "ort":
        runner = onnxrt_runner(candidate_onnx, per_layer, "onnxrt-candidate")
    else:
        raise UserError(f"--candidate {candidate!r} is not known: use trt or ort.")
    outputs = run_runner(runner, feed)
    report = tolerance_report(reference, outputs, atol, rtol, graph_outputs(onnx_file))
    report.update(reference=onnx_file, candidate=engine_file or candidate_onnx, candidate_backend=candidate,
                  per_layer=per_layer, batch_size=batch_size, seed=seed)
    return report
