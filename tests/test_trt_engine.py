"""trt/engine.py and trt/backend.py: I/O naming, profile arithmetic, chunking, errors; GPU runs skip with the reason."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from swin_trt.errors import UserError
from swin_trt.trt.backend import load_backend, torch_dtype
from swin_trt.trt.engine import (ALIGNMENT, TRTEngine, aligned, batch_limits, bind_address, create_context, describe_io,
                                 describe_validity, plan_chunks, select_profile)
from swin_trt.trt.metadata import check_compatible, metadata_path

from conftest import load_engine_or_skip

trt = pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX wheels (tensorrt-rtx-cu13-*) not installed")


class EngineDescription:
    """The tensor-description part of ICudaEngine, for naming and profile logic only (nothing runs on it).

    The enums are the real TensorRT-RTX ones, so the code sees what a deserialized engine returns.
    """

    def __init__(self, tensors):
        self.tensors = tensors  # (name, mode, shape, dtype, profile or None), in engine order

    @property
    def num_io_tensors(self):
        return len(self.tensors)

    def get_tensor_name(self, i):
        return self.tensors[i][0]

    def _get(self, name):
        return next(t for t in self.tensors if t[0] == name)

    def get_tensor_mode(self, name):
        return self._get(name)[1]

    def get_tensor_shape(self, name):
        return trt.Dims(self._get(name)[2])

    def get_tensor_dtype(self, name):
        return self._get(name)[3]

    def get_tensor_profile_shape(self, name, index):
        return [trt.Dims(s) for s in self._get(name)[4]]


def description(output_first=False, profile=((1, 3, 32, 32), (8, 3, 32, 32), (64, 3, 32, 32))):
    inp = ("images", trt.TensorIOMode.INPUT, (-1, 3, 32, 32), trt.DataType.HALF, profile)
    out = ("logits", trt.TensorIOMode.OUTPUT, (-1, 10), trt.DataType.FLOAT, None)
    return EngineDescription([out, inp] if output_first else [inp, out])


def test_io_tensors_are_named_from_the_engine_not_by_binding_index():
    for output_first in (False, True):
        specs = {s.name: s for s in describe_io(description(output_first))}
        assert specs["images"].is_input and not specs["logits"].is_input
        assert specs["images"].dtype == torch.float16 and specs["logits"].dtype == torch.float32
        assert specs["images"].profile == ((1, 3, 32, 32), (8, 3, 32, 32), (64, 3, 32, 32))
        assert specs["logits"].shape == (-1, 10)


def test_batch_limits_come_from_the_profile_or_a_fixed_batch():
    assert batch_limits(describe_io(description())) == (1, 64)
    fixed = EngineDescription([("x", trt.TensorIOMode.INPUT, (16, 3, 32, 32), trt.DataType.FLOAT, ((16, 3, 32, 32),) * 3),
                               ("y", trt.TensorIOMode.OUTPUT, (16, 10), trt.DataType.FLOAT, None)])
    assert batch_limits(describe_io(fixed)) == (16, 16)


def test_batches_outside_the_profile_split_into_profile_sized_chunks_padded_to_the_minimum():
    assert plan_chunks(32, 1, 64, split=False) == [(0, 32, 32)]
    assert plan_chunks(150, 1, 64, split=True) == [(0, 64, 64), (64, 128, 64), (128, 150, 22)]
    assert plan_chunks(70, 16, 16, split=True)[-1] == (64, 70, 16)  # 6 images padded to the fixed batch
    assert plan_chunks(3, 8, 64, split=True) == [(0, 3, 8)]
    chunks = plan_chunks(1000, 4, 256, split=True)
    assert sum(stop - start for start, stop, _ in chunks) == 1000
    assert all(4 <= run <= 256 for _, _, run in chunks)


def test_batch_outside_the_profile_without_splitting_is_one_sentence_with_the_fix():
    with pytest.raises(UserError, match=r"batch 300 is outside the profile of m.engine \(batch 1..256\).*--max-batch"):
        plan_chunks(300, 1, 256, split=False, engine_file="m.engine")


def test_tensorrt_data_types_map_to_torch_and_unknown_ones_raise():
    assert torch_dtype(trt.DataType.FLOAT) == torch.float32
    assert torch_dtype(trt.DataType.INT8) == torch.int8
    assert torch_dtype(trt.DataType.FP8) == torch.float8_e4m3fn
    with pytest.raises(ValueError, match="INT4"):
        torch_dtype(trt.DataType.INT4)


def test_backend_sets_the_strongly_typed_flag_and_unknown_backends_are_user_errors():
    backend = load_backend("tensorrt_rtx")
    assert backend.is_rtx and backend.version == trt.__version__
    assert backend.network_flags() == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = backend.module.Builder(backend.logger()).create_network(backend.network_flags())
    assert network.get_flag(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    with pytest.raises(UserError, match="--backend 'tensorflow' is not known"):
        load_backend("tensorflow")


def test_validity_diagnostics_are_spelled_out():
    bits = int(trt.EngineInvalidityDiagnostics.VERSION_MISMATCH) | int(trt.EngineInvalidityDiagnostics.UNSUPPORTED_CC)
    text = describe_validity(trt.EngineValidity.INVALID, bits, trt.EngineInvalidityDiagnostics)
    assert text == "INVALID: VERSION_MISMATCH, UNSUPPORTED_CC"


def test_engine_from_another_tensorrt_version_is_refused_before_loading(micro_engines, tmp_path):
    engine = tmp_path / "old.engine"
    shutil.copy(micro_engines["fp32"], engine)
    meta = json.loads(open(metadata_path(str(micro_engines["fp32"]))).read())
    meta["version"] = "10.0.0.6"
    (tmp_path / "old.engine.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"built with \S+ 10.0.0.6 .*exact version.*rebuild it"):
        TRTEngine(str(engine), backend=meta["backend"])


def test_engine_for_another_gpu_architecture_is_refused():
    meta = {"backend": "tensorrt", "version": "10.9.0", "gpu": {"name": "NVIDIA T4", "compute_capability": "7.5"}}
    with pytest.raises(UserError, match=r"built on NVIDIA T4 \(compute capability 7.5\).*H100.*rebuild"):
        check_compatible("t4.engine", meta, "tensorrt", "10.9.0", {"name": "NVIDIA H100", "compute_capability": "9.0"})
    check_compatible("t4.engine", meta, "tensorrt", "10.9.0", {"name": "Tesla T4", "compute_capability": "7.5"})


def test_missing_engine_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="engine .*missing.engine does not exist"):
        TRTEngine(str(tmp_path / "missing.engine"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_no_cuda_device_is_one_sentence(micro_engines):
    with pytest.raises(UserError, match="no CUDA device is visible"):
        TRTEngine(str(micro_engines["fp32"]))


# --- TensorRT return values the runtime must not ignore -------------------------------------------------------------
# Test doubles of the documented calls (their signatures are checked against TensorRT 10.13's stubs): a real
# execution context needs a GPU, and these paths are our control flow on what TensorRT returns.

class RuntimeConfig:
    """IRuntimeConfig: records the allocation strategy asked for."""

    def set_execution_context_allocation_strategy(self, strategy):
        self.strategy = strategy


class EngineWithoutContext:
    """ICudaEngine whose create_execution_context returns None (TensorRT's answer when it cannot make one)."""

    def create_runtime_config(self):
        self.runtime_config = RuntimeConfig()
        return self.runtime_config

    def create_execution_context(self, runtime_config):
        assert runtime_config is self.runtime_config
        return None


class Context:
    """IExecutionContext's profile and address setters, answering ``answer`` (False, or an exception to raise)."""

    def __init__(self, answer):
        self.answer = answer

    def set_optimization_profile_async(self, profile_index, stream_handle):
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def set_tensor_address(self, name, memory):
        return self.answer


@pytest.fixture(scope="module")
def stubs():
    from tensorrt_api import load_stubs

    return load_stubs()


def test_test_doubles_have_the_signatures_tensorrt_publishes(stubs):
    from tensorrt_api import assert_mirrors_stub

    assert_mirrors_stub(stubs, RuntimeConfig, "IRuntimeConfig")
    assert_mirrors_stub(stubs, EngineWithoutContext, "ICudaEngine")
    assert_mirrors_stub(stubs, Context, "IExecutionContext")


def test_contexts_take_user_managed_memory_and_none_from_tensorrt_is_one_sentence():
    engine = EngineWithoutContext()
    with pytest.raises(UserError, match="could not create an execution context for m.engine .*free GPU memory"):
        create_context(engine, trt, "m.engine")
    assert engine.runtime_config.strategy == trt.ExecutionContextAllocationStrategy.USER_MANAGED


@pytest.mark.parametrize("answer", [False, RuntimeError("Error in set optimization profile async.")],
                         ids=["tensorrt10_false", "tensorrt11_raises"])
def test_a_refused_optimisation_profile_is_a_user_error(answer):
    with pytest.raises(UserError, match="could not select optimisation profile 1 of m.engine"):
        select_profile(Context(answer), 1, 0, "m.engine", num_profiles=2)
    with pytest.raises(UserError, match="has 2 optimisation profile.*profile 2 was asked for.*0..1"):
        select_profile(Context(True), 2, 0, "m.engine", num_profiles=2)
    select_profile(Context(True), 1, 0, "m.engine", num_profiles=2)


def test_a_refused_tensor_address_raises_instead_of_leaving_the_old_one_bound():
    tensor = torch.zeros(64)
    with pytest.raises(RuntimeError, match=f"refused address .* for tensor logits .*{ALIGNMENT}-byte"):
        bind_address(Context(False), "logits", tensor)
    bind_address(Context(True), "logits", tensor)


def test_inputs_starting_off_the_alignment_tensorrt_needs_are_copied():
    base = torch.arange(1024, dtype=torch.float32)
    view = base[1:]  # 4 bytes past an allocation
    assert view.data_ptr() % ALIGNMENT != 0
    copy = aligned(view)
    assert copy.data_ptr() != view.data_ptr() and torch.equal(copy, view)
    start = next(i for i in range(1024) if base[i:].data_ptr() % ALIGNMENT == 0)
    assert aligned(base[start:]).data_ptr() == base[start:].data_ptr()  # aligned views are used as they are


def test_cuda_graphs_of_a_tensorrt_rtx_engine_built_without_user_allocation_are_refused(micro_engines, tmp_path):
    engine = tmp_path / "old_rtx.engine"
    shutil.copy(micro_engines["fp32"], engine)
    meta = json.loads(open(metadata_path(str(micro_engines["fp32"]))).read())
    if meta["backend"] != "tensorrt_rtx":
        pytest.skip("the micro engines were built with full TensorRT here")
    meta.pop("require_user_allocation")  # an engine from before trt/build_engine.py set REQUIRE_USER_ALLOCATION
    (tmp_path / "old_rtx.engine.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="not built with REQUIRE_USER_ALLOCATION.*--cuda-graph.*rebuild"):
        TRTEngine(str(engine), cuda_graph=True)


# --- GPU runtime (skipped here with the reason) ----------------------------------------------------------------------

def ort_logits(onnx_file, images: torch.Tensor) -> np.ndarray:
    from swin_trt.onnx_tools.runtime import OrtPredictor

    return OrtPredictor(str(onnx_file), providers=["CPUExecutionProvider"]).run(images.numpy())


def test_fp32_engine_matches_onnx_runtime_and_chunks_large_batches(micro_engines):
    engine = load_engine_or_skip(micro_engines["fp32"])
    images = torch.randn(150, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # > max batch 64
    logits = engine(images.cuda()).float().cpu().numpy()
    reference = ort_logits(micro_engines["onnx"]["fp32"], images)
    np.testing.assert_allclose(logits, reference, rtol=1e-2, atol=1e-2)
    with pytest.raises(UserError, match="outside the profile"):
        engine(images.cuda(), split=False)


def test_cuda_graph_replay_gives_the_same_logits_when_batch_sizes_alternate(micro_engines):
    plain = load_engine_or_skip(micro_engines["fp32"])
    graphed = load_engine_or_skip(micro_engines["fp32"], cuda_graph=True)
    batches = {size: torch.randn(size, 3, 32, 32, device="cuda") for size in (16, 8)}
    for size in (16, 8, 16, 8):  # capture each size, then replay both after the other was bound
        torch.testing.assert_close(graphed(batches[size]), plain(batches[size]))
    contexts = {size: entry[0] for size, entry in graphed._graphs.items()}
    assert set(contexts) == {16, 8} and contexts[16] is not contexts[8] and graphed.context not in contexts.values()


@pytest.mark.parametrize("mode,tolerance", [("fp16", 0.05), ("int8", 0.25)])
def test_reduced_precision_logits_stay_close_to_fp32(micro_engines, mode, tolerance):
    fp32 = load_engine_or_skip(micro_engines["fp32"])
    low = load_engine_or_skip(micro_engines[mode])
    images = torch.randn(64, 3, 32, 32, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    reference, candidate = fp32(images).float(), low(images).float()
    relative = ((candidate - reference).abs().max() / reference.abs().max()).item()
    agreement = (candidate.argmax(1) == reference.argmax(1)).float().mean().item()
    assert relative < tolerance and agreement >= 0.9, (relative, agreement)

