"""Our Swin against timm's, and checkpoint loading in every accepted layout."""
from __future__ import annotations

import pytest
import torch
from timm.models.swin_transformer import SwinTransformer as TimmSwin
from timm.models.swin_transformer import checkpoint_filter_fn

from swin_trt.config import get_config
from swin_trt.errors import UserError
from swin_trt.models import build_model, load_weights
from swin_trt.models.swin_transformer import relative_position_index

from conftest import MICRO_CFG, REPO, TINY_CFG


def _timm_twin(config) -> TimmSwin:
    s = config.MODEL.SWIN
    return TimmSwin(img_size=config.DATA.IMG_SIZE, patch_size=s.PATCH_SIZE, embed_dim=s.EMBED_DIM,
                    depths=tuple(s.DEPTHS), num_heads=tuple(s.NUM_HEADS), window_size=s.WINDOW_SIZE,
                    num_classes=config.MODEL.NUM_CLASSES).eval()


def _official_layout(model: torch.nn.Module) -> dict:
    """A state dict as the official release has it: original names plus the derived buffers."""
    sd = dict(model.state_dict())
    for name, module in model.named_modules():
        if hasattr(module, "relative_position_bias_table"):
            sd[f"{name}.relative_position_index"] = relative_position_index(module.window_size[0])
        if getattr(module, "attn_mask", None) is not None:
            sd[f"{name}.attn_mask"] = module.attn_mask.clone()
    return sd


@pytest.mark.parametrize("cfg_name", ["swin_tiny_patch4_window7_224", "swin_base_patch4_window12_384"])
def test_logits_match_timm_with_same_weights(cfg_name):
    torch.manual_seed(0)
    config = get_config(str(REPO / "configs" / f"{cfg_name}.yaml"))
    ours = build_model(config).eval()
    theirs = _timm_twin(config)
    theirs.load_state_dict(checkpoint_filter_fn({"model": _official_layout(ours)}, theirs))
    x = torch.randn(2, 3, config.DATA.IMG_SIZE, config.DATA.IMG_SIZE)
    with torch.no_grad():
        diff = (ours(x) - theirs(x)).abs().max().item()
    assert diff < 1e-4, f"max abs logit difference {diff}"


def test_official_checkpoint_with_buffers_loads(tmp_path):
    config = get_config(MICRO_CFG)
    source = build_model(config)
    path = tmp_path / "official.pth"
    torch.save({"model": _official_layout(source)}, path)
    target = build_model(config)
    load_weights(target, str(path))
    for k, v in source.state_dict().items():
        assert torch.equal(v, target.state_dict()[k]), k


@pytest.mark.parametrize("layout", ["plain", "ddp", "timm"])
def test_other_checkpoint_layouts_load(tmp_path, layout):
    # timm's SwinTransformer has no absolute position embedding, so compare without it
    config = get_config(MICRO_CFG, ["MODEL.SWIN.APE", "False"])
    source = build_model(config).eval()
    if layout == "plain":
        sd = source.state_dict()
    elif layout == "ddp":
        sd = {f"module.{k}": v for k, v in source.state_dict().items()}
    else:  # timm's own layout: export timm's state dict after loading our weights into it
        twin = _timm_twin(config)
        twin.load_state_dict(checkpoint_filter_fn({"model": _official_layout(source)}, twin))
        sd = twin.state_dict()
        assert any(k.startswith("layers.1.downsample") for k in sd)
    torch.save(sd, tmp_path / "w.pth")
    target = build_model(config).eval()
    load_weights(target, str(tmp_path / "w.pth"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(source(x), target(x), atol=1e-6)


def test_checkpoint_for_other_architecture_names_mismatched_keys(tmp_path):
    torch.save({"model": build_model(get_config(TINY_CFG)).state_dict()}, tmp_path / "tiny.pth")
    with pytest.raises(UserError, match=r"does not fit.*(shape mismatch|missing|unexpected): \S+"):
        load_weights(build_model(get_config(MICRO_CFG)), str(tmp_path / "tiny.pth"))


def test_head_of_other_size_fails_unless_fine_tuning(tmp_path):
    other = build_model(get_config(MICRO_CFG, ["MODEL.NUM_CLASSES", "7"]))
    torch.save({"model": other.state_dict()}, tmp_path / "seven.pth")
    model = build_model(get_config(MICRO_CFG))
    d = model.num_features
    with pytest.raises(UserError, match=rf"head\.weight \(7, {d}\) vs \(10, {d}\)"):
        load_weights(model, str(tmp_path / "seven.pth"))
    head_before = model.head.weight.clone()
    load_weights(model, str(tmp_path / "seven.pth"), new_head=True)
    assert torch.equal(model.head.weight, head_before)
    assert torch.equal(model.patch_embed.proj.weight, other.patch_embed.proj.weight)


def test_unreadable_checkpoint_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a PyTorch checkpoint or a safetensors file .it is a text file"):
        load_weights(build_model(get_config(MICRO_CFG)), str(bad))
    bad.write_bytes(b"PK\x03\x04 a zip header and nothing else")
    with pytest.raises(UserError, match="could not be read"):
        load_weights(build_model(get_config(MICRO_CFG)), str(bad))
    with pytest.raises(UserError, match="does not exist"):
        load_weights(build_model(get_config(MICRO_CFG)), str(tmp_path / "missing.pth"))


def test_config_errors_are_one_sentence(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        get_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  SWIN:\n    EMBED_DIMS: 96\n")
    with pytest.raises(UserError, match="unknown key"):
        get_config(str(bad))
    with pytest.raises(UserError, match="unknown key"):
        get_config(MICRO_CFG, ["DATA.BATCH", "3"])
    with pytest.raises(UserError, match="KEY VALUE pairs"):
        get_config(MICRO_CFG, ["DATA.BATCH_SIZE"])


def test_every_shipped_config_builds_and_runs():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        config = get_config(str(path))
        model = build_model(config).eval()
        if config.DATA.IMG_SIZE <= 64:
            with torch.no_grad():
                assert model(torch.randn(1, 3, config.DATA.IMG_SIZE, config.DATA.IMG_SIZE)).shape == (1, config.MODEL.NUM_CLASSES)
