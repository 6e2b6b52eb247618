"""The model table: our parameter and MAC counts against the original repository's figures and timm's models.

Every model is built on the meta device (structure only), so the whole file takes seconds.
"""
from __future__ import annotations

import functools
import glob
import math
import os
from typing import Dict, Tuple

import pytest
import timm
import torch
import torch.nn as nn

from swin_trt.config import get_config
from swin_trt.models.flops import PUBLISHED_IMAGENET_1K, Published, build_structure, count_macs, count_params

from benchmarks.model_table import build_table, markdown
from conftest import REPO

CONFIG_PATHS = {os.path.basename(p)[:-len(".yaml")]: p for p in sorted(glob.glob(str(REPO / "configs" / "*.yaml")))}

# (MACs, parameters) as the original's own models count them: its models/swin_transformer.py,
# swin_transformer_v2.py and swin_mlp.py (microsoft/Swin-Transformer at f82860bfb5225915aca09c3227159ee9e1df874d),
# built with each config's hyperparameters, ``model.flops()`` and ``sum(p.numel() for p in model.parameters())``.
ORIGINAL_COUNTS: Dict[str, Tuple[int, int]] = {
    "swin_tiny_patch4_window7_224": (4494405120, 28288354),
    "swin_small_patch4_window7_224": (8746520064, 49606258),
    "swin_base_patch4_window7_224": (15438473216, 87768224),
    "swin_base_patch4_window12_384": (47105253376, 87903584),
    "swin_large_patch4_window7_224": (34487049216, 196532476),
    "swin_large_patch4_window12_384": (103952265216, 196735516),
    "swin_micro_digits": (7842240, 306604),
    "swinv2_tiny_patch4_window8_256": (5925697536, 28347154),
    "swinv2_tiny_patch4_window16_256": (6605174784, 28347154),
    "swinv2_small_patch4_window8_256": (11514869760, 49728418),
    "swinv2_small_patch4_window16_256": (12647331840, 49728418),
    "swinv2_base_patch4_window8_256": (20285661184, 87918816),
    "swinv2_base_patch4_window16_256": (21795610624, 87918816),
    "swinv2_base_patch4_window12to16_192to256_22kto1k_ft": (21795610624, 87918816),
    "swinv2_base_patch4_window12to24_192to384_22kto1k_ft": (54748340224, 87918816),
    "swinv2_large_patch4_window12to16_192to256_22kto1k_ft": (47490920448, 196739932),
    "swinv2_large_patch4_window12to24_192to384_22kto1k_ft": (115416895488, 196739932),
    "swinv2_micro_digits": (7840704, 320620),
    "swin_mlp_tiny_c24_patch4_window8_256": (4031920128, 20386632),
}

# our config -> timm's model of the same architecture
TIMM_V2 = {
    "swinv2_tiny_patch4_window8_256": "swinv2_tiny_window8_256",
    "swinv2_tiny_patch4_window16_256": "swinv2_tiny_window16_256",
    "swinv2_small_patch4_window8_256": "swinv2_small_window8_256",
    "swinv2_small_patch4_window16_256": "swinv2_small_window16_256",
    "swinv2_base_patch4_window8_256": "swinv2_base_window8_256",
    "swinv2_base_patch4_window16_256": "swinv2_base_window16_256",
    "swinv2_base_patch4_window12to16_192to256_22kto1k_ft": "swinv2_base_window12to16_192to256",
    "swinv2_large_patch4_window12to16_192to256_22kto1k_ft": "swinv2_large_window12to16_192to256",
    "swinv2_base_patch4_window12to24_192to384_22kto1k_ft": "swinv2_base_window12to24_192to384",
    "swinv2_large_patch4_window12to24_192to384_22kto1k_ft": "swinv2_large_window12to24_192to384",
}

# The one published figure our count (and the original's own, equal to it) does not round to: 103.952G is
# published as 103.9G, cut rather than rounded, while the same table rounds Swin-T's 4.494G up to 4.5G.
TRUNCATED_FLOPS = {"swin_large_patch4_window12_384"}


@functools.lru_cache(maxsize=None)
def structure(name: str) -> nn.Module:
    """The config's model on the meta device, built once per session."""
    return build_structure(get_config(CONFIG_PATHS[name]))


def test_every_shipped_config_is_in_the_table() -> None:
    """Each config has its counts pinned, and each one but the micro digits models has a published figure."""
    assert set(ORIGINAL_COUNTS) == set(CONFIG_PATHS)
    assert set(PUBLISHED_IMAGENET_1K) == {name for name in CONFIG_PATHS if "micro" not in name}


@pytest.mark.parametrize("name", sorted(ORIGINAL_COUNTS))
def test_counts_equal_the_originals_own(name: str) -> None:
    """MACs and parameters equal, to the unit, what the original's models count for the same architecture."""
    model = structure(name)
    assert (count_macs(model), count_params(model)) == ORIGINAL_COUNTS[name]


@pytest.mark.parametrize("name", sorted(PUBLISHED_IMAGENET_1K))
def test_params_round_to_the_published_figure(name: str) -> None:
    published = PUBLISHED_IMAGENET_1K[name]
    params = sum(p.numel() for p in structure(name).parameters())
    assert published.params_agree(params), f"{name}: {params / 1e6:.3f}M does not round to {published.params}"


@pytest.mark.parametrize("name", sorted(set(PUBLISHED_IMAGENET_1K) - TRUNCATED_FLOPS))
def test_gmacs_round_to_the_published_figure(name: str) -> None:
    published = PUBLISHED_IMAGENET_1K[name]
    gmacs = count_macs(structure(name)) / 1e9
    assert published.flops_agree(gmacs), f"{name}: {gmacs:.3f}G does not round to {published.flops}"


@pytest.mark.parametrize("name", sorted(TRUNCATED_FLOPS))
def test_gmacs_published_cut_not_rounded(name: str) -> None:
    """The exception: the published figure is our count cut to its precision, not rounded to it."""
    published = PUBLISHED_IMAGENET_1K[name]
    gmacs = count_macs(structure(name)) / 1e9
    assert not published.flops_agree(gmacs)
    assert f"{math.floor(gmacs * 10) / 10}G" == published.flops


def test_published_figures_agree_at_their_precision() -> None:
    """28M and 5.9G agree with anything that rounds to them, and with nothing else."""
    figure = Published("SwinV2-T", "28M", "5.9G")
    assert figure.params_agree(28_347_154) and figure.params_agree(27_500_001)
    assert not figure.params_agree(28_500_001)
    assert figure.flops_agree(5.9257) and figure.flops_agree(5.86)
    assert not figure.flops_agree(5.96)
    assert Published("Swin-L", "197M", "103.9G").flops_agree(103.94)


@pytest.mark.parametrize("name", sorted(TIMM_V2))
def test_v2_params_equal_timms(name: str) -> None:
    with torch.device("meta"):
        reference = timm.create_model(TIMM_V2[name], pretrained=False)
    assert count_params(structure(name)) == sum(p.numel() for p in reference.parameters())


def test_results_md_holds_the_table() -> None:
    """docs/RESULTS.md shows the table that benchmarks/model_table.py prints for the shipped configs now."""
    table = markdown(build_table(list(CONFIG_PATHS.values()), build=lambda config: structure(config.MODEL.NAME)))
    assert table in (REPO / "docs" / "RESULTS.md").read_text()
