"""Blackwell's MXFP8 and NVFP4 graphs (issue 30) on the CPU: ModelOpt's presets placed by our table, the nodes
TensorRT parses added to the FP16 graph, checked without ONNX Runtime (structure, and numbers against an independent
emulation; against the fake-quantized model's own CUDA values where the GPU-made fixtures are), refused in one
sentence when wrong, built by TensorRT-RTX, counted by the precision plan; the commands refuse what cannot run here.

Calibration runs on the CPU (it only takes ranges); the fake quantization itself, and with it QAT and the flow's
accuracy, needs CUDA: benchmarks/blackwell_formats.py runs those on a GPU.
"""
from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from swin_trt.config import get_config
from swin_trt.errors import UserError
from swin_trt.models import build_model
from swin_trt.models.build import spread_weights
from swin_trt.onnx_tools.verify import ExportCheckError
from swin_trt.quant.block_check import (check_against_model, check_block_structure, check_numbers,
                                        emulated_references)
from swin_trt.quant.block_formats import MIN_CC_KEY, block_linears, quant_record
from swin_trt.quant.export import export_quantized

from conftest import MICRO_CFG, REPO, build_with_trt_rtx, command

MICRO_V2_CFG = str(REPO / "configs" / "swinv2_micro_digits.yaml")
FIXTURES = REPO / "tests" / "fixtures" / "blackwell"
CFGS = {"v1": MICRO_CFG, "v2": MICRO_V2_CFG}


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> dict:
    """Micro V1 and V2 (random weights spread off their initial values), calibrated on the CPU in MXFP8 and NVFP4 and
    exported by swin_quant_flow's export (checked against ModelOpt's numerics emulated on the CPU), with those
    references."""
    from swin_trt.quant.calibrate import calibrate

    out = tmp_path_factory.mktemp("blocks")
    made = {}
    for name, cfg in CFGS.items():
        for fmt in ("mxfp8", "nvfp4"):
            config = get_config(cfg, ["QUANT.FORMAT", fmt])
            torch.manual_seed(0)
            model = spread_weights(build_model(config).eval())
            images = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
            batches = [(images, torch.zeros(16, dtype=torch.long))]
            calibrate(model, batches, config, torch.device("cpu"))
            path = out / f"{name}_{fmt}.onnx"
            report = export_quantized(model, str(path), config, fmt, batches, dynamic_batch=True)
            made[(name, fmt)] = {"model": model, "graph": onnx.load(path), "path": path, "report": report,
                                 "references": emulated_references(model, batches)}
    return made


@pytest.mark.parametrize("name", ["v1", "v2"])
@pytest.mark.parametrize("fmt", ["mxfp8", "nvfp4"])
def test_the_graph_holds_the_format_where_tensorrt_takes_it_and_fp8_elsewhere(graphs, name, fmt):
    item = graphs[(name, fmt)]
    counts = check_block_structure(item["graph"], fmt)
    linears = block_linears(item["model"])
    check_against_model(item["graph"], linears, fmt)
    assert counts[f"{fmt}_inputs"] == counts[f"{fmt}_weights"] == len(linears)
    numbers = item["report"]["checks"]["numbers"]  # the export checked them against the emulation (no CUDA here)
    assert numbers["linears"] == len(linears) and numbers["reference"] == "ModelOpt's numerics emulated on the CPU"
    quantized = {n: m.in_features for n, m in item["model"].named_modules() if isinstance(m, torch.nn.Linear)
                 and getattr(m, "weight_quantizer", None) is not None and m.weight_quantizer.is_enabled}
    blocks = 32 if fmt == "mxfp8" else 16
    # every quantized Linear whose input is whole blocks takes the format (V2's position-bias MLP is not quantized);
    # the 48-wide first stage stays FP8 under MXFP8
    assert set(linears) == {n for n, w in quantized.items() if w % blocks == 0} and len(linears) >= 12
    assert quant_record(item["graph"]) == {"format": fmt, "min_compute_capability": "10.0"}
    assert not any(n.op_type == "Gelu" and any(a.s == b"tanh" for a in n.attribute) for n in item["graph"].graph.node)


@pytest.mark.parametrize("fmt", ["mxfp8", "nvfp4"])
def test_weights_and_dynamic_quantization_equal_an_independent_emulation(graphs, fmt):
    item = graphs[("v1", fmt)]
    report = check_numbers(item["graph"], item["references"], fmt)
    assert report["linears"] == len(block_linears(item["model"]))
    assert report["worst_weight_mismatch"] <= 1e-3 and report["worst_input_mismatch"] <= 1e-3


@pytest.mark.parametrize("name", ["v1", "v2"])
@pytest.mark.parametrize("fmt", ["mxfp8", "nvfp4"])
def test_gpu_made_graphs_equal_the_fake_quantized_models_cuda_values(name, fmt):
    """The graphs benchmarks/blackwell_formats.py made on a GPU from the trained micro models, against the values
    ModelOpt's CUDA fake quantizers computed there (weights, and calibration activations)."""
    graph_file = FIXTURES / f"micro_{name}_{fmt}.onnx"
    if not graph_file.exists():
        pytest.skip(reason=f"{graph_file} is made on a GPU by benchmarks/blackwell_formats.py and is not here")
    graph = onnx.load(str(graph_file))
    stored = np.load(FIXTURES / f"micro_{name}_{fmt}_references.npz")
    references = {}
    for key in stored.files:
        linear, part = key.rsplit("/", 1)
        references.setdefault(linear, {})[part] = stored[key]
    check_block_structure(graph, graph_file.name)
    report = check_numbers(graph, references, graph_file.name)
    assert report["linears"] == len(references) > 0
    assert len(build_with_trt_rtx(graph_file)) > 0


def _damaged(graph: onnx.ModelProto, how: str) -> onnx.ModelProto:
    graph = copy.deepcopy(graph)
    if how == "block size":
        node = next(n for n in graph.graph.node if n.op_type in ("TRT_FP4DynamicQuantize", "TRT_MXFP8DynamicQuantize"))
        next(a for a in node.attribute if a.name == "block_size").i = 64
    elif how == "scale type":
        scale = next(i for i in graph.graph.initializer if i.name.endswith(("weight_scale_f8", "weight_scale_e8m0")))
        scale.data_type = TensorProto.FLOAT16 if scale.data_type == TensorProto.FLOAT8E4M3FN else TensorProto.INT8
    elif how == "dropped pair":  # one GEMM reads its activation unquantized again
        quantize = next(n for n in graph.graph.node if n.op_type in ("TRT_FP4DynamicQuantize", "TRT_MXFP8DynamicQuantize"))
        gemm_input = next(n for n in graph.graph.node if n.op_type in ("MatMul", "Gemm")
                          and n.input[0].startswith(quantize.name.rsplit("/", 1)[0]))
        gemm_input.input[0] = quantize.input[0]
    elif how == "weight values":
        weight = next(i for i in graph.graph.initializer if i.name.endswith(("weight_f4", "weight_f8")))
        weight.raw_data = bytes(reversed(weight.raw_data))
    return graph


@pytest.mark.parametrize("fmt", ["mxfp8", "nvfp4"])
@pytest.mark.parametrize("how,phrase", [("block size", "blocks of 64"), ("scale type", "scale"),
                                        ("dropped pair", "lost a pair")])
def test_a_wrong_graph_is_refused_by_the_check_and_before_the_builder(graphs, fmt, how, phrase, tmp_path):
    item = graphs[("v1", fmt)]
    damaged = _damaged(item["graph"], how)
    with pytest.raises(ExportCheckError, match=phrase):
        check_block_structure(damaged, "damaged")
        check_against_model(damaged, block_linears(item["model"]), "damaged")
    path = tmp_path / "damaged.onnx"
    onnx.save(damaged, str(path))
    with pytest.raises(UserError) as refused:  # trt/build_engine.py's one sentence (run_main prints it, exit 2)
        command("trt/build_engine.py").main(["--onnx-file", str(path), "--trt-engine", str(tmp_path / "x.engine"),
                                             "--mode", fmt])
    sentence = str(refused.value)
    assert sentence.startswith(f"ONNX {path}") and phrase in sentence and sentence.endswith("the builder was not run.")
    assert not (tmp_path / "x.engine").exists()


@pytest.mark.parametrize("fmt", ["mxfp8", "nvfp4"])
def test_weights_that_are_not_the_models_are_refused_by_the_numbers(graphs, fmt):
    item = graphs[("v1", fmt)]
    with pytest.raises(ExportCheckError, match="dequantizes to other values than the fake-quantized model's"):
        check_numbers(_damaged(item["graph"], "weight values"), item["references"], fmt)


def test_tensorrt_rtx_builds_both_formats_and_the_plan_counts_them(graphs, trt_rtx_backend):
    from swin_trt.trt.network_plan import precision_plan

    plans = {}
    for fmt in ("mxfp8", "nvfp4"):
        assert len(build_with_trt_rtx(graphs[("v1", fmt)]["path"])) > 0
        assert len(build_with_trt_rtx(graphs[("v2", fmt)]["path"])) > 0
        plans[fmt] = precision_plan(str(graphs[("v1", fmt)]["path"]), trt_rtx_backend).summary()
    nvfp4, mxfp8 = plans["nvfp4"], plans["mxfp8"]
    assert nvfp4["gemms"]["linear"] == {"NVFP4": 18} and nvfp4["gemms"]["attention"] == {"FP8": 8}
    assert mxfp8["gemms"]["linear"] == {"MXFP8": 12, "FP8": 6}  # the 48-wide first stage stays FP8
    assert nvfp4["bytes_by_dtype"]["FP4"] > 0 and mxfp8["bytes_by_dtype"]["E8M0"] > 0


def test_the_engine_sidecar_records_the_gpu_and_an_older_gpu_is_one_sentence(graphs, tmp_path, monkeypatch):
    pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX wheels (tensorrt-rtx-cu13-*) not installed")
    import swin_trt.trt.build as build
    from swin_trt.trt.metadata import read_metadata

    engine = tmp_path / "nvfp4.engine"
    build.build_engine(str(graphs[("v1", "nvfp4")]["path"]), str(engine), "nvfp4", min_batch=1, opt_batch=2,
                       max_batch=4, backend="tensorrt_rtx")
    assert read_metadata(str(engine))["quant_record"] == {"format": "nvfp4", "min_compute_capability": "10.0"}
    monkeypatch.setattr(build, "cuda_device_summary", lambda: {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"})
    with pytest.raises(UserError, match="NVFP4, which TensorRT runs from compute capability 10.0 .Blackwell.; this GPU, "
                                        "NVIDIA H100 80GB HBM3, has 9.0: the engine cannot be built here"):
        build.build_engine(str(graphs[("v1", "nvfp4")]["path"]), str(tmp_path / "again.engine"), "nvfp4",
                           min_batch=1, opt_batch=2, max_batch=4, backend="tensorrt_rtx")
    assert MIN_CC_KEY in {p.key for p in graphs[("v1", "nvfp4")]["graph"].metadata_props}


@pytest.mark.parametrize("fmt", ["mxfp8", "nvfp4"])
def test_quantizing_to_a_block_format_without_cuda_is_one_sentence(fmt, tmp_path):
    if torch.cuda.is_available():
        pytest.skip(reason="this machine has a CUDA GPU, where the block formats do quantize")
    data = tmp_path / "data"
    from PIL import Image

    for split in ("train", "val"):
        (data / split / "0").mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(data / split / "0" / "a.png")
    checkpoint = tmp_path / "micro.pth"
    torch.save({"model": build_model(get_config(MICRO_CFG)).state_dict()}, checkpoint)
    with pytest.raises(UserError) as refused:  # swin_quant_flow.py's one sentence (run_main prints it, exit 2)
        command("swin_quant_flow.py").main(["--cfg", MICRO_CFG, "--resume", str(checkpoint), "--data-path", str(data),
                                            "--quantize", "--format", fmt, "--output", str(tmp_path / "q")])
    assert str(refused.value) == (
        f"{fmt.upper()} is quantized on an NVIDIA GPU (ModelOpt's block quantizers run on CUDA only, and this "
        "run has no CUDA GPU): run swin_quant_flow.py on one; the ONNX file it writes builds anywhere (TensorRT-RTX "
        "on a CPU, TensorRT 10.11 or later on any GPU) and runs on Blackwell.")
    assert not (tmp_path / "q").exists()


def test_auto_counts_nvfp4_with_its_scales_and_refuses_a_budget_below_it():
    from swin_trt.quant.auto import LINEAR_WEIGHT, format_attributes, search_formats

    assert format_attributes("nvfp4", LINEAR_WEIGHT)["effective_bits"] == 4.5  # ModelOpt's count: 4 bits + scales
    config = get_config(MICRO_CFG, ["QUANT.FORMAT", "auto", "QUANT.AUTO_FORMATS", "['nvfp4', 'fp8']"])
    with pytest.raises(UserError, match="--effective-bits 4 is below the 4.5 bits of the smallest format searched"):
        search_formats(build_model(config), config, [], 4.0, torch.device("cpu"))


def test_the_placement_table_says_which_rows_take_the_block_format():
    from swin_trt.quant.placement import PLACEMENT, format_placement

    text = format_placement((), PLACEMENT, "nvfp4")
    rows = {line.split()[0]: line.split()[1] for line in text.splitlines()}
    assert rows["qkv.input"] == rows["fc2.weight"] == rows["head.input"] == "nvfp4"
    assert rows["attn.q"] == rows["attn_residual"] == "fp8" and rows["patch_embed.input"] == "off"
