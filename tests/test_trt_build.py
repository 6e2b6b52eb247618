"""trt/build_engine.py and trt/onnx_precision.py: strongly typed builds with the TensorRT-RTX builder (CPU)."""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from swin_trt.errors import UserError
from swin_trt.trt.build import build_engine, resolve_profile
from swin_trt.trt.engine_builder import BatchProfile, EngineBuilder, load_timing_cache, register_profile
from swin_trt.trt.metadata import file_sha256, metadata_path
from swin_trt.trt.onnx_precision import check_mode, graph_mode, graph_precision

from conftest import MICRO_CFG, run_cmd, run_in_process

pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX wheels (tensorrt-rtx-cu13-*) not installed")


def qdq_matmul_graph(path, zero_point_type=TensorProto.INT8) -> str:
    """A one-MatMul graph whose two inputs come through QuantizeLinear/DequantizeLinear (a real ONNX file)."""
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32), "w")
    scale = numpy_helper.from_array(np.array(0.05, dtype=np.float32), "scale")
    zero = helper.make_tensor("zero", zero_point_type, [], [0])
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["xq"], name="q_x"),
        helper.make_node("DequantizeLinear", ["xq", "scale", "zero"], ["xd"], name="dq_x"),
        helper.make_node("QuantizeLinear", ["w", "scale", "zero"], ["wq"], name="q_w"),
        helper.make_node("DequantizeLinear", ["wq", "scale", "zero"], ["wd"], name="dq_w"),
        helper.make_node("MatMul", ["xd", "wd"], ["y"], name="matmul"),
    ]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
                              [weight, scale, zero])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


# --- profile and mode logic ----------------------------------------------------------------------------------------

def test_profile_defaults_come_from_the_config_and_the_optimum_moves_inside_an_explicit_range():
    defaults = BatchProfile(1, 64, 256)
    assert resolve_profile(None, defaults=defaults) == defaults
    assert resolve_profile(None, max_batch=16, defaults=defaults) == BatchProfile(1, 16, 16)
    assert resolve_profile(None, min_batch=8, opt_batch=8, max_batch=32, defaults=defaults) == BatchProfile(8, 8, 32)
    assert resolve_profile(None, batch_size=16, defaults=defaults) == BatchProfile(16, 16, 16)


def test_fixed_batch_graph_gets_a_fixed_profile_and_rejects_other_batches():
    assert resolve_profile(4) == BatchProfile(4, 4, 4)
    assert resolve_profile(4, batch_size=4) == BatchProfile(4, 4, 4)
    with pytest.raises(UserError, match="fixed batch of 4"):
        resolve_profile(4, batch_size=16, onnx_file="x.onnx")


def test_unordered_or_conflicting_batch_options_are_user_errors():
    with pytest.raises(UserError, match="not ordered"):
        resolve_profile(None, min_batch=32, opt_batch=8, max_batch=64)
    with pytest.raises(UserError, match="cannot be combined"):
        resolve_profile(None, batch_size=8, max_batch=64)


def test_mode_must_match_the_graph(tmp_path, micro_onnx):
    fp32 = graph_precision(onnx.load(str(micro_onnx["fp32"])))
    fp16 = graph_precision(onnx.load(str(micro_onnx["fp16"])))
    qdq = graph_precision(onnx.load(qdq_matmul_graph(tmp_path / "qdq.onnx")))
    assert (graph_mode(fp32), graph_mode(fp16), graph_mode(qdq)) == ("fp32", "fp16", "int8")
    assert check_mode("fp16", fp32, "a.onnx") is True  # converted first
    assert check_mode("fp16", fp16, "b.onnx") is False
    assert check_mode("int8", qdq, "c.onnx") is False
    with pytest.raises(UserError, match="needs an ONNX with INT8 Q/DQ nodes.*export a quantized model"):
        check_mode("int8", fp32, "a.onnx")
    with pytest.raises(UserError, match="has Q/DQ nodes.*--mode int8"):
        check_mode("fp32", qdq, "c.onnx")
    with pytest.raises(UserError, match="already holds FP16"):
        check_mode("fp32", fp16, "b.onnx")
    with pytest.raises(UserError, match="needs an ONNX with FP8"):
        check_mode("fp8", qdq, "c.onnx")


def test_unsigned_quantization_is_rejected_with_the_fix(tmp_path):
    uint8 = graph_precision(onnx.load(qdq_matmul_graph(tmp_path / "u8.onnx", TensorProto.UINT8)))
    assert set(uint8.qdq) == {"uint8"}
    with pytest.raises(UserError, match="symmetric int8"):
        check_mode("int8", uint8, "u8.onnx")


# --- builds --------------------------------------------------------------------------------------------------------

def test_build_writes_engine_and_metadata_atomically(micro_engines):
    engine = micro_engines["fp32"]
    meta = json.loads(open(metadata_path(str(engine))).read())
    assert engine.stat().st_size == meta["engine_bytes"] > 0
    assert meta["onnx_sha256"] == file_sha256(str(micro_engines["onnx"]["fp32"]))
    assert meta["mode"] == "fp32" and meta["strongly_typed"] is True
    assert meta["profile"] == {"min": 1, "opt": 32, "max": 64}
    assert meta["shapes"]["input"]["max"] == [64, 3, 32, 32]
    assert meta["backend"] in ("tensorrt", "tensorrt_rtx") and meta["version"]
    assert meta["module"] in ("tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings")
    assert "gpu" in meta
    assert meta["tf32"] is False and meta["require_user_allocation"] is (meta["backend"] == "tensorrt_rtx")
    summary = meta["precision_summary"]
    assert summary["layers"] > 0 and summary["fp32_compute_layers"] > 0 and list(summary["bytes_by_dtype"]) == ["FLOAT"]
    assert summary["gemms"]["linear"] == {"FLOAT": 18}
    leftovers = [f for f in os.listdir(engine.parent) if f.endswith(".tmp")]
    assert not leftovers


def test_fp16_mode_converts_an_fp32_graph_and_keeps_the_listed_ops_in_fp32(micro_engines, trt_rtx_backend):
    from swin_trt.trt.network_plan import precision_plan

    meta = json.loads(open(metadata_path(str(micro_engines["fp16"]))).read())
    assert meta["converted_to_fp16"] is True and meta["fp16_keep_fp32_ops"] == ["ReduceMean", "Pow", "ReduceL2"]
    converted = onnx.load(str(micro_engines["fp16_onnx"]))
    assert graph_precision(converted).has_fp16
    plan = precision_plan(str(micro_engines["fp16_onnx"]), trt_rtx_backend)
    assert plan.gemms and all(r["precision"] == "HALF" for r in plan.gemms if r["kind"] != "conv"), plan.gemms
    reduce = [r for r in plan.layers if r["type"] == "REDUCE" and not r["constant"]]
    assert reduce and all(r["outputs"] == ["FLOAT"] for r in reduce)


def test_int8_engine_builds_from_the_quant_flow_graph(micro_engines):
    meta = json.loads(open(metadata_path(str(micro_engines["int8"]))).read())
    assert meta["mode"] == "int8" and "int8 Q/DQ" in meta["graph_precision"]


def test_fixed_batch_onnx_builds_a_fixed_profile(tmp_path):
    import torch

    from swin_trt.config import get_config
    from swin_trt.models import build_model
    from swin_trt.onnx_tools.export import export_onnx

    config = get_config(MICRO_CFG)
    torch.manual_seed(0)
    path = tmp_path / "fixed.onnx"
    export_onnx(build_model(config), str(path), 32, batch_size=4, dynamic_batch=False)
    meta = build_engine(str(path), str(tmp_path / "fixed.engine"), "fp32", backend="tensorrt_rtx")
    assert meta["profile"] == {"min": 4, "opt": 4, "max": 4}
    with pytest.raises(UserError, match="fixed batch of 4"):
        build_engine(str(path), str(tmp_path / "other.engine"), "fp32", batch_size=8, backend="tensorrt_rtx")
    assert not (tmp_path / "other.engine").exists()


def test_parser_errors_name_the_node(tmp_path):
    node = helper.make_node("NoSuchOp", ["x"], ["y"], name="my_unknown_node", domain="example.custom")
    graph = helper.make_graph([node], "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example.custom", 1)]),
              str(path))
    with pytest.raises(UserError, match="my_unknown_node"):
        build_engine(str(path), str(tmp_path / "bad.engine"), "fp32", backend="tensorrt_rtx")
    assert not (tmp_path / "bad.engine").exists()


def test_command_line_builds_and_reports_user_errors_in_one_sentence(micro_onnx, tmp_path):
    engine = tmp_path / "cli.engine"
    proc = run_cmd(["trt/build_engine.py", "--onnx-file", str(micro_onnx["fp32"]), "--trt-engine", str(engine),
                    "--mode", "fp32", "--batch-size", "8", "--backend", "tensorrt_rtx", "--builder-optimization-level", "1",
                    "--workspace", "512", "--timing-cache", str(tmp_path / "timing.cache"), "--tf32"])
    assert engine.is_file() and "fp32 engine" in proc.stdout
    meta = json.loads((tmp_path / "cli.engine.json").read_text())
    assert meta["profile"] == {"min": 8, "opt": 8, "max": 8}
    assert meta["builder_optimization_level"] == 1 and meta["workspace_mib"] == 512
    assert meta["tf32"] is True
    # TensorRT-RTX deprecates the timing cache (a no-op that needs a GPU): the option is dropped with a warning
    assert meta["timing_cache"] is None and not (tmp_path / "timing.cache").exists()
    assert "ignoring --timing-cache" in proc.stdout + proc.stderr
    proc = run_in_process(["trt/build_engine.py", "--onnx-file", str(micro_onnx["fp32"]), "--trt-engine",
                           str(tmp_path / "x.engine"), "--mode", "int8"])
    assert proc.returncode == 2 and proc.stderr.startswith("error: --mode int8 needs") and "Traceback" not in proc.stderr


# --- builder settings and TensorRT return values ------------------------------------------------------------------

def test_tf32_is_cleared_unless_asked_although_tensorrt_enables_it_by_default(trt_rtx_backend):
    trt = trt_rtx_backend.module
    default = trt_rtx_backend.create_builder(trt_rtx_backend.logger()).create_builder_config()
    assert default.get_flag(trt.BuilderFlag.TF32)  # the library's default, which an "fp32" engine must not keep
    assert EngineBuilder(trt_rtx_backend).tf32 is False
    assert EngineBuilder(trt_rtx_backend).config.get_flag(trt.BuilderFlag.TF32) is False
    assert EngineBuilder(trt_rtx_backend, tf32=True).tf32 is True


def test_tensorrt_rtx_engines_are_built_for_user_allocation_so_they_can_be_graph_captured(trt_rtx_backend):
    trt = trt_rtx_backend.module
    builder = EngineBuilder(trt_rtx_backend)
    assert builder.require_user_allocation and builder.config.get_flag(trt.BuilderFlag.REQUIRE_USER_ALLOCATION)


def test_a_profile_tensorrt_rejects_is_a_user_error(trt_rtx_backend, tmp_path):
    builder = EngineBuilder(trt_rtx_backend)
    builder.create_network(qdq_matmul_graph(tmp_path / "qdq.onnx"))
    good = {"x": {"min": [1, 8], "opt": [2, 8], "max": [4, 8]}}
    assert register_profile(builder.builder, builder.config, good, "qdq.onnx") == 0
    unordered = {"x": {"min": [4, 8], "opt": [2, 8], "max": [1, 8]}}  # add_optimization_profile returns -1
    with pytest.raises(UserError, match="TensorRT rejected the optimisation profile .* for qdq.onnx"):
        register_profile(builder.builder, builder.config, unordered, "qdq.onnx")


class TimingCacheConfig:
    """The timing-cache part of IBuilderConfig when TensorRT cannot read the file (create_timing_cache returns None)."""

    def create_timing_cache(self, serialized_timing_cache):
        return None

    def set_timing_cache(self, cache, ignore_mismatch):
        raise AssertionError("must not be reached")


def test_an_unreadable_timing_cache_is_a_user_error(tmp_path):
    from tensorrt_api import assert_mirrors_stub, load_stubs

    assert_mirrors_stub(load_stubs(), TimingCacheConfig, "IBuilderConfig")
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"not a cache")
    with pytest.raises(UserError, match=f"timing cache {cache} could not be read by TensorRT.*delete it"):
        load_timing_cache(TimingCacheConfig(), str(cache))


# --- which TensorRT module: full TensorRT without a GPU ------------------------------------------------------------

def full_tensorrt_without_gpu():
    """A ``tensorrt`` module as full TensorRT behaves on a machine without a GPU.

    ``Builder(logger)`` is pybind11 over ``createInferBuilder`` (TensorRT's python/src/infer/pyCore.cpp), which
    returns nullptr without a GPU; pybind11 then raises this TypeError (pybind11/detail/init.h).
    """
    import types

    module = types.ModuleType("tensorrt")
    module.__version__ = "10.13.0.35"

    class Logger:
        WARNING, VERBOSE = "WARNING", "VERBOSE"

        def __init__(self, min_severity):
            self.min_severity = min_severity

    class Builder:
        def __init__(self, logger):
            raise TypeError("pybind11::init(): factory function returned nullptr")

    module.Logger, module.Builder = Logger, Builder
    return module


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the choice on a machine without a GPU")
def test_full_tensorrt_without_a_gpu_is_passed_over_by_auto_and_one_sentence_when_asked_for(monkeypatch, tmp_path):
    import sys

    from swin_trt.trt.backend import load_backend

    from tensorrt_api import load_stubs

    stubs = load_stubs()
    assert ["logger"] in stubs.classes["Builder"]["__init__"] and ["min_severity"] in stubs.classes["Logger"]["__init__"]
    monkeypatch.setitem(sys.modules, "tensorrt", full_tensorrt_without_gpu())
    monkeypatch.setattr("swin_trt.trt.backend._LOGGERS", {})  # the stand-in's logger must not outlive the test
    assert load_backend("auto").is_rtx  # builds on the CPU instead of crashing in trt.Builder
    with pytest.raises(UserError, match=r"tensorrt 10.13.0.35 could not create a builder \(pybind11.*nullptr\).*"
                                        r"--backend tensorrt_rtx"):
        build_engine(qdq_matmul_graph(tmp_path / "qdq.onnx"), str(tmp_path / "x.engine"), "int8", backend="tensorrt")
    monkeypatch.setitem(sys.modules, "tensorrt_rtx_bindings", None)  # only full TensorRT installed
    with pytest.raises(UserError, match="tensorrt 10.13.0.35 is installed but no CUDA GPU is visible.*"
                                        "tensorrt-rtx-cu13-bindings"):
        load_backend("auto")


def test_a_tensorrt_folder_of_type_stubs_is_not_taken_for_tensorrt(monkeypatch):
    import importlib
    import sys

    from swin_trt.trt.backend import load_backend

    from tensorrt_api import stubs_dir

    # the stubs' own tensorrt/*.pyi folder on the path: what `pip install tensorrt-stubs` into site-packages does
    monkeypatch.syspath_prepend(str(stubs_dir()))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    importlib.invalidate_caches()
    assert importlib.import_module("tensorrt").__spec__.origin is None  # an empty namespace package
    assert load_backend("auto").is_rtx
    with pytest.raises(UserError, match="no TensorRT Python module is installed"):
        load_backend("tensorrt")


# --- Swin-T ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["fp32", "fp16", "int8"])
def test_swin_tiny_engines_build_with_tensorrt_rtx(mode, tiny_onnx, tiny_int8_onnx, tmp_path):
    source = tiny_int8_onnx if mode == "int8" else tiny_onnx["fp16" if mode == "fp16" else "fp32"]
    meta = build_engine(str(source), str(tmp_path / f"tiny_{mode}.engine"), mode, min_batch=1, opt_batch=16,
                        max_batch=64, backend="tensorrt_rtx", optimization_level=1)
    assert meta["engine_bytes"] > 10_000_000 and meta["converted_to_fp16"] is False
