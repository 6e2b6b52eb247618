"""trt/network_plan.py and trt/inspect_engine.py: the precision plan read from TensorRT's parse of a graph, and the engine inspector."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper

from swin_trt.errors import UserError
from swin_trt.trt.engine_inspector import parse_inspector_json, summarize
from swin_trt.trt.network_plan import precision_plan

from conftest import MICRO_CFG, TINY_CFG, load_engine_or_skip, run_cmd, run_in_process

pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX wheels (tensorrt-rtx-cu13-*) not installed")


def expected_gemms(cfg: str) -> dict:
    """Matrix multiplies of the PyTorch model: one per Linear, two per WindowAttention (q·kᵀ, attn·v)."""
    from swin_trt.config import get_config
    from swin_trt.models import build_model
    from swin_trt.models.swin_transformer import WindowAttention

    model = build_model(get_config(cfg))
    return {"linear": sum(isinstance(m, nn.Linear) for m in model.modules()),
            "attention": 2 * sum(isinstance(m, WindowAttention) for m in model.modules())}


def small_qdq_graph(path) -> str:
    """input (N, 8) FP32 → Cast FP16 → Q INT8 → Reshape (2N, 4) → DQ → MatMul with an INT8 weight (4, 3) → + bias
    → Cast FP32 → Relu (an FP32 compute layer) → output (2N, 3). Every tensor's bytes can be counted by hand."""
    half = np.float16
    inits = [numpy_helper.from_array(np.array(0.05, half), "scale"), numpy_helper.from_array(np.array(0, np.int8), "zero"),
             numpy_helper.from_array(np.arange(12, dtype=np.int8).reshape(4, 3), "w_int8"),
             numpy_helper.from_array(np.array(0.01, half), "w_scale"),
             numpy_helper.from_array(np.ones(3, half), "bias"), numpy_helper.from_array(np.array([-1, 4], np.int64), "shape")]
    nodes = [helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16),
             helper.make_node("QuantizeLinear", ["x16", "scale", "zero"], ["xq"]),
             helper.make_node("Reshape", ["xq", "shape"], ["xr"]),
             helper.make_node("DequantizeLinear", ["xr", "scale", "zero"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w_int8", "w_scale", "zero"], ["wd"]),
             helper.make_node("MatMul", ["xd", "wd"], ["y"]),
             helper.make_node("Add", ["y", "bias"], ["yb"]),
             helper.make_node("Cast", ["yb"], ["y32"], to=TensorProto.FLOAT),
             helper.make_node("Relu", ["y32"], ["out"])]
    graph = helper.make_graph(nodes, "plan", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch2", 3])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), str(path))
    return str(path)


def test_plan_counts_what_the_engine_stores_by_the_documented_rules(tmp_path, trt_rtx_backend):
    summary = precision_plan(small_qdq_graph(tmp_path / "small.onnx"), trt_rtx_backend).summary()
    # at batch 1: the Cast to FP16 feeds only the Q (fused: not stored); Q output and the reshaped INT8 tensor,
    # 8 bytes each; DQ outputs and the weight's DQ are not stored; MatMul and bias add 2x3 FP16 (12 bytes each);
    # the Cast to FP32 and the Relu 2x3 FP32 (24 bytes each)
    assert summary["bytes_by_dtype"] == {"FLOAT": 48.0, "HALF": 24.0, "INT8": 16.0}
    assert summary["bytes"] == 88.0
    assert summary["fp32_compute_layers"] == 1  # the Relu; a Cast is not compute
    assert summary["gemms"] == {"linear": {"INT8": 1}}
    at_four = precision_plan(str(tmp_path / "small.onnx"), trt_rtx_backend, batch=4).summary()
    assert at_four["bytes"] == summary["bytes"]  # per image


@pytest.mark.slow  # the INT8 graph fixtures, asked for by name
@pytest.mark.parametrize("cfg,fixture", [(MICRO_CFG, "micro_int8_onnx"), (TINY_CFG, "tiny_int8_onnx")],
                         ids=["micro", "swin_tiny"])
def test_every_matrix_multiply_of_the_int8_network_takes_int8_qdq_inputs(cfg, fixture, request, trt_rtx_backend):
    gemms = [r for r in precision_plan(str(request.getfixturevalue(fixture)), trt_rtx_backend).gemms
             if r["kind"] in ("linear", "attention")]
    counts = {kind: sum(r["kind"] == kind for r in gemms) for kind in ("linear", "attention")}
    assert counts == expected_gemms(cfg)
    not_int8 = [(r["layer"], r["inputs"]) for r in gemms if r["precision"] != "INT8"]
    assert not not_int8
    assert all(t["quantized"] == "INT8" and t["dtype"] == "HALF" for r in gemms for t in r["inputs"])


def test_fp32_and_fp16_networks_report_their_float_type(micro_onnx, trt_rtx_backend):
    for precision, dtype in (("fp32", "FLOAT"), ("fp16", "HALF")):
        plan = precision_plan(str(micro_onnx[precision]), trt_rtx_backend)
        gemms = [r for r in plan.gemms if r["kind"] != "conv"]
        assert gemms and {r["precision"] for r in gemms} == {dtype}
        assert not any(t["quantized"] for r in plan.gemms for t in r["inputs"])


def test_quantized_graphs_store_fewer_bytes_than_fp16_with_no_fp32_fallback(micro_onnx, micro_int8_onnx,
                                                                             trt_rtx_backend):
    fp32, fp16, int8 = (precision_plan(str(path), trt_rtx_backend).summary()
                        for path in (micro_onnx["fp32"], micro_onnx["fp16"], micro_int8_onnx))
    assert int8["bytes"] < fp16["bytes"] < fp32["bytes"]
    assert int8["fp32_compute_layers"] <= fp16["fp32_compute_layers"] < fp32["fp32_compute_layers"]
    assert fp16["layers_by_type"]["NORMALIZATION"] == fp32["layers_by_type"]["NORMALIZATION"]
    assert set(int8["bytes_by_dtype"]) == {"FLOAT", "HALF", "INT8"}


def test_swin_tiny_int8_graph_stores_at_most_085_of_the_fp16_graph(tiny_onnx, tiny_int8_onnx, trt_rtx_backend):
    fp16 = precision_plan(str(tiny_onnx["fp16"]), trt_rtx_backend).summary()
    int8 = precision_plan(str(tiny_int8_onnx), trt_rtx_backend).summary()
    assert int8["bytes"] <= 0.85 * fp16["bytes"], (int8["bytes"], fp16["bytes"])
    assert int8["fp32_compute_layers"] <= fp16["fp32_compute_layers"] == 0
    assert int8["gemms"]["linear"] == {"INT8": 52} and int8["gemms"]["attention"] == {"INT8": 24}


def test_command_line_compares_graphs_and_writes_their_plans(micro_onnx, micro_int8_onnx, tmp_path):
    out = tmp_path / "plans.json"
    proc = run_cmd(["trt/inspect_engine.py", "--compare", str(micro_onnx["fp16"]), str(micro_int8_onnx),
                    "--layers", "--output-json", str(out)])
    graphs = json.loads(out.read_text())["graphs"]
    fp16, int8 = (g["summary"] for g in graphs)
    assert int8["gemms"]["attention"] == {"INT8": expected_gemms(MICRO_CFG)["attention"]}
    ratio = f"{int8['bytes'] / fp16['bytes']:.2f}"
    assert f"| bytes / {micro_onnx['fp16'].name} | 1.00 | {ratio} |" in proc.stdout
    assert "| MATRIX_MULTIPLY |" in proc.stdout and "not a measurement of an engine" in proc.stdout
    one = tmp_path / "one.json"
    run_cmd(["trt/inspect_engine.py", "--onnx-file", str(micro_int8_onnx), "--output-json", str(one)])
    assert json.loads(one.read_text())["summary"] == int8


def test_missing_or_bad_inputs_end_with_one_sentence(tmp_path):
    proc = run_in_process(["trt/inspect_engine.py", "--onnx-file", str(tmp_path / "none.onnx")])
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_in_process(["trt/inspect_engine.py", "--onnx-file", str(tmp_path / "none.onnx"), "--batch", "0"])
    assert proc.returncode == 2 and "--batch 0" in proc.stderr


# --- engine inspector JSON (the output of IEngineInspector; the real thing needs a GPU) ------------------------------
# Tensor entries in both layouts. TensorRT 10: "Format/Datatype" sentences as published layer JSON shows them.
# TensorRT 11: "Datatype" (words of TensorRT's DataType printer: Float, Half, BFloat16, Int8, FP8) plus "Format"
# (the format descriptions in the TensorRT-RTX 1.7 library, "... (kLINEAR)"). polygraphy 0.53.6 reads both layouts.

def tensor(name, layout, dtype_word, format_text):
    if layout == 10:
        return {"Name": name, "Dimensions": [16, 64], "Format/Datatype": format_text}
    return {"Name": name, "Dimensions": [16, 64], "Datatype": dtype_word, "Format": format_text}


# (TensorRT DataType member, TensorRT 10 Format/Datatype, TensorRT 11 Datatype, TensorRT 11 Format)
TENSOR_TYPES = [
    ("INT8", "Thirty-two wide channel vectorized row major Int8 format", "Int8", "Row major linear INT8 format (kLINEAR)"),
    ("HALF", "Row major linear FP16 format", "Half", "Row major linear FP16 format (kLINEAR)"),
    ("HALF", "Half", "Half", "Channel major FP16 format where channel % 8 == 0"),
    ("BF16", "Row major linear BF16 format", "BFloat16", "Row major linear BF16 format (kLINEAR)"),
    ("FP8", "Row major linear FP8 format", "FP8", "Row major linear FP8 format (kLINEAR)"),
    ("FLOAT", "Row major linear FP32", "Float", "Row major linear FP32 format (kLINEAR)"),
    ("FLOAT", "Float", "Float", "Format not available due to dynamic shapes"),
    (None, "N/A due to dynamic shapes", "", "Format not available due to dynamic shapes"),
]


def inspector_layers(layout: int) -> list:
    """One GEMM layer per tensor type (its input of that type), plus the layers the report test needs."""
    layers = [{"Name": f"gemm_{i}", "LayerType": "CaskGemmMatrixMultiply", "TacticName": "sm90_xmma_gemm",
               "Inputs": [tensor(f"in_{i}", layout, word, fmt if layout == 11 else old)],
               "Outputs": [tensor(f"out_{i}", layout, "Half", "Row major linear FP16 format (kLINEAR)"
                                  if layout == 11 else "Row major linear FP16 format")]}
              for i, (_, old, word, fmt) in enumerate(TENSOR_TYPES)]
    layers.append({"Name": "softmax", "LayerType": "Softmax", "TacticName": "",
                   "Inputs": [tensor("s", layout, "Float", "Row major linear FP32 format (kLINEAR)"
                                     if layout == 11 else "Row major linear FP32 format")], "Outputs": []})
    return layers


def inspector_json(layout: int) -> str:
    io = {"Bindings": ["input", "output"]} if layout == 10 else \
        {"I/O Tensors": [{"Name": "input", "IOMode": "Input", "DataType": "Float", "Dimensions": [16, 64]}]}
    return json.dumps({"Layers": inspector_layers(layout), **io})


@pytest.mark.parametrize("layout", [10, 11])
def test_inspector_json_of_tensorrt_10_and_11_gives_every_tensor_type(layout):
    rows = parse_inspector_json(inspector_json(layout))
    gemms = [r for r in rows if r["gemm"]]
    assert [r["inputs"][0] for r in gemms] == [expected for expected, *_ in TENSOR_TYPES]
    assert all(r["outputs"] == ["HALF"] for r in gemms)
    assert [r["precision"] for r in gemms][:5] == ["INT8", "HALF", "HALF", "BF16", "FP8"]
    assert rows[-1]["layer"] == "softmax" and not rows[-1]["gemm"] and rows[-1]["precision"] == "FLOAT"
    assert gemms[0]["tactic"] == "sm90_xmma_gemm"
    summary = summarize(gemms)
    assert summary == [{"kind": "gemm", "total": 8, "?": 1, "BF16": 1, "FLOAT": 2, "FP8": 1, "HALF": 2, "INT8": 1}]


# polygraphy DataType -> TensorRT DataType member name
POLYGRAPHY_TO_TENSORRT = {"float32": "FLOAT", "float16": "HALF", "bfloat16": "BF16", "int8": "INT8",
                          "float8e4m3fn": "FP8", "int32": "INT32", "int64": "INT64", "uint8": "UINT8", "bool": "BOOL"}


def polygraphy_tensor_types(layers: list, monkeypatch) -> list:
    """Per-layer input types as polygraphy 0.53.6's engine extractor reads them from inspector JSON.

    ``graph_data_from_trt_engine`` asks an engine for its inspector and each layer's JSON; the stand-in below
    serves exactly that (the ICudaEngine / EngineInspector members it reads, no I/O tensors), so what is
    exercised is polygraphy's own JSON reading. Its TensorRT enums come from the TensorRT-RTX bindings.
    """
    from polygraphy.tools.inspect.subtool.model.extractors import _trt as extractor

    from tensorrt_api import assert_mirrors_stub, load_stubs

    trt = pytest.importorskip("tensorrt_rtx_bindings")
    monkeypatch.setattr(extractor, "trt", trt)

    class Inspector:
        execution_context = None

        def get_layer_information(self, layer_index, format):
            assert format == trt.LayerInformationFormat.JSON
            return json.dumps(layers[layer_index])

    class Engine:
        name, refittable, num_io_tensors, num_optimization_profiles = "fixture", False, 0, 1
        num_layers, device_memory_size_v2 = len(layers), 0
        profiling_verbosity = trt.ProfilingVerbosity.DETAILED

        def create_engine_inspector(self):
            return Inspector()

    stubs = load_stubs()
    assert_mirrors_stub(stubs, Engine, "ICudaEngine")
    assert_mirrors_stub(stubs, Inspector, "EngineInspector")
    graph = extractor.graph_data_from_trt_engine(Engine(), context=None)
    return [[POLYGRAPHY_TO_TENSORRT[t.dtype.name] if t.dtype else None for t in node.inputs] for node in graph.nodes]


@pytest.mark.parametrize("layout", [10, 11])
def test_inspector_types_agree_with_polygraphys_reading_of_the_same_json(layout, monkeypatch):
    layers = inspector_layers(layout)
    ours = [row["inputs"] for row in parse_inspector_json(json.dumps({"Layers": layers}))]
    theirs = polygraphy_tensor_types(layers, monkeypatch)
    # polygraphy 0.53.6's table has no FP8 key and no "BF16" (only "BFLOAT16"): it reads those as unknown
    gaps = {("FP8", 10), ("FP8", 11), ("BF16", 10)}
    for (expected, *_), mine, nvidia in zip(TENSOR_TYPES, ours, theirs):
        if (expected, layout) in gaps:
            assert nvidia == [None] and mine == [expected]
        else:
            assert mine == nvidia == [expected]
    assert ours[-1] == theirs[-1] == ["FLOAT"]


def test_engine_without_detailed_profiling_is_a_user_error():
    with pytest.raises(UserError, match="DETAILED"):
        parse_inspector_json(json.dumps({"Layers": ["conv1", "gemm2"]}))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_engine_report_without_a_gpu_ends_with_one_sentence(micro_engines):
    proc = run_in_process(["trt/inspect_engine.py", "--engine", str(micro_engines["int8"])])
    assert proc.returncode == 2 and "no CUDA device is visible" in proc.stderr


def test_int8_engine_runs_gemms_in_int8_and_fp16_engine_does_not(micro_engines):
    from swin_trt.trt.engine_inspector import inspect_engine

    load_engine_or_skip(micro_engines["int8"])
    int8 = [r for r in inspect_engine(str(micro_engines["int8"])) if r["gemm"]]
    fp16 = [r for r in inspect_engine(str(micro_engines["fp16"])) if r["gemm"]]
    assert any(r["precision"] == "INT8" for r in int8), int8
    assert not any(r["precision"] in ("INT8", "FP8") for r in fp16), fp16
