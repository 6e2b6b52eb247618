"""The check of a quantized export: it passes every correct Q/DQ graph (PTQ and after each QAT epoch, INT8 and FP8)
and refuses a wrong one (a quantizer's scale corrupted in the graph, a Q/DQ pair dropped) with one sentence."""
from __future__ import annotations

import onnx
import pytest
import torch
from onnx import numpy_helper

from swin_trt.config import get_config
from swin_trt.models import build_model, load_weights
from swin_trt.onnx_tools.runtime import OrtPredictor
from swin_trt.onnx_tools.verify import ExportCheckError
from swin_trt.quant.calibrate import build_calib_loader, calibrate
from swin_trt.quant.export import export_quantized
from swin_trt.quant.export_check import (StepComparison, check_batches, compare_in_steps, head_step_unit,
                                         verify_quantized)
from swin_trt.quant.quantize import enabled_quantizers

from conftest import MICRO_CFG, assert_all_passed, exports_through_qat, small_digits

@pytest.mark.parametrize("fmt", ["int8", "fp8"])
def test_every_correct_v1_export_passes_ptq_and_after_each_qat_epoch(fmt, trained_micro, tmp_path):
    train = small_digits(trained_micro["data"], tmp_path / "small", 12, 1)
    reports = exports_through_qat(MICRO_CFG, str(trained_micro["checkpoint"]), trained_micro["data"], fmt, tmp_path,
                                  train)
    assert_all_passed(reports)


@pytest.fixture(scope="module")
def calibrated_micro(trained_micro, tmp_path_factory) -> dict:
    """The trained micro model calibrated on the digits, and its INT8 export (checked on its calibration images)."""
    config = get_config(MICRO_CFG, ["DATA.DATA_PATH", str(trained_micro["data"]), "DATA.NUM_WORKERS", "0"])
    model = build_model(config)
    load_weights(model, str(trained_micro["checkpoint"]))
    calibration_images = check_batches(build_calib_loader(config, 2, 32), 64)
    calibrate(model, calibration_images, config, torch.device("cpu"))
    path = tmp_path_factory.mktemp("export_check") / "micro_int8.onnx"
    report = export_quantized(model, str(path), config, "int8", calibration_images, dynamic_batch=True)
    return {"config": config, "model": model.eval(), "images": calibration_images, "path": path, "report": report}


def scale_tensor(graph: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(i for i in graph.graph.initializer if i.name == name)


def test_a_correct_export_reports_every_quantizer_as_a_pair(calibrated_micro):
    structure = calibrated_micro["report"]["checks"]["structure"]
    assert structure["quantizers"] == len(enabled_quantizers(calibrated_micro["model"])) > 0
    assert structure["pairs"] >= structure["quantizers"]


def test_a_corrupted_scale_is_refused_naming_its_quantizer_and_the_numbers_see_it_too(calibrated_micro, tmp_path):
    graph = onnx.load(str(calibrated_micro["path"]))
    quantize = next(n for n in graph.graph.node if n.op_type == "QuantizeLinear" and "blocks.0/attn/qkv/input" in n.name)
    scale = scale_tensor(graph, quantize.input[1])
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * 8, scale.name))
    bad = tmp_path / "bad_scale.onnx"
    onnx.save(graph, str(bad))
    with pytest.raises(ExportCheckError) as refused:
        verify_quantized(str(bad), calibrated_micro["model"], calibrated_micro["images"], 4.0, 2.0)
    sentence = str(refused.value)
    assert "layers.0.blocks.0.attn.qkv.input_quantizer" in sentence and "8x the model's amax/127" in sentence
    assert len(sentence.splitlines()) == 1
    # without the structure check, the logits alone are far outside the tolerance
    numbers = compare_in_steps(calibrated_micro["model"], OrtPredictor(str(bad)), calibrated_micro["images"], 4.0, 2.0,
                               "t")
    assert numbers["worst"] > 1.0 and numbers["worst_steps"] > 10.0


def test_a_dropped_qdq_pair_is_refused_naming_its_quantizer(calibrated_micro, tmp_path):
    graph = onnx.load(str(calibrated_micro["path"]))
    nodes = list(graph.graph.node)
    quantize = next(n for n in nodes if n.op_type == "QuantizeLinear" and "blocks.1/mlp/fc2/input" in n.name)
    dequantize = next(n for n in nodes if n.op_type == "DequantizeLinear" and quantize.output[0] in n.input)
    for node in nodes:  # the pair's consumers read its input directly
        for i, name in enumerate(node.input):
            if name == dequantize.output[0]:
                node.input[i] = quantize.input[0]
    graph.graph.node.remove(quantize)
    graph.graph.node.remove(dequantize)
    bad = tmp_path / "dropped_pair.onnx"
    onnx.save(graph, str(bad))
    onnx.checker.check_model(str(bad), full_check=True)  # a valid graph: only the quantization is missing
    with pytest.raises(ExportCheckError, match=r"has no QuantizeLinear for the model's quantizer "
                                               r"layers\.0\.blocks\.1\.mlp\.fc2\.input_quantizer: "):
        verify_quantized(str(bad), calibrated_micro["model"], calibrated_micro["images"], 4.0, 2.0)


def test_a_flipped_decisive_top1_fails_and_a_near_tie_may_flip():
    unit = torch.full((2, 3), 0.01)  # one head-input step moves each logit by 0.01
    reference = torch.tensor([[2.0, 1.95, 0.0], [3.0, 1.0, 0.0]])  # leads of 2.5 and 100 steps
    comparison = StepComparison(4.0, 2.0)
    comparison.update(reference, torch.tensor([[1.96, 2.0, 0.0], [3.0, 1.0, 0.0]]), unit, reference)
    result = comparison.result()
    assert result["allowed_steps"] == 4.0 and result["worst_steps"] == pytest.approx(5.0)
    assert result["top1_agreement"] == 0.5 and result["decisive_images"] == 1 and result["decisive_agreement"] == 1.0
    comparison.update(reference[1:], torch.tensor([[3.0, 3.1, 0.0]]), unit[1:], reference[1:])
    assert comparison.result()["decisive_agreement"] == 0.5


def test_the_tolerance_grows_with_the_models_own_fp16_movement():
    unit = torch.full((1, 3), 0.01)
    reference = torch.tensor([[2.0, 1.0, 0.0]])
    comparison = StepComparison(4.0, 2.0)
    comparison.update(reference, reference + 0.05, unit, reference + torch.tensor([[0.0, 0.03, 0.0]]))
    result = comparison.result()
    assert result["own_fp16_steps"] == pytest.approx(3.0) and result["allowed_steps"] == pytest.approx(4.0 + 2 * 3.0)
    assert result["worst"] == pytest.approx(5.0 / 10.0)


def test_one_head_input_step_moves_each_logit_by_the_steps_through_the_head_weights(calibrated_micro):
    model = calibrated_micro["model"]
    head_input = torch.rand(3, model.head.in_features)
    step = float(model.head.input_quantizer.amax) / 127
    expected = step * model.head.weight.detach().abs().sum(dim=1)
    assert torch.allclose(head_step_unit(model, head_input), expected.expand(3, -1), rtol=1e-5)


def test_an_fp8_head_input_step_follows_the_value():
    from swin_trt.quant.export_check import head_input_steps

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.input_quantizer = type("Q", (), {"is_enabled": True, "num_bits": (4, 3),
                                                   "amax": torch.tensor(448.0)})()

    model = type("M", (), {"head": Head()})()
    steps = head_input_steps(model, torch.tensor([[1.0, 1.5, 300.0, 0.001]]))
    # E4M3 at scale 1: spacing 2^-3 in [1, 2), 2^5 in [256, 448], 2^-9 below the smallest normal 2^-6
    assert steps.tolist() == [[0.125, 0.125, 32.0, 2.0 ** -9]]


def test_the_flow_checks_on_the_calibration_images_without_val(calibrated_micro):
    report = calibrated_micro["report"]
    assert set(report["checks"]) == {"structure", "calibration"} and report["checks"]["calibration"]["images"] == 64
