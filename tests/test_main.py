"""main.py as a user runs it: train, evaluate, torchrun with 2 processes, resume after an interruption."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from swin_trt.errors import UserError

from conftest import MICRO_CFG, REPO, run_cmd, run_in_process

TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def test_training_reaches_95_percent_and_writes_metrics(trained_micro):
    metrics = trained_micro["metrics"]
    assert set(metrics) >= {"acc1", "acc5", "loss", "images", "images_per_s"}
    assert metrics["images"] == 360
    assert metrics["acc1"] >= 95.0, metrics
    out_dir = trained_micro["output"] / "swin_micro_digits" / "default"
    assert not list(out_dir.glob("*.tmp")), "a temporary file was left behind"


def test_eval_of_final_checkpoint_reproduces_training_metrics(trained_micro, tmp_path):
    out = tmp_path / "eval.json"
    run_cmd(["main.py", "--cfg", MICRO_CFG, "--data-path", str(trained_micro["data"]), "--eval", "--resume",
             str(trained_micro["checkpoint"]), "--output", str(tmp_path), "--output-json", str(out)])
    metrics = json.loads(out.read_text())
    assert metrics["acc1"] == trained_micro["metrics"]["acc1"]
    assert abs(metrics["loss"] - trained_micro["metrics"]["loss"]) < 1e-5


def test_torchrun_two_processes_evaluate_every_image_once(trained_micro, tmp_path):
    out = tmp_path / "ddp.json"
    run_cmd([*TORCHRUN, "main.py", "--cfg", MICRO_CFG, "--data-path", str(trained_micro["data"]), "--eval",
             "--resume", str(trained_micro["checkpoint"]), "--output", str(tmp_path), "--output-json", str(out),
             "--batch-size", "50"])
    metrics = json.loads(out.read_text())
    assert metrics["images"] == 360
    assert metrics["acc1"] == trained_micro["metrics"]["acc1"]
    assert metrics["acc5"] == trained_micro["metrics"]["acc5"]


@pytest.mark.slow
def test_torchrun_two_processes_train_one_epoch(digits_dir, tmp_path):
    out = tmp_path / "ddp_train.json"
    run_cmd([*TORCHRUN, "main.py", "--cfg", MICRO_CFG, "--data-path", str(digits_dir), "--output", str(tmp_path),
             "--output-json", str(out), "--opts", "TRAIN.EPOCHS", "1"])
    assert (tmp_path / "swin_micro_digits" / "default" / "ckpt_epoch_0.pth").is_file()
    assert json.loads(out.read_text())["images"] == 360


@pytest.mark.slow
def test_interrupted_training_resumes_from_last_checkpoint(digits_dir, tmp_path):
    args = [sys.executable, "main.py", "--cfg", MICRO_CFG, "--data-path", str(digits_dir), "--output", str(tmp_path),
            "--opts", "TRAIN.EPOCHS", "3"]
    folder = tmp_path / "swin_micro_digits" / "default"
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (folder / "ckpt_epoch_0.pth").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, "training finished before it could be interrupted"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*.tmp")), "half-written file left behind"
    done = sorted(p.name for p in folder.glob("ckpt_epoch_*.pth"))
    assert "ckpt_epoch_2.pth" not in done
    rerun = run_cmd(args[1:])
    log = (folder / "log_rank0.txt").read_text()
    assert f"resumed from {folder / done[-1]}" in log, rerun.stdout[-2000:]
    assert (folder / "ckpt_epoch_2.pth").is_file() and (folder / "ckpt_final.pth").is_file()


def test_user_mistakes_end_with_one_sentence(tmp_path, digits_dir):
    cases = [
        (["--cfg", str(tmp_path / "missing.yaml"), "--eval"], "does not exist"),
        (["--cfg", MICRO_CFG, "--eval", "--data-path", str(digits_dir), "--resume", str(tmp_path / "no.pth")], "does not exist"),
        (["--cfg", MICRO_CFG, "--eval", "--data-path", str(digits_dir), "--opts", "MODEL.SWIN.NOPE", "1"], "unknown key"),
        (["--cfg", MICRO_CFG, "--eval"], "--data-path"),
    ]
    for args, phrase in cases:
        proc = run_in_process(["main.py", *args, "--output", str(tmp_path)])
        assert proc.returncode == 2, (args, proc.stderr[-1000:])
        assert phrase in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr[-1000:])


@pytest.mark.parametrize("backend,message", [("mpi", "is not a backend here"), ("nccl", "NCCL needs one GPU per process")])
def test_distributed_setup_refuses_a_backend_it_cannot_run(monkeypatch, backend, message):
    import swin_trt.distributed as distributed

    if backend == "nccl" and torch.cuda.device_count() >= 2:
        pytest.skip("this machine has a GPU for each of the 2 processes")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv(distributed.BACKEND_ENV, backend)
    with pytest.raises(UserError, match=message):
        distributed.init_distributed()
