"""export.py and onnx_tools: lean graphs, FP16 with a keep-list, checks against PyTorch, TensorRT-RTX builds."""
from __future__ import annotations

import onnx
import pytest
import torch

from swin_trt.config import get_config
from swin_trt.contract import Preprocessing
from swin_trt.errors import UserError
from swin_trt.models import build_model
from swin_trt.onnx_tools.export import export_checked, save_checked
from swin_trt.onnx_tools.fp16 import convert_to_fp16
from swin_trt.onnx_tools.graph import SHAPE_OPS
from swin_trt.onnx_tools.verify import TOLERANCE, ExportCheckError

from conftest import MICRO_CFG, build_with_trt_rtx, command, run_in_process


@pytest.fixture(scope="module")
def micro_model():
    torch.manual_seed(0)
    config = get_config(MICRO_CFG)
    return config, build_model(config).eval()


@pytest.fixture(scope="module")
def micro_fp32(micro_model, tmp_path_factory):
    """The micro model (random weights) exported and checked in FP32 with dynamic batch: its lean graph."""
    config, model = micro_model
    path = tmp_path_factory.mktemp("micro_fp32") / "micro.onnx"
    export_checked(model, str(path), Preprocessing.from_config(config), dynamic_batch=True)
    return onnx.load(str(path))


def test_trained_micro_onnx_fp32_and_fp16_match_pytorch_accuracy_on_digits(micro_onnx):
    reports = micro_onnx["reports"]
    for precision, report in reports.items():
        val = report["checks"]["val"]
        assert val["relative"] <= TOLERANCE[precision], precision
        assert val["top1_agreement"] >= 0.99, precision
        assert abs(val["onnx_acc1"] - val["torch_acc1"]) <= 0.3, precision
    assert reports["fp16"]["checks"]["val"]["torch_acc1"] == reports["fp32"]["checks"]["val"]["torch_acc1"]


def test_dynamic_batch_export_has_symbolic_batch_and_static_other_dims(micro_onnx):
    io = micro_onnx["reports"]["fp32"]["io"]
    inp, out = io["input"], io["output"]
    assert isinstance(inp[0], str) and inp[1:] == [3, 32, 32]
    assert isinstance(out[0], str) and out[1:] == [10]


def test_fixed_batch_export_has_static_batch(micro_model, tmp_path):
    config, model = micro_model
    report = export_checked(model, str(tmp_path / "fixed.onnx"), Preprocessing.from_config(config), batch_size=3,
                            dynamic_batch=False)
    assert report["io"]["input"] == [3, 3, 32, 32]
    assert report["io"]["output"] == [3, 10]


def test_swin_tiny_graph_is_lean(tiny_onnx):
    fp32 = tiny_onnx["reports"]["fp32"]
    assert fp32["nodes"] <= 600
    assert fp32["shape_ops"] == 0  # no Shape, Gather or Range: every dimension but the batch is static
    assert sum(fp32["ops"].get(op, 0) for op in SHAPE_OPS) == fp32["shape_ops"]
    # LayerNorm is one LayerNormalization op (opset >= 17), not its Pow/Sqrt/ReduceMean internals
    assert fp32["ops"]["LayerNormalization"] > 0 and "Pow" not in fp32["ops"] and "Sqrt" not in fp32["ops"]


def test_swin_tiny_onnx_matches_pytorch(tiny_onnx):
    for precision, report in tiny_onnx["reports"].items():
        assert report["checks"]["random"]["relative"] <= TOLERANCE[precision], precision
    assert tiny_onnx["reports"]["fp16"]["io"]["input"] == tiny_onnx["reports"]["fp32"]["io"]["input"]


def _input_elem_types(model: onnx.ModelProto, op_type: str) -> set:
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info) + list(inferred.graph.input)}
    types.update({i.name: i.data_type for i in inferred.graph.initializer})
    return {types.get(n.input[0]) for n in inferred.graph.node if n.op_type == op_type}


def test_fp16_graph_keeps_listed_ops_in_fp32_and_the_rest_in_fp16(tiny_onnx):
    model = onnx.load(str(tiny_onnx["fp16"]))
    assert get_config(MICRO_CFG).ONNX.FP16_KEEP_FP32_OPS == ["ReduceMean", "Pow", "ReduceL2"]
    assert _input_elem_types(model, "ReduceMean") == {onnx.TensorProto.FLOAT}
    for op in ("MatMul", "Softmax", "LayerNormalization", "Gelu", "Add"):
        assert _input_elem_types(model, op) == {onnx.TensorProto.FLOAT16}, op
    io_types = {v.type.tensor_type.elem_type for v in list(model.graph.input) + list(model.graph.output)}
    assert io_types == {onnx.TensorProto.FLOAT}


def test_fp16_layer_norms_compute_their_statistics_in_fp32(tiny_onnx):
    # stash_type (default 1 = FLOAT) is the precision of mean and variance whatever the input type
    norms = [n for n in onnx.load(str(tiny_onnx["fp16"])).graph.node if n.op_type == "LayerNormalization"]
    assert len(norms) == 29
    for node in norms:
        stash = {a.name: a.i for a in node.attribute}.get("stash_type", 1)
        assert stash == onnx.TensorProto.FLOAT, node.name


def test_fp16_keep_list_is_configurable(micro_fp32):
    converted = convert_to_fp16(micro_fp32, ["Softmax", "LayerNormalization"])
    assert _input_elem_types(converted, "LayerNormalization") == {onnx.TensorProto.FLOAT}
    assert _input_elem_types(converted, "Softmax") == {onnx.TensorProto.FLOAT}
    assert _input_elem_types(converted, "MatMul") == {onnx.TensorProto.FLOAT16}


def test_fp16_keep_list_with_unknown_op_is_user_error(micro_fp32):
    with pytest.raises(UserError, match="LayerNorm'.*not an ONNX op type"):
        convert_to_fp16(micro_fp32, ["LayerNorm"])


def test_check_past_tolerance_fails_and_writes_nothing(micro_model, micro_fp32, tmp_path):
    config, model = micro_model
    path = tmp_path / "strict_fp16.onnx"
    with pytest.raises(ExportCheckError, match=f"{path} differs from PyTorch by .* relative .* past the 1e-09 allowed"):
        save_checked(micro_fp32, str(path), model, Preprocessing.from_config(config), "fp16", config.ONNX.FP16_KEEP_FP32_OPS,
                     tolerance=1e-9)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # the micro_onnx / tiny_onnx fixtures, asked for by name
@pytest.mark.parametrize("model_name", ["micro", "tiny"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_exported_graph_builds_with_tensorrt_rtx(model_name, precision, request):
    files = request.getfixturevalue(f"{model_name}_onnx")
    assert len(build_with_trt_rtx(files[precision])) > 0


def test_missing_checkpoint_ends_with_one_sentence(tmp_path):
    proc = run_in_process(["export.py", "--cfg", MICRO_CFG, "--resume", str(tmp_path / "none.pth"),
                           "--output", str(tmp_path / "x.onnx")])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: weights file or folder {tmp_path / 'none.pth'} does not exist: pass "
                                                "a .pth or .safetensors file, a timm or transformers model folder, or "
                                                "hf:ORG/NAME."]


def test_checkpoint_for_another_config_is_user_error(micro_model, tmp_path):
    export = command("export.py")
    _, model = micro_model
    ckpt = tmp_path / "micro.pth"
    torch.save({"model": model.state_dict()}, ckpt)
    with pytest.raises(UserError, match="does not fit this model/config"):
        export.main(["--cfg", MICRO_CFG, "--resume", str(ckpt), "--opts", "MODEL.NUM_CLASSES", "5",
                     "--output", str(tmp_path / "x.onnx")])


def test_output_in_missing_folder_is_user_error(tmp_path):
    export = command("export.py")
    with pytest.raises(UserError, match="output folder .*missing does not exist"):
        export.main(["--cfg", MICRO_CFG, "--output", str(tmp_path / "missing" / "x.onnx")])


MICRO_MLP = ["MODEL.TYPE", "swin_mlp", "MODEL.SWIN_MLP.EMBED_DIM", "48", "MODEL.SWIN_MLP.DEPTHS", "[2, 2]",
             "MODEL.SWIN_MLP.NUM_HEADS", "[3, 6]", "MODEL.SWIN_MLP.WINDOW_SIZE", "4", "MODEL.SWIN_MLP.APE", "True"]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_swin_mlp_runs_exports_and_matches_pytorch(precision, tmp_path):
    from swin_trt.models.swin_mlp import SwinMLP

    config = get_config(MICRO_CFG, MICRO_MLP)
    torch.manual_seed(0)
    model = build_model(config).eval()
    assert isinstance(model, SwinMLP) and model.layers[0].blocks[1].shift_size == 2
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    report = export_checked(model, str(tmp_path / "mlp.onnx"), Preprocessing.from_config(config), dynamic_batch=True,
                            precision=precision, keep_fp32_ops=config.ONNX.FP16_KEEP_FP32_OPS)
    assert report["checks"]["random"]["relative"] <= TOLERANCE[precision]
    assert report["shape_ops"] == 0
    assert len(build_with_trt_rtx(tmp_path / "mlp.onnx")) > 0


def test_swin_mlp_is_not_quantized_and_says_why(trained_micro, tmp_path):
    proc = run_in_process(["swin_quant_flow.py", "--cfg", MICRO_CFG, "--opts", *MICRO_MLP, "--resume",
                           str(trained_micro["checkpoint"]), "--quantize", "--data-path", str(trained_micro["data"])])
    assert proc.returncode == 2 and "MODEL.TYPE swin_mlp is not quantized here" in proc.stderr
