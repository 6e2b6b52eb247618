"""The command lines of the original repository's README, as written, on the micro model.

Only the config, checkpoint and data paths are ours (and the master port, which must be free on a shared
machine). Every command runs from a fresh working folder, so the default output paths (``weights/``,
``output/``) land there, and each command consumes what the one before wrote, as in the original's README.
"""
from __future__ import annotations

import re
import socket

import onnx
import pytest

from conftest import MICRO_CFG, REPO, run_cmd, small_digits, trt_runtime_reason

X = "weights/swin_micro_digits"  # what export.py and swin_quant_flow.py write by default, relative to the run folder


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def fixed_batch(path) -> int:
    return onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0].dim_value


def test_original_readme_commands_run_as_written(trained_micro, tmp_path):
    data = str(small_digits(trained_micro["data"], tmp_path / "digits", 8, 4))
    ckpt, cfg = str(trained_micro["checkpoint"]), MICRO_CFG
    work = tmp_path / "run"
    work.mkdir()
    launch = ["-m", "torch.distributed.launch", "--nproc_per_node", "1", "--master_port", free_port()]

    def run(*args, check=True):
        return run_cmd([a if not a.endswith(".py") else str(REPO / a) for a in args], check=check, cwd=work)

    run(*launch, "main.py", "--eval", "--cfg", cfg, "--resume", ckpt, "--data-path", data)
    run("export.py", "--eval", "--cfg", cfg, "--resume", ckpt, "--data-path", data, "--batch-size-onnx", "32")
    assert fixed_batch(work / f"{X}.onnx") == 32, "--batch-size-onnx asks for a fixed batch, as in the original"
    pytest.importorskip("tensorrt_rtx_bindings", reason="the engine builds need a TensorRT-family builder")
    run("trt/build_engine.py", "--onnx-file", f"{X}.onnx", "--trt-engine", f"{X}_batch16_fp16.engine", "--verbose",
        "--mode", "fp16")
    assert (work / f"{X}_batch16_fp16.engine").is_file()
    gpu = run("trt/eval_trt.py", "--eval", "--cfg", cfg, "--resume", f"{X}_batch16_fp16.engine", "--data-path", data,
              "--batch-size", "16", check=trt_runtime_reason() is None)
    if trt_runtime_reason() is not None:
        last = gpu.stderr.strip().splitlines()[-1]
        assert gpu.returncode == 2 and "Traceback" not in gpu.stderr, gpu.stderr[-2000:]
        assert re.fullmatch(r"error: no CUDA device is visible, and TensorRT engine \S+ runs only on an NVIDIA GPU: .*",
                            last), last
    ort = run("trt/eval_onnxrt.py", "--eval", "--cfg", cfg, "--resume", f"{X}.onnx", "--data-path", data,
              "--batch-size", "16")
    assert re.search(r"\| 16 \| 40 \|", ort.stdout), ort.stdout[-2000:]
    run(*launch[:-1], free_port(), "swin_quant_flow.py", "--cfg", cfg, "--resume", ckpt, "--batch-size", "64",
        "--data-path", data, "--quantize", "--num-finetune-epochs", "3", "--batch-size-onnx", "16")
    assert fixed_batch(work / f"{X}_int8.onnx") == 16
    run("trt/build_engine.py", "--onnx-file", f"{X}_int8.onnx", "--trt-engine", f"{X}_batch16_quant.engine", "--mode",
        "int8", "--verbose", "--batch-size", "16")
    assert (work / f"{X}_batch16_quant.engine").is_file()
