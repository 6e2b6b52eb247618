"""pipeline.py as a user runs it: interrupted during QAT and rerun; then a config edit, another --batch-size."""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from swin_trt.trt.metadata import file_sha256

from conftest import MICRO_CFG, REPO, small_digits


@pytest.fixture(scope="module")
def resumed_pipeline(trained_micro, tmp_path_factory) -> dict:
    """pipeline.py killed inside its quantization step, then the same command rerun to the end.

    Runs on a copy of the micro config (so a test can edit it) and a few images per class.
    Returns the two runs' output, the command and the folders.
    """
    tmp_path = tmp_path_factory.mktemp("pipeline")
    data = small_digits(trained_micro["data"], tmp_path / "digits", 8, 4)
    cfg = tmp_path / "swin_micro_digits.yaml"
    cfg.write_text(open(MICRO_CFG, encoding="utf-8").read())
    weights, results = tmp_path / "weights", tmp_path / "results"
    command = [sys.executable, "pipeline.py", "--cfg", str(cfg), "--resume", str(trained_micro["checkpoint"]),
               "--data-path", str(data), "--output", str(tmp_path / "output"), "--weights", str(weights),
               "--results", str(results), "--bench-batches", "1", "--bench-seconds", "0.2"]
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
    killed_log = first.stdout.read()
    int8_written_when_killed = (weights / "swin_micro_digits_int8.onnx").exists()
    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    return {"killed_log": killed_log, "int8_written_when_killed": int8_written_when_killed, "rerun": second.stdout,
            "command": command, "cfg": cfg, "weights": weights, "results": results, "env": env}


def test_pipeline_killed_during_qat_continues_without_redoing_finished_steps(resumed_pipeline):
    run = resumed_pipeline
    assert "quantize (calibrate + QAT): swin_quant_flow.py" in run["killed_log"]
    assert not run["int8_written_when_killed"], "no INT8 graph yet, and nothing half-written"
    finished = ("eval pytorch", "export fp32", "export fp16")
    for name in finished:
        assert re.search(rf"\] {name}: up to date, skipped", run["rerun"]), f"{name} was redone:\n{run['rerun'][-3000:]}"
    assert "quantize (calibrate + QAT): swin_quant_flow.py" in run["rerun"]
    assert (run["weights"] / "swin_micro_digits_int8.onnx").is_file()
    assert (run["results"] / "report.md").is_file() and (run["results"] / "accuracy_vs_speed.png").is_file()


def test_report_gives_the_change_against_fp32_the_fake_quant_rows_the_speed_up_and_what_made_it(resumed_pipeline):
    results = resumed_pipeline["results"]
    report = (results / "report.md").read_text()
    data = json.loads((results / "report.json").read_text())
    rows = {(r["backend"], r["precision"], r.get("stage")): r for r in data["accuracy"]}
    reference = rows[("pytorch", "fp32", None)]["acc1"]
    for stage in ("ptq", "qat"):  # swin_quant_flow.py's fake-quantized accuracy reached the report
        row = rows[("fakequant", "int8", stage)]
        assert row["delta_acc1"] == pytest.approx(row["acc1"] - reference)
        assert f"| INT8 | PyTorch fake-quant, {stage.upper()} | {row['acc1']:.3f} | {row['delta_acc1']:+.3f} |" in report
    int8 = rows[("onnxrt", "int8", None)]
    assert f"| INT8 | ONNX Runtime | {int8['acc1']:.3f} | {int8['delta_acc1']:+.3f} |" in report
    assert "| backend, precision | batch 1 | vs FP16 of its backend (batch 1) |" in report
    assert re.search(r"\| ONNX Runtime \((CPU|CUDA) provider\) FP16 \|", report) and "n/a" not in report
    if not torch.cuda.is_available():
        assert "PyTorch eager FP16" not in report.split("- not measured")[0], "no CPU autocast FP16 row"
    origin = data["provenance"]
    assert origin["checkpoint"]["weights"][0]["sha256"] == file_sha256(
        resumed_pipeline["command"][resumed_pipeline["command"].index("--resume") + 1])
    assert origin["config"]["path"] == str(resumed_pipeline["cfg"])
    assert "| TensorRT builder |" in report and "| commit |" in report


def test_report_shows_the_precision_plan_of_each_engines_graph(resumed_pipeline):
    pytest.importorskip("tensorrt_rtx_bindings", reason="the precision plan is read from TensorRT's parse")
    results = resumed_pipeline["results"]
    plans = {os.path.basename(g["graph"]): g for g in json.loads((results / "report.json").read_text())["precision_plan"]}
    fp32, fp16, int8 = (plans[f"swin_micro_digits_{p}.onnx"] for p in ("fp32", "fp16", "int8"))
    assert int8["bytes"] < fp16["bytes"] < fp32["bytes"]
    assert int8["gemms"]["linear"] == {"INT8": 18} and fp16["gemms"]["linear"] == {"HALF": 18}
    report = (results / "report.md").read_text()
    assert "## Precision plan of each engine's graph" in report and "| FP32 compute layers |" in report
    assert "not a measurement" in report


def _statuses(stdout: str) -> dict:
    """``{step name: what the pipeline said}`` from its ``[i/n] name: ...`` lines."""
    return dict(re.findall(r"^\[\d+/\d+\] (.+?): (.*)$", stdout, flags=re.MULTILINE))


def _pipeline(run: dict, *extra: str) -> dict:
    proc = subprocess.run(run["command"] + list(extra), cwd=REPO, env=run["env"], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return _statuses(proc.stdout)


def test_config_edits_and_batch_size_rerun_exactly_the_steps_they_reach(resumed_pipeline):
    pytest.importorskip("tensorrt_rtx_bindings", reason="the engine builds are the steps a TRT edit reaches")
    run = resumed_pipeline
    config = yaml.safe_load(run["cfg"].read_text())
    config["TRT"]["WORKSPACE_MIB"] = 2048
    run["cfg"].write_text(yaml.safe_dump(config))
    after_trt_edit = _pipeline(run)
    builds = [f"build engine {p}" for p in ("fp32", "fp16", "int8")]
    for name, said in after_trt_edit.items():
        if name in builds:
            assert said.startswith("trt/build_engine.py"), (name, said)
        elif not said.startswith("not run"):
            assert said == "up to date, skipped", (name, said)
    meta = json.loads((run["weights"] / "swin_micro_digits_fp32.engine.json").read_text())
    assert meta["workspace_mib"] == 2048, "the rebuilt engine used the edited value"

    unchanged = _pipeline(run, "--dry-run")
    ran = [name for name, said in unchanged.items() if not said.startswith(("up to date", "not run"))]
    assert not ran, f"nothing changed since, yet these would run: {ran}"

    config["QUANT"]["NUM_CALIB_BATCH"] = 2
    run["cfg"].write_text(yaml.safe_dump(config))
    after_quant_edit = _pipeline(run, "--dry-run")
    assert after_quant_edit["quantize (calibrate + QAT)"] == "would run (config %s changed in QUANT)" % run["cfg"]
    reached = {"quantize (calibrate + QAT)", "sensitivity by row", "eval onnxrt int8", "precision plans",
               "build engine int8", "benchmark", "report"}
    for name, said in after_quant_edit.items():
        if not said.startswith("not run"):
            assert said.startswith("would run") == (name in reached), (name, said)

    config["QUANT"]["NUM_CALIB_BATCH"] = 8  # back to the value the outputs were made with
    run["cfg"].write_text(yaml.safe_dump(config))
    other_batch = _pipeline(run, "--dry-run", "--batch-size", "32")
    takes_batch = {"eval pytorch", "quantize (calibrate + QAT)", "sensitivity by row", "eval onnxrt fp32",
                   "eval onnxrt fp16", "build engine fp32", "build engine fp16"}
    for name in takes_batch:
        assert other_batch[name] == "would run (its command line changed)", (name, other_batch[name])
    assert other_batch["export fp32"] == other_batch["export fp16"] == "up to date, skipped"


def test_benchmark_lists_the_engines_and_the_report_the_tensorrt_results(monkeypatch, tmp_path):
    import swin_trt.pipeline as pipeline

    monkeypatch.setattr(pipeline, "tensorrt_builder_available", lambda: None)
    monkeypatch.setattr(pipeline, "tensorrt_runtime_available", lambda: None)  # as on a GPU with TensorRT
    args = argparse.Namespace(cfg=MICRO_CFG, resume=str(tmp_path / "model.pth"), data_path=str(tmp_path / "data"),
                              batch_size=64, bench_batches=[1], bench_seconds=1.0, output=str(tmp_path / "output"),
                              weights=str(tmp_path / "weights"), results=str(tmp_path / "results"), formats=None)
    steps = {step.name: step for step in pipeline.plan(args)}
    engines = [os.path.join(args.weights, f"swin_micro_digits_{p}.engine") for p in ("fp32", "fp16", "int8")]
    assert set(engines) <= set(steps["benchmark"].inputs)
    trt_results = [os.path.join(args.results, "accuracy", f"tensorrt_{p}.json") for p in ("fp32", "fp16", "int8")]
    assert set(trt_results) <= set(steps["report"].inputs)
    assert all(args.cfg in step.command for name, step in steps.items() if step.config_nodes)


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu"])
def test_benchmark_step_measures_torch_compile_on_a_gpu_and_the_report_records_its_inputs(monkeypatch, tmp_path, gpu):
    import swin_trt.pipeline as pipeline

    monkeypatch.setattr(pipeline.torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(pipeline, "tensorrt_runtime_available", lambda: "not run: no TensorRT runtime")
    args = argparse.Namespace(cfg=MICRO_CFG, resume=str(tmp_path / "model.pth"), data_path=str(tmp_path / "data"),
                              batch_size=64, bench_batches=[1], bench_seconds=1.0, output=str(tmp_path / "output"),
                              weights=str(tmp_path / "weights"), results=str(tmp_path / "results"), formats=None)
    steps = {step.name: step for step in pipeline.plan(args)}
    command = steps["benchmark"].command
    backends = command[command.index("--backends") + 1:command.index("--precisions")]
    assert backends == (["eager", "compile", "ort"] if gpu else ["eager", "ort"])
    quant_metrics = os.path.join(args.results, "quant_metrics.json")
    assert quant_metrics in steps["quantize (calibrate + QAT)"].outputs
    report = steps["report"]
    assert {quant_metrics, args.resume} <= set(report.inputs)
    assert report.command[report.command.index("--checkpoint") + 1] == args.resume
    assert report.command[report.command.index("--cfg") + 1] == MICRO_CFG
