"""Every shipped config evaluates as the original repository's YAML for the same model does.

The table holds the original's values (microsoft/Swin-Transformer, commit f82860b, read from its ``configs/``; a key
a file does not set takes the original's ``config.py`` default: IMG_SIZE 224, INTERPOLATION bicubic, TEST.CROP True,
NUM_CLASSES 1000). Its fine-tune files carry a ``_finetune`` / ``_22kto1k_finetune`` suffix that ours drop; each row
names the original file it was read from.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from swin_trt.config import get_config

from conftest import REPO

# our config -> (the original's file, IMG_SIZE, INTERPOLATION, TEST.CROP, NUM_CLASSES)
ORIGINAL = {
    "swin_tiny_patch4_window7_224": ("configs/swin/swin_tiny_patch4_window7_224.yaml", 224, "bicubic", True, 1000),
    "swin_small_patch4_window7_224": ("configs/swin/swin_small_patch4_window7_224.yaml", 224, "bicubic", True, 1000),
    "swin_base_patch4_window7_224": ("configs/swin/swin_base_patch4_window7_224.yaml", 224, "bicubic", True, 1000),
    "swin_large_patch4_window7_224": ("configs/swin/swin_large_patch4_window7_224_22kto1k_finetune.yaml", 224, "bicubic",
                                      True, 1000),
    "swin_base_patch4_window12_384": ("configs/swin/swin_base_patch4_window12_384_finetune.yaml", 384, "bicubic",
                                      False, 1000),
    "swin_large_patch4_window12_384": ("configs/swin/swin_large_patch4_window12_384_22kto1k_finetune.yaml", 384,
                                       "bicubic", False, 1000),
    "swin_mlp_tiny_c24_patch4_window8_256": ("configs/swinmlp/swin_mlp_tiny_c24_patch4_window8_256.yaml", 256, "bicubic",
                                             True, 1000),
    "swinv2_tiny_patch4_window8_256": ("configs/swinv2/swinv2_tiny_patch4_window8_256.yaml", 256, "bicubic", True, 1000),
    "swinv2_tiny_patch4_window16_256": ("configs/swinv2/swinv2_tiny_patch4_window16_256.yaml", 256, "bicubic", True, 1000),
    "swinv2_small_patch4_window8_256": ("configs/swinv2/swinv2_small_patch4_window8_256.yaml", 256, "bicubic", True, 1000),
    "swinv2_small_patch4_window16_256": ("configs/swinv2/swinv2_small_patch4_window16_256.yaml", 256, "bicubic", True,
                                         1000),
    "swinv2_base_patch4_window8_256": ("configs/swinv2/swinv2_base_patch4_window8_256.yaml", 256, "bicubic", True, 1000),
    "swinv2_base_patch4_window16_256": ("configs/swinv2/swinv2_base_patch4_window16_256.yaml", 256, "bicubic", True, 1000),
    "swinv2_base_patch4_window12to16_192to256_22kto1k_ft": (
        "configs/swinv2/swinv2_base_patch4_window12to16_192to256_22kto1k_ft.yaml", 256, "bicubic", True, 1000),
    "swinv2_large_patch4_window12to16_192to256_22kto1k_ft": (
        "configs/swinv2/swinv2_large_patch4_window12to16_192to256_22kto1k_ft.yaml", 256, "bicubic", True, 1000),
    "swinv2_base_patch4_window12to24_192to384_22kto1k_ft": (
        "configs/swinv2/swinv2_base_patch4_window12to24_192to384_22kto1k_ft.yaml", 384, "bicubic", False, 1000),
    "swinv2_large_patch4_window12to24_192to384_22kto1k_ft": (
        "configs/swinv2/swinv2_large_patch4_window12to24_192to384_22kto1k_ft.yaml", 384, "bicubic", False, 1000),
}
# the embedded default's models: no original counterpart
OURS_ONLY = {"swin_micro_digits", "swinv2_micro_digits"}


def shipped_configs():
    return sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))


def test_every_shipped_config_has_a_row_or_is_ours_only():
    assert set(shipped_configs()) - OURS_ONLY == set(ORIGINAL)


@pytest.mark.parametrize("name", sorted(ORIGINAL))
def test_evaluation_settings_equal_the_originals(name):
    original_file, img_size, interpolation, crop, num_classes = ORIGINAL[name]
    config = get_config(str(REPO / "configs" / f"{name}.yaml"))
    ours = (config.DATA.IMG_SIZE, config.DATA.INTERPOLATION, config.TEST.CROP, config.MODEL.NUM_CLASSES)
    assert ours == (img_size, interpolation, crop, num_classes), f"differs from the original's {original_file}"


def test_the_384_models_record_a_plain_resize_in_their_preprocessing_contract():
    from swin_trt.contract import Preprocessing

    for name in ("swin_base_patch4_window12_384", "swin_large_patch4_window12_384"):
        contract = Preprocessing.from_config(get_config(str(Path(REPO, "configs", f"{name}.yaml"))))
        assert contract.crop_pct == 1.0 and contract.input_size == (3, 384, 384)
