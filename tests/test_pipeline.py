"""pipeline.py as a user runs it: interrupted during QAT, then rerun with the same command."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from conftest import REPO, small_digits


def test_pipeline_killed_during_qat_continues_without_redoing_finished_steps(trained_micro, tmp_path):
    data = small_digits(trained_micro["data"], tmp_path / "digits", 8, 4)
    weights, results = tmp_path / "weights", tmp_path / "results"
    command = [sys.executable, "pipeline.py", "--resume", str(trained_micro["checkpoint"]), "--data-path", str(data),
               "--output", str(tmp_path / "output"), "--weights", str(weights), "--results", str(results),
               "--bench-batches", "1", "--bench-seconds", "0.2"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    calibrated = weights / "swin_micro_digits_int8_ptq.pth"  # written after calibration, before the QAT epochs
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    deadline = time.time() + 600
    while not calibrated.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert calibrated.exists() and first.poll() is None, "the pipeline should be inside the quantization step"
    os.killpg(first.pid, signal.SIGKILL)  # the pipeline and the step it runs, as a lost machine would
    first.wait()
    log = first.stdout.read()
    assert "quantize (calibrate + QAT): swin_quant_flow.py" in log
    assert not (weights / "swin_micro_digits_int8.onnx").exists(), "no INT8 graph yet, and nothing half-written"

    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    finished = ("eval pytorch", "export fp32", "export fp16")
    for name in finished:
        assert re.search(rf"\] {name}: up to date, skipped", second.stdout), f"{name} was redone:\n{second.stdout[-3000:]}"
    assert "quantize (calibrate + QAT): swin_quant_flow.py" in second.stdout
    assert (weights / "swin_micro_digits_int8.onnx").is_file()
    assert (results / "report.md").is_file() and (results / "accuracy_vs_speed.png").is_file()
