"""The digits dataset command and the ImageFolder loader's handling of bad images."""
from __future__ import annotations

import shutil

import pytest
import torch

from config import get_config
from data import build_loader
from utils import UserError

from conftest import MICRO_CFG, run_cmd


def test_make_digits_writes_fixed_split(digits_dir):
    train = sorted(p.relative_to(digits_dir / "train") for p in (digits_dir / "train").rglob("*.png"))
    val = sorted(p.relative_to(digits_dir / "val") for p in (digits_dir / "val").rglob("*.png"))
    assert (len(train), len(val)) == (1437, 360)
    assert sorted(p.name for p in (digits_dir / "val").iterdir()) == [str(i) for i in range(10)]
    assert not {p.name for p in train} & {p.name for p in val}, "an image is in both splits"


def test_make_digits_refuses_to_overwrite(digits_dir):
    proc = run_cmd(["-m", "data.make_digits", "--output", str(digits_dir)], check=False)
    assert proc.returncode == 2 and "already exists" in proc.stderr and "Traceback" not in proc.stderr


def test_val_loader_yields_normalised_batches(digits_dir):
    config = get_config(MICRO_CFG, ["DATA.DATA_PATH", str(digits_dir)])
    images, labels = next(iter(build_loader(config, "val", batch_size=16)))
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.float32
    assert images.min() >= -1.0 and images.max() <= 1.0 and labels.max() < 10


@pytest.fixture()
def data_with_bad_image(digits_dir, tmp_path):
    root = tmp_path / "digits"
    shutil.copytree(digits_dir / "val", root / "val")
    bad = root / "val" / "3" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    return root, bad


def test_bad_image_fails_naming_it(data_with_bad_image):
    root, bad = data_with_bad_image
    config = get_config(MICRO_CFG, ["DATA.DATA_PATH", str(root)])
    with pytest.raises(UserError, match=str(bad)):
        build_loader(config, "val")


def test_bad_image_skipped_when_asked(data_with_bad_image, caplog):
    root, bad = data_with_bad_image
    config = get_config(MICRO_CFG, ["DATA.DATA_PATH", str(root), "DATA.ON_BAD_IMAGE", "skip"])
    loader = build_loader(config, "val")
    assert len(loader.dataset) == 360
    assert str(bad) in caplog.text


def test_missing_data_path_is_a_user_error(tmp_path):
    config = get_config(MICRO_CFG, ["DATA.DATA_PATH", str(tmp_path / "nowhere")])
    with pytest.raises(UserError, match="does not exist"):
        build_loader(config, "val")
