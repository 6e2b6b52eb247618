"""INT8 that keeps its accuracy when the model fights back (issue 25), on the outlier test bed: the trained micro
model with 4 channels per stage made 200x wider after LayerNorm by a function-preserving rescaling
(swin_trt/quant/outliers.py). Default INT8 PTQ collapses on it; the sensitivity sweep names the rows that hurt; kept
modules, SmoothQuant folded into LayerNorm and AutoQuantize each bring it back within 0.5 points of FP32."""
from __future__ import annotations

import json

import onnx
import pytest
import torch

from swin_trt.config import get_config
from swin_trt.data import build_loader
from swin_trt.errors import UserError
from swin_trt.evaluation import evaluate_model
from swin_trt.models import build_model, load_weights
from swin_trt.quant.calibrate import build_calib_loader, calibrate
from swin_trt.quant.export import qdq_coverage
from swin_trt.quant.outliers import add_outlier_channels
from swin_trt.quant.smoothquant import smooth, smoothing_pairs

from conftest import MICRO_CFG, REPO, build_with_trt_rtx, command, small_digits

MICRO_V2_CFG = str(REPO / "configs" / "swinv2_micro_digits.yaml")
KEPT = ["layers.*.blocks.*.attn.qkv", "layers.*.blocks.*.mlp.fc1"]


@pytest.fixture(scope="module")
def testbed(trained_micro, tmp_path_factory) -> dict:
    """The outlier variant of the trained micro model, written by benchmarks/outlier_testbed.py as a user runs it."""
    out = tmp_path_factory.mktemp("testbed")
    checkpoint = out / "micro_outliers.pth"
    command("benchmarks/outlier_testbed.py").main(["--cfg", MICRO_CFG, "--resume", str(trained_micro["checkpoint"]),
                                                   "--output", str(checkpoint)])
    few = small_digits(trained_micro["data"], out / "few", 26, 12)  # 260 calibration images, 120 val images
    return {"checkpoint": checkpoint, "out": out, "data": trained_micro["data"], "few": few,
            "fp32_acc1": trained_micro["metrics"]["acc1"], "plain": trained_micro["checkpoint"]}


def flow(testbed, name: str, *flags: str, data=None) -> dict:
    """``swin_quant_flow.py --quantize --ptq-only`` on the test bed (in this process); its --output-json."""
    out = testbed["out"] / name
    result = out / "flow.json"
    command("swin_quant_flow.py").main(["--cfg", MICRO_CFG, "--resume", str(testbed["checkpoint"]), "--data-path",
                                        str(data or testbed["data"]), "--quantize", "--ptq-only", "--skip-fp32-eval",
                                        "--dynamic-batch", "--output", str(out), "--output-json", str(result), *flags])
    return json.loads(result.read_text())


def ptq_acc1(result: dict) -> float:
    return next(row["acc1"] for row in result["rows"] if row["stage"] == "ptq")


@pytest.mark.parametrize("cfg", [MICRO_CFG, MICRO_V2_CFG], ids=["v1", "v2"])
def test_the_outlier_variant_computes_the_same_function(cfg):
    config = get_config(cfg)
    torch.manual_seed(0)
    model = build_model(config).eval()
    for p in model.parameters():  # off their initial values (LayerNorm weights and biases too)
        p.data.add_(0.05 * torch.randn_like(p))
    images = torch.randn(4, 3, config.DATA.IMG_SIZE, config.DATA.IMG_SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(images)
        picked = add_outlier_channels(model, factor=200.0, channels=4)
        after = model(images)
    assert float((after - before).abs().max() / before.abs().max()) <= 1e-5
    assert all(len(channels) == 4 for channels in picked.values())
    assert len(picked) == (len(config.MODEL.SWIN.DEPTHS) if config.MODEL.TYPE == "swin" else
                           len(config.MODEL.SWINV2.DEPTHS) - 1)  # V2: every stage but the last


def test_default_int8_ptq_collapses_on_the_test_bed_and_fp8_does_not(testbed):
    losses = {}
    for fmt in ("int8", "fp8"):
        config = get_config(MICRO_CFG, ["DATA.DATA_PATH", str(testbed["data"]), "QUANT.FORMAT", fmt])
        model = build_model(config)
        load_weights(model, str(testbed["checkpoint"]))
        calibrate(model, build_calib_loader(config, config.QUANT.NUM_CALIB_BATCH, config.DATA.BATCH_SIZE), config,
                  torch.device("cpu"))
        acc1 = evaluate_model(model, build_loader(config, "val", shuffle=False), torch.device("cpu"))["acc1"]
        losses[fmt] = testbed["fp32_acc1"] - acc1
    assert losses["int8"] >= 20.0 and losses["fp8"] <= 1.0, losses


SAMPLE = 60  # QUANT.SENSITIVITY_IMAGES: the test bed's harmful rows lead with 30, 60 and 120 images as with 360


def sensitivity(checkpoint, data, out, by: str = "row") -> dict:
    path = out / f"sensitivity_{by}_{checkpoint.stem}.json"
    command("swin_quant_flow.py").main(["--cfg", MICRO_CFG, "--resume", str(checkpoint), "--data-path", str(data),
                                        "--sensitivity", "--sensitivity-by", by, "--batch-size", str(SAMPLE),
                                        "--output-json", str(path), "--opts", "QUANT.SENSITIVITY_IMAGES", str(SAMPLE)])
    return json.loads(path.read_text())


def test_sensitivity_by_row_ranks_the_outlier_rows_first_and_finds_nothing_on_the_plain_model(testbed):
    bed = sensitivity(testbed["checkpoint"], testbed["few"], testbed["out"])
    assert set(bed) >= {"sensitivity", "fp32", "all"} and bed["by"] == "row"
    row = bed["sensitivity"][0]
    assert set(row) >= {"site", "acc1_only", "loss_only", "acc1_all_but", "loss_all_but", "images"}
    assert bed["images"] == SAMPLE and {r["images"] for r in bed["sensitivity"]} == {SAMPLE}  # a sample of the 120
    assert {r["site"] for r in bed["sensitivity"][:2]} == {"qkv.input", "fc1.input"}
    assert [r["acc1_only"] for r in bed["sensitivity"]] == sorted(r["acc1_only"] for r in bed["sensitivity"])
    assert bed["all"]["acc1"] <= bed["fp32"]["acc1"] - 20.0
    plain = sensitivity(testbed["plain"], testbed["few"], testbed["out"])
    noise = 100.0 * 2 / SAMPLE  # two of the sampled images
    assert all(abs(r["acc1_only"] - plain["fp32"]["acc1"]) <= noise for r in plain["sensitivity"]), plain


def test_sensitivity_by_layer_names_modules_and_a_stage_gemm_that_reads_a_layernorm_leads(testbed):
    result = sensitivity(testbed["checkpoint"], testbed["few"], testbed["out"], "layer")
    sites = [r["site"] for r in result["sensitivity"]]
    assert "layers.0.blocks.0.attn.qkv" in sites and "layers.0.blocks.0" in sites  # a Linear, a block's residual adds
    assert sites[0].endswith(("attn.qkv", "mlp.fc1")), sites[:5]


def test_kept_modules_leave_their_gemms_unquantized_and_restore_the_accuracy(testbed):
    pytest.importorskip("tensorrt_rtx_bindings")
    from swin_trt.trt.backend import load_backend
    from swin_trt.trt.network_plan import precision_plan

    plain = flow(testbed, "int8")
    kept = flow(testbed, "kept", "--opts", "QUANT.KEEP_HIGH_PRECISION", str(KEPT))
    assert ptq_acc1(kept) >= testbed["fp32_acc1"] - 0.5 > ptq_acc1(plain) + 20.0
    kept_linears = 2 * 4  # qkv and fc1 of the 4 blocks
    graph = onnx.load(kept["files"]["onnx"])
    coverage = qdq_coverage(graph)
    assert coverage["gemms_quantized"] == qdq_coverage(onnx.load(plain["files"]["onnx"]))["gemms_quantized"] - kept_linears
    gemms = precision_plan(kept["files"]["onnx"], load_backend("tensorrt_rtx")).summary()["gemms"]["linear"]
    assert gemms.get("HALF", 0) == kept_linears, gemms
    assert kept["onnx"]["checks"]["calibration"]["worst"] <= 1.0  # ONNX Runtime agrees with the fake-quantized model
    assert len(build_with_trt_rtx(kept["files"]["onnx"])) > 0


def test_smoothquant_folds_into_layernorm_adds_no_node_and_restores_the_accuracy(testbed):
    plain = flow(testbed, "int8_again")
    smoothed = flow(testbed, "smooth", "--opts", "QUANT.SMOOTH_ALPHA", "0.5")
    assert ptq_acc1(smoothed) >= testbed["fp32_acc1"] - 0.5
    assert smoothed["onnx"]["ops"] == plain["onnx"]["ops"]  # the same graph with other numbers
    assert smoothed["onnx"]["qdq"]["gemms_quantized"] == plain["onnx"]["qdq"]["gemms_quantized"]


def test_smoothing_is_function_preserving_and_leaves_swin_v2_alone():
    config = get_config(MICRO_CFG)
    torch.manual_seed(0)
    model = build_model(config).eval()
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    add_outlier_channels(model)
    with torch.no_grad():
        before = model(images)
    report = smooth(model, [(images, torch.zeros(8, dtype=torch.long))], 0.5, torch.device("cpu"))
    with torch.no_grad():
        after = model(images)
    assert float((after - before).abs().max() / before.abs().max()) <= 1e-5
    assert len(report) == len(smoothing_pairs(model)) == 2 * 4 + 1
    assert max(r["max_input_range_smoothed"] for r in report) < max(r["max_input_range"] for r in report) / 10
    assert smoothing_pairs(build_model(get_config(MICRO_V2_CFG))) == []


def test_autoquantize_mixes_int8_fp8_and_fp16_in_one_graph_within_half_a_point(testbed):
    from swin_trt.checkpoint_file import load_checkpoint_file
    from swin_trt.trt.onnx_precision import graph_precision

    result = flow(testbed, "auto", "--format", "auto", "--effective-bits", "9")
    formats = result["module_formats"]
    assert set(formats.values()) <= {"int8", "fp8", "none"} and len(set(formats.values())) >= 2, formats
    assert "layers.0.blocks.0.attn.qkv" in formats
    assert ptq_acc1(result) >= testbed["fp32_acc1"] - 0.5
    saved = load_checkpoint_file(result["files"]["ptq"])
    assert saved["quant"]["module_formats"] == formats
    precision = graph_precision(onnx.load(result["files"]["onnx"]))
    assert set(precision.qdq) == {f for f in set(formats.values()) if f != "none"}
    assert result["onnx"]["checks"]["calibration"]["worst"] <= 1.0
    assert len(build_with_trt_rtx(result["files"]["onnx"])) > 0


def test_a_keep_pattern_that_matches_no_module_is_one_sentence(testbed):
    with pytest.raises(UserError, match="QUANT.KEEP_HIGH_PRECISION pattern 'layers.*.block.*.qkv' matches no module"):
        flow(testbed, "bad_keep", "--opts", "QUANT.KEEP_HIGH_PRECISION", "['layers.*.block.*.qkv']")
