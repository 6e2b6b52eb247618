"""trt/eval_onnxrt.py and onnx_tools.runtime: accuracy in ONNX Runtime, fixed-batch padding, shape checks."""
from __future__ import annotations

import json

import pytest
import torch

from swin_trt.config import get_config
from swin_trt.contract import Preprocessing
from swin_trt.errors import UserError
from swin_trt.models import build_model
from swin_trt.onnx_tools.evaluate import evaluate_onnx
from swin_trt.onnx_tools.export import export_checked
from swin_trt.onnx_tools.runtime import OrtPredictor

from conftest import MICRO_CFG, TINY_CFG, command, run_cmd


@pytest.fixture(scope="module")
def micro_fixed_batch(tmp_path_factory):
    """A micro model (random weights) and its export with a fixed batch of 8."""
    torch.manual_seed(0)
    config = get_config(MICRO_CFG)
    model = build_model(config).eval()
    path = tmp_path_factory.mktemp("fixed") / "micro_bs8.onnx"
    export_checked(model, str(path), Preprocessing.from_config(config), batch_size=8, dynamic_batch=False)
    return config, model, path


def test_eval_onnxrt_script_reports_the_accuracy_export_measured(micro_onnx, tmp_path):
    out = tmp_path / "metrics.json"
    run_cmd(["trt/eval_onnxrt.py", "--cfg", MICRO_CFG, "--resume", str(micro_onnx["fp16"]),
             "--data-path", str(micro_onnx["data"]), "--batch-size", "50", "--output-json", str(out)])
    metrics = json.loads(out.read_text())
    expected = micro_onnx["reports"]["fp16"]["checks"]["val"]
    assert metrics["images"] == expected["images"]
    assert metrics["acc1"] == pytest.approx(expected["onnx_acc1"])
    assert metrics["acc5"] == pytest.approx(expected["onnx_acc5"])


def test_fp32_onnx_accuracy_matches_pytorch_on_digits(micro_onnx):
    config = get_config(MICRO_CFG, DATA__DATA_PATH=str(micro_onnx["data"]))
    metrics = evaluate_onnx(config, str(micro_onnx["fp32"]), batch_size=64)
    assert abs(metrics["acc1"] - micro_onnx["reports"]["fp32"]["checks"]["val"]["torch_acc1"]) <= 0.3


def test_fixed_batch_file_takes_any_batch_by_chunking_and_padding(micro_fixed_batch):
    _, model, path = micro_fixed_batch
    predictor = OrtPredictor(str(path), ["CPUExecutionProvider"])
    assert predictor.batch_size == 8
    images = torch.randn(13, 3, 32, 32)  # one full chunk and a padded one
    with torch.no_grad():
        expected = model(images)
    logits = predictor(images)
    assert logits.shape == (13, 10)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)


def test_fixed_batch_file_evaluates_with_a_batch_it_cannot_take(micro_fixed_batch, digits_dir):
    from swin_trt.data import build_loader
    from swin_trt.evaluation import evaluate_model

    _, model, path = micro_fixed_batch
    config = get_config(MICRO_CFG, DATA__DATA_PATH=str(digits_dir))
    metrics = evaluate_onnx(config, str(path), batch_size=50)  # 360 images: 7 batches of 50 and one of 10
    reference = evaluate_model(model, build_loader(config, "val", batch_size=50), torch.device("cpu"))
    assert metrics["images"] == reference["images"] == 360
    assert metrics["acc1"] == pytest.approx(reference["acc1"])
    assert metrics["loss"] == pytest.approx(reference["loss"], rel=1e-4)


def test_input_shape_other_than_the_config_is_one_sentence(micro_fixed_batch):
    _, _, path = micro_fixed_batch
    predictor = OrtPredictor(str(path), ["CPUExecutionProvider"])
    with pytest.raises(UserError, match=r"takes input \[8, 3, 32, 32\] but the config .* needs \(N, 3, 224, 224\)"):
        predictor.check_config(get_config(TINY_CFG))


def test_config_with_other_classes_is_user_error(micro_fixed_batch, digits_dir):
    eval_onnxrt = command("trt/eval_onnxrt.py")
    _, _, path = micro_fixed_batch
    with pytest.raises(UserError, match=f"ONNX file {path} was made for other images than config .*num_classes 10 vs 5"):
        eval_onnxrt.main(["--cfg", MICRO_CFG, "--opts", "MODEL.NUM_CLASSES", "5", "--resume", str(path),
                          "--data-path", str(digits_dir)])


def test_not_an_onnx_file_is_user_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(UserError, match="could not be loaded by ONNX Runtime"):
        OrtPredictor(str(bad))

