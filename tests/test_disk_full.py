"""A full disk or a read-only folder, for any file the toolkit writes: one sentence naming the path, exit code 2,
no temporary file left behind and nothing under the final name.

The folders are real: a small tmpfs mounted by the test and filled to the last byte (as root, which CI is), else
an ordinary folder written by a child process whose file-size limit (``ulimit -f``) is a few kB. Read-only is a
tmpfs mounted read-only, else a folder without write permission (which a non-root user cannot write).
"""
from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Optional

import pytest

from conftest import MICRO_CFG, REPO, run_in_process

FILE_SIZE_LIMIT = 16 * 1024  # bytes a child may write per file where no filesystem can be mounted


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, options: str) -> Iterator[bool]:
    """Mount a tmpfs on ``folder`` (True) where this process may; False (nothing mounted) elsewhere."""
    folder.mkdir(parents=True, exist_ok=True)
    ok = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                                              capture_output=True).returncode == 0
    try:
        yield ok
    finally:
        if ok:
            subprocess.run(["umount", "-l", str(folder)], check=True)


class Disk:
    """A folder where writes fail, and how to run a command against it."""

    def __init__(self, folder: Path, file_size_limit: Optional[int]) -> None:
        self.folder = folder
        self.file_size_limit = file_size_limit

    def _limit(self) -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.file_size_limit, self.file_size_limit))

    def run(self, args) -> subprocess.CompletedProcess:
        if self.file_size_limit is None and args[0] != "-c":  # the folder itself refuses: no child needed
            return run_in_process(args)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600, env=env,
                              preexec_fn=self._limit if self.file_size_limit else None)

    def entries(self) -> list:
        return sorted(p.name for p in self.folder.iterdir() if p.name != "filler")


@pytest.fixture
def full_disk(tmp_path) -> Iterator[Disk]:
    folder = tmp_path / "full"
    with mounted_tmpfs(folder, "size=256k") as mounted:
        if mounted:
            with open(folder / "filler", "wb", buffering=0) as f:  # fill it: every byte of the filesystem is taken
                with contextlib.suppress(OSError):
                    while True:
                        f.write(b"\0" * 4096)
            assert os.statvfs(folder).f_bavail == 0
        yield Disk(folder, None if mounted else FILE_SIZE_LIMIT)


@pytest.fixture
def read_only(tmp_path) -> Iterator[Disk]:
    folder = tmp_path / "ro"
    with mounted_tmpfs(folder, "size=64k,ro") as mounted:
        if not mounted:
            if os.geteuid() == 0:
                pytest.skip(reason="root writes into any folder whatever its permissions, and no read-only tmpfs "
                                   "could be mounted here to stand for a read-only folder")
            folder.chmod(0o555)
        yield Disk(folder, None)
        if not mounted:
            folder.chmod(0o755)


def one_sentence(proc: subprocess.CompletedProcess, path: Path, what: str) -> str:
    last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert last.startswith(f"error: could not write {path}: {what}"), last
    assert last.endswith("free space or choose a writable folder for it."), last
    return last


def full_what(disk: Disk) -> str:
    return "the disk is full" if disk.file_size_limit is None else "the file is larger than this process may write"


@pytest.fixture(scope="module")
def micro_checkpoint(tmp_path_factory) -> Path:
    """Random micro-model weights, as a checkpoint file (what export.py and the quantization flow read)."""
    from swin_trt.config import get_config
    from swin_trt.models import build_model
    from swin_trt.training.checkpoints import atomic_torch_save

    path = tmp_path_factory.mktemp("ckpt") / "micro.pth"
    atomic_torch_save({"model": build_model(get_config(MICRO_CFG)).state_dict()}, str(path))
    return path


@pytest.fixture(scope="module")
def micro_fp32_onnx(micro_checkpoint, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "micro.onnx"
    subprocess.run([sys.executable, "export.py", "--cfg", MICRO_CFG, "--resume", str(micro_checkpoint), "--output",
                    str(path), "--dynamic-batch"], cwd=REPO, check=True, capture_output=True)
    return path


def test_onnx_export_onto_a_full_disk_is_one_sentence_and_leaves_nothing(full_disk, micro_checkpoint):
    target = full_disk.folder / "micro_fp16.onnx"
    proc = full_disk.run(["export.py", "--cfg", MICRO_CFG, "--resume", str(micro_checkpoint), "--precision", "fp16",
                          "--output", str(target)])
    one_sentence(proc, target, full_what(full_disk))
    assert full_disk.entries() == []


def test_checkpoint_and_results_json_onto_a_full_disk_name_the_bytes_needed(full_disk):
    script = (f"import torch; from swin_trt.errors import run_main; from swin_trt.files import atomic_torch_save\n"
              f"run_main(lambda: atomic_torch_save({{'w': torch.zeros(50000)}}, {str(full_disk.folder / 'ckpt.pth')!r}))")
    last = one_sentence(full_disk.run(["-c", script]), full_disk.folder / "ckpt.pth", full_what(full_disk))
    assert "it needed 2" in last and " bytes" in last  # the serialized checkpoint's size, about 200 kB
    script = (f"from swin_trt.errors import run_main; from swin_trt.files import write_json\n"
              f"run_main(lambda: write_json({str(full_disk.folder / 'report.json')!r}, {{'acc1': [1.0] * 5000}}))")
    one_sentence(full_disk.run(["-c", script]), full_disk.folder / "report.json", full_what(full_disk))
    assert full_disk.entries() == []


def test_engine_build_onto_a_full_disk_is_one_sentence(full_disk, micro_fp32_onnx):
    pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX wheels (tensorrt-rtx-cu13-*) not installed")
    target = full_disk.folder / "micro.engine"
    proc = full_disk.run(["trt/build_engine.py", "--onnx-file", str(micro_fp32_onnx), "--trt-engine", str(target),
                          "--mode", "fp32", "--min-batch", "1", "--opt-batch", "2", "--max-batch", "4"])
    one_sentence(proc, target, full_what(full_disk))
    assert full_disk.entries() == []


def test_triton_repository_onto_a_full_disk_is_one_sentence(full_disk, micro_fp32_onnx):
    target = full_disk.folder / "model_repository"
    proc = full_disk.run(["trt/triton_repository.py", "--onnx-file", str(micro_fp32_onnx), "--output", str(target)])
    one_sentence(proc, target, full_what(full_disk))
    assert full_disk.entries() == []


def read_only_what() -> str:
    return "the folder is on a read-only filesystem" if os.geteuid() == 0 else "the folder is not writable"


def test_training_into_a_read_only_folder_is_one_sentence(read_only, tmp_path):
    from PIL import Image

    for split in ("train", "val"):  # a real dataset, so that the first write is what fails
        (tmp_path / split / "0").mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tmp_path / split / "0" / "a.png")
    target = read_only.folder / "out" / "swin_micro_digits" / "default"
    proc = read_only.run(["main.py", "--cfg", MICRO_CFG, "--data-path", str(tmp_path), "--output",
                          str(read_only.folder / "out")])
    one_sentence(proc, target, read_only_what())
    assert read_only.entries() == []


def test_onnx_export_into_a_read_only_folder_is_one_sentence(read_only, micro_checkpoint):
    target = read_only.folder / "micro.onnx"
    proc = read_only.run(["export.py", "--cfg", MICRO_CFG, "--resume", str(micro_checkpoint), "--output", str(target)])
    one_sentence(proc, target, read_only_what())
    assert read_only.entries() == []


# --- long runs check their output folder before they start (issue 29) -------------------------------------------------

def tiny_dataset(root: Path) -> Path:
    """One image per class of two classes, train and val: enough for a run to start (and to show it never did)."""
    from PIL import Image

    for split in ("train", "val"):
        for label in ("0", "1"):
            (root / split / label).mkdir(parents=True)
            Image.new("RGB", (32, 32), (int(label) * 200, 0, 0)).save(root / split / label / "a.png")
    return root


def preflight_refusal(proc: subprocess.CompletedProcess, path: Path) -> str:
    """The one sentence of a run refused before it started: the first checkpoint named, its bytes and those free."""
    last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert last.startswith(f"error: could not write {path}: it needs about "), last
    assert "are free there; nothing was started: free space or choose a writable folder for it." in last, last
    return last


@pytest.fixture
def really_full(full_disk) -> Disk:
    if full_disk.file_size_limit is not None:
        pytest.skip(reason="no tmpfs could be mounted here (not root): the up-front room check needs a filesystem "
                           "that is really full")
    return full_disk


def test_training_onto_a_full_disk_stops_before_the_first_epoch(really_full, tmp_path):
    data = tiny_dataset(tmp_path / "data")
    out = really_full.folder / "out"
    proc = really_full.run(["main.py", "--cfg", MICRO_CFG, "--data-path", str(data), "--output", str(out)])
    last = preflight_refusal(proc, out / "swin_micro_digits" / "default" / "ckpt_epoch_0.pth")
    assert "epoch 1/" not in proc.stdout and "calibrated" not in proc.stdout
    assert int(last.split("it needs about ")[1].split(" bytes")[0].replace(",", "")) > 3 * 4 * 300_000  # weights + AdamW


def test_quantization_onto_a_full_disk_stops_before_calibrating(really_full, micro_checkpoint, tmp_path):
    data = tiny_dataset(tmp_path / "data")
    proc = really_full.run(["swin_quant_flow.py", "--cfg", MICRO_CFG, "--resume", str(micro_checkpoint), "--data-path",
                            str(data), "--quantize", "--output", str(really_full.folder / "q")])
    preflight_refusal(proc, really_full.folder / "q" / "swin_micro_digits_int8_qat.pth")
    assert "calibrated" not in proc.stdout and "fp32: Acc@1" not in proc.stdout


def test_pipeline_onto_a_full_disk_runs_no_step(really_full, micro_checkpoint, tmp_path):
    data = tiny_dataset(tmp_path / "data")
    proc = really_full.run(["pipeline.py", "--resume", str(micro_checkpoint), "--data-path", str(data), "--weights",
                            str(really_full.folder / "weights"), "--results", str(tmp_path / "results")])
    preflight_refusal(proc, really_full.folder / "weights" / "swin_micro_digits_fp32.onnx")
    assert "[1/" not in proc.stdout


def test_recipes_benchmark_onto_a_full_disk_runs_no_recipe(really_full, micro_checkpoint, tmp_path):
    data = tiny_dataset(tmp_path / "data")
    proc = really_full.run(["benchmarks/quant_recipes.py", "--cfg", MICRO_CFG, "--resume", str(micro_checkpoint),
                            "--data-path", str(data), "--work-dir", str(really_full.folder / "recipes")])
    preflight_refusal(proc, really_full.folder / "recipes" / "recipe0" / "flow.json")
