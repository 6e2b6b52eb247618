"""Our Swin V2 against timm's ``swinv2_*``, its checkpoints in every accepted layout, and its export."""
from __future__ import annotations

import math

import onnx
import pytest
import timm
import torch
from timm.models.swin_transformer_v2 import checkpoint_filter_fn

from swin_trt.config import get_config
from swin_trt.errors import UserError
from swin_trt.models import build_model, load_weights
from swin_trt.models.constants import frozen_constants
from swin_trt.models.swin_transformer import relative_position_index
from swin_trt.models.swin_transformer_v2 import WindowAttentionV2, relative_coords_table
from swin_trt.onnx_tools.export import export_onnx
from swin_trt.onnx_tools.graph import lean_graph, shape_op_count

from conftest import MICRO_CFG, REPO

MICRO_V2_CFG = str(REPO / "configs" / "swinv2_micro_digits.yaml")
# our config -> timm's model of the same architecture
TIMM_NAMES = {
    "swinv2_tiny_patch4_window8_256": "swinv2_tiny_window8_256",
    "swinv2_small_patch4_window16_256": "swinv2_small_window16_256",
    "swinv2_base_patch4_window12to24_192to384_22kto1k_ft": "swinv2_base_window12to24_192to384",
}


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``model`` with every parameter moved off its initial value (V2 starts its post-norm weights at zero, which would
    make every block the identity and any comparison trivial); logit scales spread over (1, 31)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("logit_scale"):
                p.copy_(torch.log(1 + 30 * torch.rand(p.shape, generator=gen)))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            else:
                p.add_(0.02 * noise)
    return model.eval()


def official_layout(model: torch.nn.Module) -> dict:
    """A state dict as the original repository saves it: its names plus the derived buffers."""
    sd = dict(model.state_dict())
    for name, module in model.named_modules():
        if isinstance(module, WindowAttentionV2):
            ws = module.window_size[0]
            sd[f"{name}.relative_position_index"] = relative_position_index(ws)
            sd[f"{name}.relative_coords_table"] = relative_coords_table(ws, module.pretrained_window_size)
        if getattr(module, "attn_mask", None) is not None:
            sd[f"{name}.attn_mask"] = module.attn_mask.clone()
    return sd


def timm_twin(ours: torch.nn.Module, timm_name: str, **kwargs) -> torch.nn.Module:
    theirs = timm.create_model(timm_name, pretrained=False, **kwargs).eval()
    theirs.load_state_dict(checkpoint_filter_fn({"model": official_layout(ours)}, theirs), strict=True)
    return theirs


@pytest.mark.slow
@pytest.mark.parametrize("cfg_name", sorted(TIMM_NAMES))
def test_logits_match_timm_swinv2_with_same_weights(cfg_name):
    config = get_config(str(REPO / "configs" / f"{cfg_name}.yaml"))
    ours = randomized(build_model(config))
    theirs = timm_twin(ours, TIMM_NAMES[cfg_name])
    x = torch.randn(2, 3, config.DATA.IMG_SIZE, config.DATA.IMG_SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert b.abs().max() > 0.5, "the comparison must not be between near-zero logits"
    diff = (a - b).abs().max().item()
    assert diff < 1e-4, f"max abs logit difference {diff}"


def test_micro_v2_matches_timm_and_takes_the_pretrained_window():
    """The micro config against timm's SwinTransformerV2 of the same shape, also with a pre-training window."""
    for pretrained in ((0, 0), (3, 2)):
        config = get_config(MICRO_V2_CFG, ["MODEL.SWINV2.APE", "False",
                                           "MODEL.SWINV2.PRETRAINED_WINDOW_SIZES", str(list(pretrained))])
        ours = randomized(build_model(config))
        theirs = timm_twin(ours, "swinv2_tiny_window8_256", img_size=32,
                           embed_dim=48, depths=(2, 2), num_heads=(3, 6), window_size=4, num_classes=10,
                           pretrained_window_sizes=pretrained)
        x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            assert (ours(x) - theirs(x)).abs().max().item() < 1e-5, pretrained


def test_coordinates_are_scaled_by_the_pretraining_window():
    table = relative_coords_table(16, 12)  # 12to16: coordinates beyond the pre-training window go past ±8
    assert table.shape == (1, 31, 31, 2)
    expected = math.log2(15 / 11 * 8 + 1) / 3
    assert table[0, -1, -1, 0].item() == pytest.approx(expected, rel=1e-6)
    assert relative_coords_table(8)[0, -1, -1, 0].item() == pytest.approx(math.log2(9) / 3)  # ws - 1 maps to 8


@pytest.mark.parametrize("layout", ["official_with_buffers", "official_without_buffers", "timm", "ddp"])
def test_v2_checkpoint_layouts_load(tmp_path, layout):
    config = get_config(MICRO_V2_CFG, ["MODEL.SWINV2.APE", "False"])
    source = randomized(build_model(config))
    if layout == "official_with_buffers":
        sd = {"model": official_layout(source)}
    elif layout == "official_without_buffers":
        sd = {"model": source.state_dict()}
    elif layout == "timm":
        sd = timm_twin(source, "swinv2_tiny_window8_256", img_size=32, embed_dim=48, depths=(2, 2), num_heads=(3, 6),
                       window_size=4, num_classes=10).state_dict()
        assert "head.fc.weight" in sd and not any(k.startswith("layers.0.downsample") for k in sd)
    else:
        sd = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save(sd, tmp_path / "w.pth")
    target = build_model(config).eval()
    load_weights(target, str(tmp_path / "w.pth"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(source(x), target(x))


@pytest.mark.parametrize("checkpoint_cfg, model_cfg, words", [
    (MICRO_CFG, MICRO_V2_CFG, r"holds a Swin V1 model but the config builds a Swin V2 model: .*MODEL\.TYPE swin "),
    (MICRO_V2_CFG, MICRO_CFG, r"holds a Swin V2 model but the config builds a Swin V1 model: .*MODEL\.TYPE swinv2 "),
])
def test_checkpoint_of_the_other_family_is_one_sentence_naming_both(tmp_path, checkpoint_cfg, model_cfg, words):
    torch.save({"model": build_model(get_config(checkpoint_cfg)).state_dict()}, tmp_path / "other.pth")
    with pytest.raises(UserError, match=words) as err:
        load_weights(build_model(get_config(model_cfg)), str(tmp_path / "other.pth"))
    assert str(err.value).count(". ") == 0 and str(err.value).endswith(".")


def test_frozen_constants_equal_the_computed_ones_and_thaw():
    model = randomized(build_model(get_config(MICRO_V2_CFG)))
    attn = next(m for m in model.modules() if isinstance(m, WindowAttentionV2))
    scale, bias = attn.logit_scale_and_bias()
    assert scale.max().item() <= 100.0 + 1e-4 and 0 < bias.min().item() and bias.max().item() < 16
    with frozen_constants(model):
        frozen = attn.logit_scale_and_bias()
        assert not frozen[1].requires_grad
        assert torch.equal(frozen[0], scale.detach()) and torch.equal(frozen[1], bias.detach())
    assert attn.logit_scale_and_bias()[1].requires_grad, "training must see the MLP again after export"


def test_export_stores_the_bias_and_logit_scale_as_constants(tmp_path):
    """No position-bias MLP (Relu, Sigmoid, Exp) and no clamp in the graph; no shape arithmetic beyond the batch."""
    config = get_config(MICRO_V2_CFG)
    model = randomized(build_model(config))
    graph = lean_graph(export_onnx(model, str(tmp_path / "v2.onnx"), 32, dynamic_batch=True))
    ops = {n.op_type for n in graph.graph.node}
    assert not ops & {"Relu", "Sigmoid", "Exp"}, ops
    assert sum(n.op_type == "Clip" for n in graph.graph.node) == sum(n.op_type == "ReduceL2" for n in graph.graph.node)
    assert shape_op_count(graph) == 0
    onnx.checker.check_model(graph)


@pytest.fixture(scope="module")
def v2_tiny_graphs(tmp_path_factory) -> dict:
    """SwinV2-T (window 8, 256; weights moved off their initial values) exported once and checked in ONNX Runtime: FP32,
    the FP16 file from the same graph, and the INT8 Q/DQ graph after max calibration on 2 random images."""
    from swin_trt.contract import Preprocessing
    from swin_trt.onnx_tools.export import export_checked, save_checked
    from swin_trt.quant.calibrate import calibrate
    from swin_trt.quant.export import export_quantized

    config = get_config(str(REPO / "configs" / "swinv2_tiny_patch4_window8_256.yaml"))
    model = randomized(build_model(config))
    out = tmp_path_factory.mktemp("onnx_v2_tiny")
    files = {p: out / f"v2t_{p}.onnx" for p in ("fp32", "fp16", "int8")}
    shape = Preprocessing.from_config(config)
    reports = {"fp32": export_checked(model, str(files["fp32"]), shape, dynamic_batch=True, opset=config.ONNX.OPSET)}
    reports["fp16"] = save_checked(onnx.load(str(files["fp32"])), str(files["fp16"]), model, shape, "fp16",
                                   config.ONNX.FP16_KEEP_FP32_OPS)
    images = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    calibration_images = [(images, torch.zeros(2, dtype=torch.long))]
    calibrate(model, calibration_images, config, torch.device("cpu"))
    reports["int8"] = export_quantized(model, str(files["int8"]), config, "int8", calibration_images, dynamic_batch=True)
    return {**files, "reports": reports}


@pytest.mark.slow
def test_v2_tiny_exports_equal_pytorch_with_no_shape_arithmetic(v2_tiny_graphs):
    fp32, fp16 = v2_tiny_graphs["reports"]["fp32"], v2_tiny_graphs["reports"]["fp16"]
    assert fp32["shape_ops"] == fp16["shape_ops"] == 0 and fp32["io"]["input"][0] == "batch"
    assert fp32["checks"]["random"]["relative"] < 1e-5, fp32["checks"]
    assert fp16["checks"]["random"]["top1_agreement"] == 1.0, fp16["checks"]
    assert not set(fp32["ops"]) & {"Relu", "Sigmoid", "Exp"}, "the position-bias MLP and the logit scale are constants"


@pytest.mark.slow
def test_v2_tiny_int8_graph_stores_fewer_bytes_than_fp16_with_no_more_fp32_layers(v2_tiny_graphs, trt_rtx_backend):
    from swin_trt.trt.network_plan import precision_plan

    fp16 = precision_plan(str(v2_tiny_graphs["fp16"]), trt_rtx_backend).summary()
    int8 = precision_plan(str(v2_tiny_graphs["int8"]), trt_rtx_backend).summary()
    assert int8["bytes"] < 0.9 * fp16["bytes"], (int8["bytes"], fp16["bytes"])
    assert int8["fp32_compute_layers"] <= fp16["fp32_compute_layers"]
    assert int8["gemms"]["linear"] == {"INT8": 52} and int8["gemms"]["attention"] == {"INT8": 24}


def test_an_architecture_the_model_cannot_take_is_one_sentence():
    with pytest.raises(UserError, match=r"describes no swinv2 model \(PRETRAINED_WINDOW_SIZES .* one entry per stage"):
        build_model(get_config(MICRO_V2_CFG, ["MODEL.SWINV2.PRETRAINED_WINDOW_SIZES", "[12, 12, 12, 6]"]))
    with pytest.raises(UserError, match=r"not divisible by window size 3\): check DATA\.IMG_SIZE"):
        build_model(get_config(MICRO_V2_CFG, ["MODEL.SWINV2.WINDOW_SIZE", "3"]))
