"""trt/inspect_engine.py: which matrix multiplies take INT8 (Q/DQ) inputs, from the parsed network and the engine inspector."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from conftest import MICRO_CFG, TINY_CFG, load_engine_or_skip, run_cmd
from trt.engine_inspector import parse_inspector_json
from trt.inspect_engine import inspect_network, summarize
from utils import UserError

pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX wheels (tensorrt-rtx-cu13-*) not installed")


def expected_gemms(cfg: str) -> dict:
    """Matrix multiplies of the PyTorch model: one per Linear, two per WindowAttention (q·kᵀ, attn·v)."""
    from config import get_config
    from models import build_model
    from models.swin_transformer import WindowAttention

    model = build_model(get_config(cfg))
    return {"linear": sum(isinstance(m, nn.Linear) for m in model.modules()),
            "attention": 2 * sum(isinstance(m, WindowAttention) for m in model.modules())}


@pytest.mark.parametrize("cfg,fixture", [(MICRO_CFG, "micro_int8_onnx"), (TINY_CFG, "tiny_int8_onnx")],
                         ids=["micro", "swin_tiny"])
def test_every_matrix_multiply_of_the_int8_network_takes_int8_qdq_inputs(cfg, fixture, request, trt_rtx_backend):
    rows = inspect_network(str(request.getfixturevalue(fixture)), trt_rtx_backend)
    gemms = [r for r in rows if r["kind"] in ("linear", "attention")]
    counts = {kind: sum(r["kind"] == kind for r in gemms) for kind in ("linear", "attention")}
    assert counts == expected_gemms(cfg)
    not_int8 = [(r["layer"], r["inputs"]) for r in gemms if r["precision"] != "INT8"]
    assert not not_int8
    assert all(t["quantized"] == "INT8" and t["dtype"] in ("FLOAT", "HALF") for r in gemms for t in r["inputs"])


def test_fp32_and_fp16_networks_report_their_float_type(micro_onnx, trt_rtx_backend):
    for precision, dtype in (("fp32", "FLOAT"), ("fp16", "HALF")):
        rows = inspect_network(str(micro_onnx[precision]), trt_rtx_backend)
        gemms = [r for r in rows if r["kind"] != "conv"]
        assert gemms and {r["precision"] for r in gemms} == {dtype}
        assert not any(t["quantized"] for r in rows for t in r["inputs"])


def test_command_line_prints_and_writes_the_summary(micro_int8_onnx, tmp_path):
    out = tmp_path / "inspect.json"
    proc = run_cmd(["trt/inspect_engine.py", "--onnx-file", str(micro_int8_onnx), "--layers", "--output-json", str(out)])
    report = json.loads(out.read_text())
    summary = {row["kind"]: row for row in report["summary"]}
    assert summary["attention"]["total"] == summary["attention"]["INT8"] == expected_gemms(MICRO_CFG)["attention"]
    assert "| attention |" in proc.stdout and "Q/DQ INT8" in proc.stdout


# --- engine inspector JSON (the output of IEngineInspector; the real thing needs a GPU) ------------------------------

TRT10_LAYERS = json.dumps({"Layers": [
    {"Name": "qkv", "LayerType": "CaskGemmMatrixMultiply", "TacticName": "sm90_xmma_gemm_i8i8_i32",
     "Inputs": [{"Name": "a", "Format/Datatype": "Row major linear Int8 format"}],
     "Outputs": [{"Name": "b", "Format/Datatype": "Row major linear FP16 format"}]},
    {"Name": "softmax", "LayerType": "Softmax", "TacticName": "",
     "Inputs": [{"Name": "b", "Format/Datatype": "Row major linear FP32 format"}], "Outputs": []},
    {"Name": "fc2", "LayerType": "gemm", "TacticName": "sm90_xmma_gemm_f16f16_f32",
     "Inputs": [{"Name": "c", "Format/Datatype": "Half"}], "Outputs": []}],
    "Bindings": ["input", "output"]})
TRT11_LAYERS = json.dumps({"Layers": [
    {"Name": "attn", "LayerType": "CaskGemmMatrixMultiply", "TacticValue": "0x1",
     "Inputs": [{"Name": "q", "DataType": "FP8", "Format": "Row major linear"}], "Outputs": []}],
    "I/O Tensors": [{"Name": "input", "IOMode": "Input", "DataType": "Float"}]})


def test_inspector_json_of_tensorrt_10_and_11_gives_layer_precisions():
    rows = parse_inspector_json(TRT10_LAYERS)
    assert [(r["layer"], r["gemm"], r["precision"]) for r in rows] == [
        ("qkv", True, "INT8"), ("softmax", False, "FLOAT"), ("fc2", True, "HALF")]
    assert rows[0]["tactic"] == "sm90_xmma_gemm_i8i8_i32"
    assert parse_inspector_json(TRT11_LAYERS)[0]["precision"] == "FP8"
    summary = summarize([r for r in rows if r["gemm"]])
    assert summary == [{"kind": "gemm", "total": 2, "HALF": 1, "INT8": 1}]


def test_engine_without_detailed_profiling_is_a_user_error():
    with pytest.raises(UserError, match="DETAILED"):
        parse_inspector_json(json.dumps({"Layers": ["conv1", "gemm2"]}))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_engine_report_without_a_gpu_ends_with_one_sentence(micro_engines):
    proc = run_cmd(["trt/inspect_engine.py", "--engine", str(micro_engines["int8"])], check=False)
    assert proc.returncode == 2 and "no CUDA device is visible" in proc.stderr


def test_int8_engine_runs_gemms_in_int8_and_fp16_engine_does_not(micro_engines):
    from trt.engine_inspector import inspect_engine

    load_engine_or_skip(micro_engines["int8"])
    int8 = [r for r in inspect_engine(str(micro_engines["int8"])) if r["gemm"]]
    fp16 = [r for r in inspect_engine(str(micro_engines["fp16"])) if r["gemm"]]
    assert any(r["precision"] == "INT8" for r in int8), int8
    assert not any(r["precision"] in ("INT8", "FP8") for r in fp16), fp16
