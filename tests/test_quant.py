"""swin_quant_flow.py and quant/: placement, calibration, QAT, checkpoints, Q/DQ export (ModelOpt)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from swin_trt.checkpoint_file import load_checkpoint_file
from swin_trt.config import get_config
from swin_trt.errors import UserError
from swin_trt.models import build_model, load_weights
from swin_trt.models.swin_transformer import SwinTransformerBlock, WindowAttention
from swin_trt.onnx_tools.export import export_onnx
from swin_trt.onnx_tools.graph import lean_graph, op_histogram
from swin_trt.onnx_tools.runtime import OrtPredictor
from swin_trt.quant.calibrate import amax_state, build_calib_loader, calibrate
from swin_trt.quant.checkpoint import load_quant_checkpoint, save_quant_checkpoint
from swin_trt.quant.export import export_quantized, qdq_coverage
from swin_trt.quant.finetune import QATFineTuner
from swin_trt.quant.placement import PLACEMENT, enabled_sites
from swin_trt.quant.quantize import enabled_quantizers

from conftest import MICRO_CFG, TINY_CFG, build_with_trt_rtx, run_cmd, run_in_process, small_digits

TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def random_batches(config, count: int = 2, batch: int = 8, seed: int = 0) -> DataLoader:
    """``count`` seeded batches of random images and labels of the config's sizes, in a fixed order."""
    g = torch.Generator().manual_seed(seed)
    size = config.DATA.IMG_SIZE
    images = torch.randn(count * batch, 3, size, size, generator=g)
    labels = torch.randint(0, config.MODEL.NUM_CLASSES, (count * batch,), generator=g)
    return DataLoader(TensorDataset(images, labels), batch_size=batch, shuffle=False)


def quantized_micro(opts=(), seed: int = 0) -> tuple:
    """Micro model with random weights, quantized and calibrated on random images, on the CPU."""
    config = get_config(MICRO_CFG, list(opts))
    torch.manual_seed(seed)
    model = build_model(config)
    calibrate(model, random_batches(config), config, torch.device("cpu"))
    return config, model


def gemm_and_add_sites(model: nn.Module) -> tuple:
    """(Linear layers + 2 per WindowAttention, 2 residual adds per block) of a plain model: the structure to count against."""
    linears = sum(isinstance(m, nn.Linear) for m in model.modules())
    attentions = sum(isinstance(m, WindowAttention) for m in model.modules())
    blocks = sum(isinstance(m, SwinTransformerBlock) for m in model.modules())
    return linears + 2 * attentions, 2 * blocks


@pytest.fixture(scope="session")
def quant_flow(trained_micro, tmp_path_factory) -> dict:
    """swin_quant_flow.py --quantize on the trained micro model: calibrate, 1 QAT epoch, INT8 export checked on val."""
    out = tmp_path_factory.mktemp("quant_flow")
    report = out / "flow.json"
    proc = run_cmd(["swin_quant_flow.py", "--cfg", MICRO_CFG, "--resume", str(trained_micro["checkpoint"]),
                    "--quantize", "--data-path", str(trained_micro["data"]), "--num-finetune-epochs", "1",
                    "--dynamic-batch", "--check-onnx", "--output", str(out), "--output-json", str(report)], timeout=1800)
    result = json.loads(report.read_text())
    result["stages"] = {row["stage"]: row for row in result["rows"]}
    return {**result, "out": out, "data": trained_micro["data"], "stdout": proc.stdout, "stderr": proc.stderr}


def test_quant_flow_counts_qat_epochs_from_one_and_keeps_modelopts_warnings_off_the_console(quant_flow):
    assert re.search(r"QAT epoch 1/1 loss", quant_flow["stdout"]), quant_flow["stdout"][-2000:]
    console = quant_flow["stdout"] + quant_flow["stderr"]
    for noise in ("TracerWarning", "torch.jit.script` is deprecated", "No CUDA runtime is found",
                  "Updating minimum opset"):
        assert noise not in console, f"{noise!r} reached the console:\n{console[-3000:]}"


def test_placement_rows_switch_off_by_name_or_group():
    names = [s.name for s in PLACEMENT]
    assert len(names) == len(set(names))
    default = {s.name for s in enabled_sites()}
    assert "patch_embed.input" not in default and "qkv.weight" in default
    without_qkv = {s.name for s in enabled_sites(["qkv", "head.input"])}
    assert without_qkv == default - {"qkv.input", "qkv.weight", "head.input"}
    with pytest.raises(UserError, match="not rows of the placement table"):
        enabled_sites(["qkv.bias"])


def test_quantizers_sit_where_the_placement_table_says():
    config, model = quantized_micro()
    names = enabled_quantizers(model)
    blocks = sum(isinstance(m, SwinTransformerBlock) for m in model.modules())
    for suffix in ("attn.qkv.input_quantizer", "attn.qkv.weight_quantizer", "attn.q_bmm_quantizer",
                   "attn.k_bmm_quantizer", "attn.attn_bmm_quantizer", "attn.v_bmm_quantizer",
                   "attn.proj.weight_quantizer", "mlp.fc1.input_quantizer", "mlp.fc2.weight_quantizer",
                   "attn_residual_quantizer", "mlp_residual_quantizer"):
        assert sum(n.endswith(suffix) for n in names) == blocks, suffix
    assert "head.input_quantizer" in names and "head.weight_quantizer" in names
    assert not any(n.startswith("patch_embed") for n in names)
    assert all(m._amax.numel() > 1 for n, m in model.named_modules() if n.endswith("weight_quantizer") and n in names), \
        "INT8 weights are quantized per output channel"
    _, partial = quantized_micro(["QUANT.DISABLED", "['attn_residual', 'mlp_residual', 'head']"])
    off = set(names) - set(enabled_quantizers(partial))
    assert off == {n for n in names if "residual" in n or n.startswith("head.")}


def test_percentile_and_histogram_ranges_are_within_the_max_range():
    _, by_max = quantized_micro()
    maxima = amax_state(by_max)
    # entropy costs seconds per quantizer on a CPU: calibrate the head's two quantizers only
    only_head = str([g for g in {s.group for s in PLACEMENT} if g != "head"])
    for opts in (["QUANT.CALIB_METHOD", "percentile"], ["QUANT.CALIB_METHOD", "histogram", "QUANT.DISABLED", only_head]):
        _, model = quantized_micro(opts)
        amax = amax_state(model)
        assert amax.keys() <= maxima.keys() and amax, opts
        acts = [n for n in amax if not n.endswith("weight_quantizer")]
        assert all(amax[n].item() <= maxima[n].item() * (1 + 1e-6) for n in acts), opts
        assert any(amax[n].item() < maxima[n].item() for n in acts), f"{opts} clipped nothing"
        for n in amax:
            if n.endswith("weight_quantizer"):
                assert torch.equal(amax[n], maxima[n]), "weights always take their max"


def test_quantized_checkpoint_restores_the_same_model(tmp_path):
    config, model = quantized_micro()
    path = tmp_path / "q.pth"
    save_quant_checkpoint(str(path), model, {"format": "int8", "calib_method": "max"}, config_dump=config.dump())
    assert not list(tmp_path.glob("*.tmp"))
    load_checkpoint_file(str(path))  # weights_only=True
    restored = build_model(config)
    checkpoint = load_quant_checkpoint(restored, str(path))
    assert checkpoint["epoch"] == -1 and checkpoint["quant"]["format"] == "int8"
    images = next(iter(random_batches(config, 1, seed=1)))[0]
    model.eval(), restored.eval()
    with torch.no_grad():
        assert torch.equal(model(images), restored(images))
    assert enabled_quantizers(restored) == enabled_quantizers(model)


class Interrupted(Exception):
    """Stands for a run killed right after a checkpoint was written."""


def test_qat_resumed_from_its_checkpoint_matches_an_uninterrupted_run(tmp_path):
    config, start = quantized_micro()
    path = tmp_path / "start.pth"
    save_quant_checkpoint(str(path), start, {"format": "int8", "calib_method": "max"})
    data = random_batches(config, 2, seed=2)
    device = torch.device("cpu")

    def fresh():
        model = build_model(config)
        load_quant_checkpoint(model, str(path))
        return model

    straight = fresh()
    QATFineTuner(straight, straight, data, config, device, 1, epochs=2).run()
    first = fresh()
    tuner = QATFineTuner(first, first, data, config, device, 1, epochs=2)

    def save_then_stop(epoch: int, stats: dict) -> None:
        save_quant_checkpoint(str(tmp_path / "qat.pth"), first, {"format": "int8"}, epoch, tuner.state_dict())
        raise Interrupted

    with pytest.raises(Interrupted):
        tuner.run(0, on_epoch_end=save_then_stop)
    resumed = build_model(config)
    checkpoint = load_quant_checkpoint(resumed, str(tmp_path / "qat.pth"))
    tuner = QATFineTuner(resumed, resumed, data, config, device, 1, epochs=2)
    tuner.load_state_dict(checkpoint)
    tuner.run(checkpoint["epoch"] + 1)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert any(not torch.equal(a, b) for a, b in zip(straight.state_dict().values(), start.state_dict().values()))


def test_two_runs_of_the_flow_fine_tune_to_the_same_weights(trained_micro, tmp_path):
    data = small_digits(trained_micro["data"], tmp_path / "data", 8, 2)
    weights = []
    for run in ("a", "b"):
        run_cmd(["swin_quant_flow.py", "--cfg", MICRO_CFG, "--resume", str(trained_micro["checkpoint"]), "--quantize",
                 "--data-path", str(data), "--num-finetune-epochs", "1", "--num-calib-batch", "1", "--skip-fp32-eval",
                 "--output", str(tmp_path / run)])
        weights.append(load_checkpoint_file(str(tmp_path / run / "swin_micro_digits_int8_qat.pth"))["model"])
    assert weights[0].keys() == weights[1].keys()
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name


def test_ptq_and_qat_stay_close_to_fp32_on_digits(quant_flow):
    stages = quant_flow["stages"]
    fp32, ptq, qat = stages["fp32"]["acc1"], stages["ptq"]["acc1"], stages["qat"]["acc1"]
    assert fp32 >= 95.0, stages
    assert ptq >= fp32 - 1.0, stages
    assert qat >= fp32 - 0.5, stages
    for kind in ("ptq", "qat", "onnx"):
        assert Path(quant_flow["files"][kind]).is_file()


def test_int8_onnx_agrees_with_fake_quant_model_in_onnx_runtime(quant_flow):
    val = quant_flow["onnx"]["checks"]["val"]
    assert val["images"] == 360
    assert val["torch_acc1"] == pytest.approx(quant_flow["stages"]["qat"]["acc1"])
    assert abs(val["onnx_acc1"] - val["torch_acc1"]) <= 0.3, val
    assert abs(val["onnx_acc1"] - quant_flow["stages"]["fp32"]["acc1"]) <= 1.0, val  # the deployed graph
    assert val["top1_agreement"] >= 0.99, val
    qdq = quant_flow["onnx"]["qdq"]
    model = build_model(get_config(MICRO_CFG))
    gemms, adds = gemm_and_add_sites(model)
    assert qdq["gemms"] == qdq["gemms_quantized"] == gemms
    assert qdq["adds_quantized"] == adds


def test_fp8_graph_of_the_trained_model_keeps_its_accuracy_in_onnx_runtime(trained_micro, tmp_path):
    report = tmp_path / "fp8.json"
    run_cmd(["swin_quant_flow.py", "--cfg", MICRO_CFG, "--resume", str(trained_micro["checkpoint"]), "--quantize",
             "--format", "fp8", "--ptq-only", "--data-path", str(trained_micro["data"]), "--dynamic-batch",
             "--output", str(tmp_path), "--output-json", str(report)], timeout=900)
    stages = {row["stage"]: row for row in json.loads(report.read_text())["rows"]}
    out = tmp_path / "ort.json"
    run_cmd(["trt/eval_onnxrt.py", "--cfg", MICRO_CFG, "--resume", str(tmp_path / "swin_micro_digits_fp8.onnx"),
             "--data-path", str(trained_micro["data"]), "--batch-size", "64", "--output-json", str(out)])
    deployed = json.loads(out.read_text())
    assert deployed["images"] == 360
    assert abs(deployed["acc1"] - stages["fp32"]["acc1"]) <= 1.0, (deployed, stages)


def test_eval_onnxrt_evaluates_the_int8_file(quant_flow, tmp_path):
    out = tmp_path / "ort.json"
    run_cmd(["trt/eval_onnxrt.py", "--cfg", MICRO_CFG, "--resume", quant_flow["files"]["onnx"],
             "--data-path", str(quant_flow["data"]), "--batch-size", "64", "--output-json", str(out)])
    metrics = json.loads(out.read_text())
    assert metrics["images"] == 360
    assert metrics["acc1"] == pytest.approx(quant_flow["onnx"]["checks"]["val"]["onnx_acc1"])


def test_int8_onnx_builds_with_tensorrt_rtx(quant_flow):
    assert len(build_with_trt_rtx(quant_flow["files"]["onnx"])) > 0


def test_resume_from_quantized_checkpoint_reevaluates_and_exports_fixed_batch(quant_flow, tmp_path):
    report = tmp_path / "resume.json"
    run_cmd(["swin_quant_flow.py", "--cfg", MICRO_CFG, "--resume", quant_flow["files"]["qat"],
             "--data-path", str(quant_flow["data"]), "--num-finetune-epochs", "1", "--batch-size-onnx", "2",
             "--output", str(tmp_path), "--output-json", str(report)])
    result = json.loads(report.read_text())
    assert [row["stage"] for row in result["rows"]] == ["restored"]
    assert result["rows"][0]["acc1"] == pytest.approx(quant_flow["stages"]["qat"]["acc1"])
    dims = [d.dim_value for d in onnx.load(result["files"]["onnx"]).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, 32, 32]


def test_swin_tiny_int8_graph_quantizes_every_gemm_and_residual_add(tmp_path):
    config = get_config(TINY_CFG)
    torch.manual_seed(0)
    model = build_model(config)
    gemms, adds = gemm_and_add_sites(model)
    calibrate(model, random_batches(config, 1, batch=2), config, torch.device("cpu"))
    graph = lean_graph(export_onnx(model, str(tmp_path / "tiny_int8.onnx"), 224, 1, True, config.ONNX.OPSET))
    qdq = qdq_coverage(graph)
    assert gemms == 76  # 12 blocks x (qkv, proj, fc1, fc2, q·kᵀ, attn·v) + 3 reductions + head
    assert qdq["gemms"] == qdq["gemms_quantized"] == gemms, qdq
    assert qdq["adds_quantized"] == adds == 24, qdq
    assert qdq["quantize"] == qdq["dequantize"] == len(enabled_quantizers(model))


def tensor_types(model: onnx.ModelProto) -> dict:
    """Element type of every tensor of a graph, from ONNX shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    values = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    types = {v.name: v.type.tensor_type.elem_type for v in values}
    types.update({i.name: i.data_type for i in inferred.graph.initializer})
    return types


def activation_ops(model: onnx.ModelProto) -> dict:
    """Op histogram of what a graph computes on activations: Q/DQ and nodes fed by weights only are left out."""
    constant = {i.name for i in model.graph.initializer}
    counts = {}
    for node in model.graph.node:
        if all(name in constant for name in node.input if name):
            constant.update(node.output)
        elif node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def test_int8_graph_is_the_fp16_graph_plus_qdq_pairs(trained_micro, micro_onnx, micro_int8_onnx):
    fp16, int8 = onnx.load(str(micro_onnx["fp16"])), onnx.load(str(micro_int8_onnx))
    assert activation_ops(int8) == activation_ops(fp16)
    types = tensor_types(int8)
    dequantized = {types[n.output[0]] for n in int8.graph.node if n.op_type == "DequantizeLinear"}
    assert dequantized == {onnx.TensorProto.FLOAT16}
    kept = get_config(MICRO_CFG).ONNX.FP16_KEEP_FP32_OPS
    for node in int8.graph.node:
        if node.op_type in kept:
            assert types[node.input[0]] == onnx.TensorProto.FLOAT, node.name
        elif node.op_type in ("MatMul", "Gemm", "LayerNormalization", "Softmax", "Gelu", "Add"):
            assert types[node.input[0]] == onnx.TensorProto.FLOAT16, node.name
    io = {v.type.tensor_type.elem_type for v in list(int8.graph.input) + list(int8.graph.output)}
    assert io == {onnx.TensorProto.FLOAT}
    qdq = qdq_coverage(int8)
    assert qdq["gemms"] == qdq["gemms_quantized"] == gemm_and_add_sites(build_model(get_config(MICRO_CFG)))[0]


def test_qdq_moved_through_data_movement_computes_the_same_bits(tmp_path):
    from swin_trt.onnx_tools.qdq_propagation import propagate_qdq

    config, model = quantized_micro()
    exported = lean_graph(export_onnx(model, str(tmp_path / "raw.onnx"), 32, 1, True, config.ONNX.OPSET))
    moved = propagate_qdq(exported)
    onnx.checker.check_model(moved, full_check=True)

    def movers_on_int8(graph: onnx.ModelProto) -> int:
        types = tensor_types(graph)
        return sum(types.get(n.input[0]) == onnx.TensorProto.INT8 for n in graph.graph.node
                   if n.op_type in ("Reshape", "Transpose", "Slice", "Concat", "Squeeze"))

    assert movers_on_int8(exported) == 0 and movers_on_int8(moved) >= 8
    images = next(iter(random_batches(config, 1, seed=3)))[0].numpy()
    paths = {}
    for name, graph in (("exported", exported), ("moved", moved)):
        paths[name] = str(tmp_path / f"{name}.onnx")
        onnx.save(graph, paths[name])
    before = OrtPredictor(paths["exported"], providers=["CPUExecutionProvider"]).run(images)
    after = OrtPredictor(paths["moved"], providers=["CPUExecutionProvider"]).run(images)
    assert np.array_equal(before, after)


def test_onnx_runtime_rounds_fp16_quantize_inputs_to_nearest_even(tmp_path):
    # The FP16-based Q/DQ graphs quantize FP16 tensors; ONNX Runtime 1.24 truncated them toward zero,
    # which the pinned version must not (the export check would then compare against wrong integers).
    from onnx import TensorProto, helper

    node = helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"])
    graph = helper.make_graph(
        [node], "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [6])],
        [helper.make_tensor_value_info("q", TensorProto.INT8, [6])],
        [helper.make_tensor("scale", TensorProto.FLOAT16, [], [1.0]), helper.make_tensor("zero", TensorProto.INT8, [], [0])])
    path = tmp_path / "q.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), path)
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.array([0.6, 1.6, -0.6, 2.5, 3.5, -2.5], dtype=np.float16)
    assert session.run(None, {"x": x})[0].tolist() == [1, 2, -1, 2, 4, -2]


def test_fp8_export_writes_standard_fp8_qdq_that_onnx_runtime_checks(tmp_path):
    config, model = quantized_micro(["QUANT.FORMAT", "fp8"])
    path = tmp_path / "micro_fp8.onnx"
    report = export_quantized(model, str(path), config, "fp8", random_batches(config), dynamic_batch=True)
    graph = onnx.load(str(path))
    ops = op_histogram(graph)
    assert not any(op.startswith("TRT_") for op in ops) and ops["QuantizeLinear"] >= len(enabled_quantizers(model))
    zero_points = {i.name: i.data_type for i in graph.graph.initializer}
    zero_point_types = {zero_points[n.input[2]] for n in graph.graph.node if n.op_type == "QuantizeLinear"}
    assert zero_point_types == {onnx.TensorProto.FLOAT8E4M3FN}
    assert report["qdq"]["gemms"] == report["qdq"]["gemms_quantized"]
    checked = report["checks"]["calibration"]
    assert report["high_precision"] == "fp16" and checked["images"] == 16
    assert checked["worst"] <= 1.0 and report["checks"]["structure"]["quantizers"] == len(
        enabled_quantizers(model))
    assert len(build_with_trt_rtx(path)) > 0


def test_bf16_high_precision_graph_builds_with_tensorrt_rtx(tmp_path):
    from swin_trt.trt.onnx_precision import graph_precision

    config, model = quantized_micro(["QUANT.HIGH_PRECISION", "bf16"])
    path = tmp_path / "micro_int8_bf16.onnx"
    report = export_quantized(model, str(path), config, "int8", random_batches(config), dynamic_batch=True)
    assert report["checks"] == {}  # ONNX Runtime's CPU provider has no BF16 kernels: onnx.checker only
    precision = graph_precision(onnx.load(str(path)))
    assert precision.low_float == ("BF16",) and "int8" in precision.qdq
    assert len(build_with_trt_rtx(path)) > 0


def test_quantize_on_a_checkpoint_of_another_model_ends_with_one_sentence(digits_dir, tmp_path):
    other = build_model(get_config(MICRO_CFG, ["MODEL.NUM_CLASSES", "5"]))
    ckpt = tmp_path / "other.pth"
    torch.save({"model": other.state_dict()}, ckpt)
    proc = run_in_process(["swin_quant_flow.py", "--cfg", MICRO_CFG, "--resume", str(ckpt), "--quantize",
                           "--data-path", str(digits_dir), "--output", str(tmp_path)])
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: checkpoint {ckpt} does not fit this model/config"), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_empty_calibration_set_is_a_user_error(digits_dir, tmp_path):
    config = get_config(MICRO_CFG, ["DATA.DATA_PATH", str(tmp_path)])
    for digit in range(10):
        (tmp_path / "train" / str(digit)).mkdir(parents=True)
    with pytest.raises(UserError, match="calibration set .* is empty"):
        build_calib_loader(config, 2, 8)
    config = get_config(MICRO_CFG, ["DATA.DATA_PATH", str(digits_dir)])
    with pytest.raises(UserError, match="at least one batch"):
        build_calib_loader(config, 0, 8)
    with pytest.raises(UserError, match="calibration set is empty"):
        calibrate(build_model(config), [], config, torch.device("cpu"))


def test_resume_from_a_plain_checkpoint_is_a_user_error(tmp_path):
    config = get_config(MICRO_CFG)
    plain = tmp_path / "plain.pth"
    torch.save({"model": build_model(config).state_dict()}, plain)
    with pytest.raises(UserError, match="holds no quantization state"):
        load_quant_checkpoint(build_model(config), str(plain))


def test_quantized_checkpoint_of_another_config_is_a_user_error(tmp_path):
    config, model = quantized_micro()
    path = tmp_path / "q.pth"
    save_quant_checkpoint(str(path), model, {"format": "int8"})
    other = build_model(get_config(MICRO_CFG, ["MODEL.SWIN.DEPTHS", "[2, 4]", "MODEL.SWIN.NUM_HEADS", "[3, 6]"]))
    with pytest.raises(UserError, match="does not fit this model/config"):
        load_quant_checkpoint(other, str(path))


def test_torchrun_two_processes_calibrate_like_one_finetune_with_ddp_and_rank0_checks_the_onnx(trained_micro, tmp_path):
    data = small_digits(trained_micro["data"], tmp_path / "digits", 8, 4)
    config = get_config(MICRO_CFG, ["DATA.DATA_PATH", str(data), "QUANT.CALIB_METHOD", "percentile"])
    plain = str(trained_micro["checkpoint"])
    model = build_model(config)
    load_weights(model, plain)
    report = tmp_path / "ddp.json"
    run_cmd([*TORCHRUN, "swin_quant_flow.py", "--cfg", MICRO_CFG, "--resume", plain, "--quantize",
             "--data-path", str(data), "--batch-size", "16", "--num-calib-batch", "2", "--calib-method", "percentile",
             "--num-finetune-epochs", "1", "--skip-fp32-eval", "--check-onnx", "--output", str(tmp_path),
             "--output-json", str(report)])
    result = json.loads(report.read_text())
    assert [row["stage"] for row in result["rows"]] == ["ptq", "qat", "onnxrt"]
    assert all(row["images"] == 40 for row in result["rows"]), "each val image evaluated once over both ranks"
    # only rank 0 exports and checks: on all of val/ itself, with no collective the other rank would have to join
    assert result["onnx"]["checks"]["val"]["torch_acc1"] == pytest.approx(result["rows"][1]["acc1"])
    assert result["world_size"] == 2 and len(result["calib_amax_digests"]) == 2
    assert len(set(result["calib_amax_digests"])) == 1, "both ranks hold the same calibration ranges"
    assert len(result["qat_train"]) == 1 and result["qat_train"][0]["images_per_s"] > 0
    calibrate(model, build_calib_loader(config, 2, 16), config, torch.device("cpu"))
    single = amax_state(model)
    ranks = build_model(config)
    load_quant_checkpoint(ranks, result["files"]["ptq"])
    both = amax_state(ranks)
    assert both.keys() == single.keys()
    for name in single:
        assert torch.allclose(both[name], single[name], rtol=1e-4), name
    assert load_checkpoint_file(result["files"]["qat"])["epoch"] == 0


def test_qat_speed_benchmark_step_trains_the_quantized_model_on_cpu():
    from benchmarks.qat_speed import quantized_model, training_step

    config = get_config(MICRO_CFG)
    model = quantized_model(config, batch=4, device="cpu")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    step = training_step(model, config, batch=4, device="cpu")
    step(), step()
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    assert len(enabled_quantizers(model)) == len(enabled_quantizers(quantized_micro()[1]))
