"""trt/build_engine.py and trt/onnx_precision.py: strongly typed builds with the TensorRT-RTX builder (CPU)."""
from __future__ import annotations

import json
import os

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import numpy as np

from conftest import MICRO_CFG, run_cmd
from trt.build_engine import BatchProfile, build_engine, resolve_profile
from trt.metadata import file_sha256, metadata_path
from trt.onnx_precision import check_mode, graph_mode, graph_precision
from utils import UserError

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
    assert "gpu" in meta
    leftovers = [f for f in os.listdir(engine.parent) if f.endswith(".tmp")]
    assert not leftovers


def test_fp16_mode_converts_an_fp32_graph_and_keeps_the_listed_ops_in_fp32(micro_engines, trt_rtx_backend):
    from trt.network_plan import precision_plan

    meta = json.loads(open(metadata_path(str(micro_engines["fp16"]))).read())
    assert meta["converted_to_fp16"] is True and meta["fp16_keep_fp32_ops"] == ["ReduceMean", "Pow"]
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

    from config import get_config
    from models import build_model
    from onnx_tools.export import export_onnx

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
                    "--workspace", "512", "--timing-cache", str(tmp_path / "timing.cache")])
    assert engine.is_file() and "fp32 engine" in proc.stdout
    meta = json.loads((tmp_path / "cli.engine.json").read_text())
    assert meta["profile"] == {"min": 8, "opt": 8, "max": 8}
    assert meta["builder_optimization_level"] == 1 and meta["workspace_mib"] == 512
    assert (tmp_path / "timing.cache").is_file()
    proc = run_cmd(["trt/build_engine.py", "--onnx-file", str(micro_onnx["fp32"]), "--trt-engine",
                    str(tmp_path / "x.engine"), "--mode", "int8"], check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --mode int8 needs") and "Traceback" not in proc.stderr


# --- Swin-T ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["fp32", "fp16", "int8"])
def test_swin_tiny_engines_build_with_tensorrt_rtx(mode, tiny_onnx, tiny_int8_onnx, tmp_path):
    source = tiny_int8_onnx if mode == "int8" else tiny_onnx["fp16" if mode == "fp16" else "fp32"]
    meta = build_engine(str(source), str(tmp_path / f"tiny_{mode}.engine"), mode, min_batch=1, opt_batch=16,
                        max_batch=64, backend="tensorrt_rtx", optimization_level=1)
    assert meta["engine_bytes"] > 10_000_000 and meta["converted_to_fp16"] is False
