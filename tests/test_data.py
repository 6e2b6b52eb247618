"""The digits dataset command and the ImageFolder loader's handling of bad images."""
from __future__ import annotations

import shutil

import pytest
import torch

from swin_trt.config import get_config
from swin_trt.data import build_loader
from swin_trt.errors import UserError

from conftest import MICRO_CFG, run_cmd


def test_make_digits_writes_fixed_split(digits_dir):
    train = sorted(p.relative_to(digits_dir / "train") for p in (digits_dir / "train").rglob("*.png"))
    val = sorted(p.relative_to(digits_dir / "val") for p in (digits_dir / "val").rglob("*.png"))
    assert (len(train), len(val)) == (1437, 360)
    assert sorted(p.name for p in (digits_dir / "val").iterdir()) == [str(i) for i in range(10)]
    assert not {p.name for p in train} & {p.name for p in val}, "an image is in both splits"


def test_make_digits_keeps_a_folder_that_already_holds_them(digits_dir):
    proc = run_cmd(["make_digits.py", "--output", str(digits_dir)])
    assert "already holds these 1437 train and 360 val images" in proc.stdout


def test_make_digits_refuses_to_overwrite_another_folder(digits_dir, tmp_path):
    other = tmp_path / "digits"
    shutil.copytree(digits_dir, other)
    (other / "val" / "3" / "extra.png").write_bytes(next((other / "val" / "4").iterdir()).read_bytes())
    before = sorted(p.name for p in (other / "val" / "3").iterdir())
    proc = run_cmd(["make_digits.py", "--output", str(other)], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "already exists and is not the digits dataset this command writes (1 file(s) missing" in proc.stderr
    assert sorted(p.name for p in (other / "val" / "3").iterdir()) == before, "the folder was changed"


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


def test_bad_image_fails_naming_it_when_read(data_with_bad_image):
    root, bad = data_with_bad_image
    config = get_config(MICRO_CFG, ["DATA.DATA_PATH", str(root)])
    loader = build_loader(config, "val", batch_size=64)  # listing only: nothing is opened yet
    with pytest.raises(UserError, match=f"image {bad} cannot be read .*DATA.ON_BAD_IMAGE skip"):
        for _ in loader:
            pass


def test_bad_image_skipped_when_asked(data_with_bad_image, caplog):
    root, bad = data_with_bad_image
    config = get_config(MICRO_CFG, ["DATA.DATA_PATH", str(root), "DATA.ON_BAD_IMAGE", "skip"])
    loader = build_loader(config, "val", batch_size=64)
    assert len(loader.dataset) == 361, "the bad file is listed; it is left out when read"
    sizes = [len(target) for _, target in loader]
    assert sum(sizes) == 360 and sorted(sizes).count(63) == 1, sizes
    assert f"skipping unreadable image {bad}" in caplog.text


def test_skip_drops_bad_images_in_worker_batches_and_yields_no_empty_batch(digits_dir, tmp_path, caplog):
    from swin_trt.data.bad_images import ImageLoader
    from swin_trt.data.image_folder import ImageList
    from swin_trt.data.transforms import build_transform

    config = get_config(MICRO_CFG)
    good = sorted((digits_dir / "val" / "0").iterdir())[:2]
    bad = []
    for i in range(3):
        bad.append(tmp_path / f"bad{i}.png")
        bad[-1].write_bytes(b"\x89PNG not really")
    # batches of 2: [good, bad] -> 1 image, [bad, bad] -> nothing at all, [good] -> 1 image
    samples = [(str(p), 0) for p in (good[0], bad[0], bad[1], bad[2], good[1])]
    loader = ImageLoader(ImageList(samples, build_transform(config, is_train=False)), "skip", batch_size=2, num_workers=2)
    batches = [images.shape[0] for images, _ in loader]
    assert batches == [1, 1], batches
    assert all(f"skipping unreadable image {p}" in caplog.text for p in bad)


def test_building_loaders_and_calibration_set_opens_no_image(digits_dir, monkeypatch):
    import PIL.Image

    from swin_trt.quant.calibrate import build_calib_loader

    opened = []
    real_open = PIL.Image.open

    def counting_open(fp, *args, **kwargs):
        opened.append(fp)
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(PIL.Image, "open", counting_open)
    config = get_config(MICRO_CFG, ["DATA.DATA_PATH", str(digits_dir)])
    build_loader(config, "train"), build_loader(config, "val")
    calib = build_calib_loader(config, 2, 8)
    assert opened == [], f"{len(opened)} images opened before any was read"
    assert len(calib.dataset) == 16, "calibration picks 2 batches of 8 paths from the file list"
    next(iter(calib))
    assert len(opened) == 8, "reading one calibration batch opens exactly its images"


def test_missing_data_path_is_a_user_error(tmp_path):
    config = get_config(MICRO_CFG, ["DATA.DATA_PATH", str(tmp_path / "nowhere")])
    with pytest.raises(UserError, match="does not exist"):
        build_loader(config, "val")


def test_fast_uint8_loader_applies_the_same_bad_image_policy(digits_dir, tmp_path):
    from swin_trt.data.fast_loader import build_uint8_loader

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    samples = [(str(p), 0) for p in sorted((digits_dir / "val" / "0").iterdir())[:3]] + [(str(bad), 0)]
    with pytest.raises(UserError, match=f"image {bad} cannot be read"):
        list(build_uint8_loader(samples, 32, 4, 0))
    batches = list(build_uint8_loader(samples, 32, 4, 0, on_bad_image="skip"))
    assert [images.shape[0] for images, _ in batches] == [3]


def test_more_workers_than_cpus_start_one_per_cpu_said_once_and_pytorch_does_not_warn(digits_dir, monkeypatch, caplog):
    import os
    import warnings

    import swin_trt.data.workers as workers
    from swin_trt.data.gpu_decode import build_encoded_loader

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)  # a 1-CPU process, as PyTorch sees it
    monkeypatch.setattr(workers, "_SAID", set())
    config = get_config(MICRO_CFG, ["DATA.DATA_PATH", str(digits_dir), "DATA.NUM_WORKERS", "8"])
    with caplog.at_level("INFO", logger="swin"), warnings.catch_warnings():
        warnings.simplefilter("error")  # PyTorch's "might get DataLoader running slow or even freeze" would fail here
        loaders = [build_loader(config, "val", batch_size=120), build_loader(config, "train", batch_size=120)]
        images, labels = next(iter(loaders[0]))
    assert [loader.num_workers for loader in loaders] == [1, 1] and images.shape[0] == 120
    said = [r.getMessage() for r in caplog.records if "data loader workers" in r.getMessage()]
    assert said == ["8 data loader workers asked for and 1 CPU to run them: starting 1 per loader "
                    "(DATA.NUM_WORKERS or --num-workers sets the count)"]
    assert build_encoded_loader([], 4, 8).num_workers == 1
    assert build_loader(get_config(MICRO_CFG, ["DATA.DATA_PATH", str(digits_dir)]), "val").num_workers == 0
