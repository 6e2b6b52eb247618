"""The report a deployment engineer reads: accuracy with its change against FP32, throughput with its speed-up against
FP16, a plot whose labels do not collide, and the provenance of the figures."""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import stat

import pytest

from conftest import MICRO_CFG, REPO

# --- the plot --------------------------------------------------------------------------------------------------------

# rows as the pipeline measured them on the 2-core CPU (three ONNX Runtime rows at one Acc@1 and close speeds) and on
# the GPU machine (ONNX Runtime on its CPU provider far left, PyTorch and TensorRT far right); then one Acc@1 for all
CPU_LIKE = [("PyTorch FP32", 3721, 96.389, "pytorch", "fp32"), ("ONNX Runtime FP32", 620, 96.389, "onnxrt", "fp32"),
            ("ONNX Runtime FP16", 600, 96.389, "onnxrt", "fp16"), ("ONNX Runtime INT8", 530, 96.389, "onnxrt", "int8")]
GPU_LIKE = [("PyTorch FP32", 79514, 96.667, "pytorch", "fp32"),
            ("ONNX Runtime (CPU provider) FP32", 3719, 96.667, "onnxrt", "fp32"),
            ("ONNX Runtime (CPU provider) FP16", 3450, 96.667, "onnxrt", "fp16"),
            ("ONNX Runtime (CPU provider) INT8", 3037, 96.944, "onnxrt", "int8"),
            ("TensorRT FP32", 151000, 96.667, "tensorrt", "fp32"), ("TensorRT FP16", 243000, 96.667, "tensorrt", "fp16"),
            ("TensorRT INT8", 262000, 96.944, "tensorrt", "int8")]
ONE_ACCURACY = [(label, speed, 96.667, backend, precision) for label, speed, _, backend, precision in GPU_LIKE]


def _figure(rows, reference=96.667):
    from swin_trt.report_plot import Point, accuracy_speed_figure

    points = [Point(*row) for row in rows]
    return accuracy_speed_figure(points, reference, "swin_micro_digits deployment report: Acc@1 against images/s",
                                 "Intel(R) Xeon(R) Processor (2 cores); GPU: NVIDIA H200 (driver 570.124.06)"), points


@pytest.mark.parametrize("rows", [CPU_LIKE, GPU_LIKE, ONE_ACCURACY], ids=["cpu", "gpu", "one_accuracy"])
def test_plot_labels_neither_overlap_nor_leave_the_figure(rows):
    import matplotlib.pyplot as plt

    from swin_trt.report_plot import text_box

    fig, points = _figure(rows)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        labels = {t.get_text(): text_box(t, renderer) for t in ax.texts}
        assert sorted(labels) == sorted(p.label for p in points), "every point has its label"
        for (a, box_a), (b, box_b) in itertools.combinations(labels.items(), 2):
            assert not box_a.overlaps(box_b), f"labels {a!r} and {b!r} overlap"
        figure_box = fig.bbox
        drawn = [(f"label {name!r}", box) for name, box in labels.items()]
        drawn += [(f"axes {i} (ticks, axis labels, title)", a.get_tightbbox(renderer)) for i, a in enumerate(fig.axes)]
        for what, box in drawn:
            assert (figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1 and figure_box.y0 <= box.y0
                    and box.y1 <= figure_box.y1), f"{what} is cut at the figure's edge"
        ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert len(ticks) >= 2 and all(re.fullmatch(r"[\d,.]+", t) for t in ticks), ticks
        low, high = ax.get_ylim()
        assert high - low >= 1.0, "the accuracy axis spans at least a point of Acc@1"
    finally:
        plt.close(fig)


def test_plot_of_the_report_is_written_as_png(tmp_path):
    from swin_trt.report_plot import Point, save_plot

    path = tmp_path / "plot.png"
    save_plot([Point(*row) for row in CPU_LIKE], 96.389, str(path), "title")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the tables ------------------------------------------------------------------------------------------------------

def _results_folder(tmp_path, quant_rows=True):
    """A results folder as the pipeline leaves it on a CPU: accuracy files, the quantization flow's metrics, a
    placeholder for each engine evaluation that could not run."""
    acc = tmp_path / "accuracy"
    acc.mkdir(parents=True)
    metrics = {"acc5": 99.722, "loss": 0.22, "images": 360, "images_per_s": 700.0}
    for name, acc1 in (("pytorch_fp32", 95.833), ("onnxrt_fp32", 95.833), ("onnxrt_fp16", 95.833),
                       ("onnxrt_int8", 95.556)):
        extra = {"providers": "CPUExecutionProvider"} if name.startswith("onnxrt") else {}
        (acc / f"{name}.json").write_text(json.dumps({"acc1": acc1, **metrics, **extra}))
    reason = ("not run: no CUDA GPU here: running a TensorRT engine needs one (TensorRT-RTX builds on the CPU but "
              "cannot run)")
    for precision in ("fp32", "fp16", "int8"):
        (acc / f"tensorrt_{precision}.json").write_text(json.dumps({"status": reason}))
    if quant_rows:  # swin_quant_flow.py --output-json: its "rows" (stages fp32, ptq, qat) and "format"
        rows = [{"stage": "fp32", "acc1": 95.833, **metrics}, {"stage": "ptq", "acc1": 95.278, **metrics},
                {"stage": "qat", "acc1": 96.111, **metrics}]
        (tmp_path / "quant_metrics.json").write_text(json.dumps({"format": "int8", "rows": rows}))
    return reason


def test_accuracy_table_gives_the_change_against_fp32_and_puts_ptq_and_qat_beside_int8(tmp_path):
    from swin_trt.report import accuracy_table, load_accuracy

    reason = _results_folder(tmp_path)
    rows = load_accuracy(str(tmp_path))
    table = accuracy_table(rows).splitlines()
    body = [line for line in table if line.startswith("| ")][1:]
    assert body[0].startswith("| FP32 | PyTorch | 95.833 | reference |")
    int8 = [line for line in body if line.startswith("| INT8 |")]
    assert [line.split(" | ")[1] for line in int8] == ["PyTorch fake-quant, PTQ", "PyTorch fake-quant, QAT",
                                                       "ONNX Runtime", "TensorRT"]
    assert "| 95.278 | -0.555 |" in int8[0] and "| 96.111 | +0.278 |" in int8[1] and "| 95.556 | -0.277 |" in int8[2]
    not_run = [line for line in body if "TensorRT" in line]
    assert len(not_run) == 3
    for line in not_run:  # the reason once, in one short cell; the other cells empty
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[2] == "not run: no CUDA GPU here" and not any(cells[3:])
    assert sum(reason in line for line in table) == 1, "the whole sentence once, under the table"


def test_precision_plan_line_says_how_many_fp16_bytes_and_fp32_layers_the_quantized_graph_keeps():
    from swin_trt.report import plan_verdict

    def graph(name, total, fp32_layers, gemm):  # the patch-embedding conv stays in the graph's high precision
        conv = "FLOAT" if gemm == "FLOAT" else "HALF"
        return {"source": name, "summary": {"bytes": total, "fp32_compute_layers": fp32_layers,
                                            "gemms": {"linear": {gemm: 18}, "conv": {conv: 1}}}}

    good = {"graphs": [graph("m_fp32.onnx", 2.0e6, 161, "FLOAT"), graph("m_fp16.onnx", 1.0e6, 0, "HALF"),
                       graph("m_int8.onnx", 0.85e6, 0, "INT8")]}
    assert plan_verdict(good).startswith("**INT8 stores 0.85× the FP16 graph's bytes per image and keeps 0 FP32 "
                                         "compute layers**")
    bad = {"graphs": [graph("m_fp16.onnx", 1.0e6, 0, "HALF"), graph("m_fp8.onnx", 1.4e6, 12, "FP8")]}
    assert "FP8 stores 1.40×" in plan_verdict(bad) and "lose to FP16 by construction" in plan_verdict(bad)
    assert plan_verdict(None) == ""


# --- provenance ------------------------------------------------------------------------------------------------------

def test_provenance_names_the_commit_or_says_there_is_none(tmp_path):
    from swin_trt.provenance import NOT_GIT, git_commit

    here = git_commit(str(REPO))
    if (REPO / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}", here["commit"]) and isinstance(here["uncommitted_changes"], bool)
    assert git_commit(str(tmp_path)) == {"commit": NOT_GIT, "uncommitted_changes": None}


def test_provenance_versions_are_those_the_modules_report_themselves():
    import onnxruntime
    import timm
    import torch

    from swin_trt.provenance import versions

    found = versions()
    assert torch.__version__.startswith(found["torch"])
    assert found["timm"] == timm.__version__
    assert found["ONNX Runtime"].split()[0] == onnxruntime.__version__
    try:
        import tensorrt_rtx_bindings
    except ImportError:
        return
    assert f"tensorrt_rtx_bindings {tensorrt_rtx_bindings.__version__}" in found["TensorRT builder"]


def test_gpu_and_driver_are_read_from_nvidia_smi(tmp_path, monkeypatch):
    from swin_trt.provenance import describe_machine, gpus

    # the format nvidia-smi documents for --query-gpu ... --format=csv,noheader: one line per GPU, ", " between fields
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA H200, 570.124.06, 143771 MiB'\necho 'NVIDIA H200, 570.124.06, 143771 MiB'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    found = gpus()
    assert found == [{"name": "NVIDIA H200", "driver": "570.124.06", "memory": "143771 MiB"}] * 2
    assert describe_machine({"cpu": "Intel(R) Xeon(R)", "cores": 16, "gpus": found}) == \
        "Intel(R) Xeon(R) (16 cores); GPU: 2× NVIDIA H200 (driver 570.124.06)"
    assert describe_machine({"cpu": "Intel(R) Xeon(R)", "cores": 2, "gpus": []}).endswith("no NVIDIA GPU")


# --- the whole report ------------------------------------------------------------------------------------------------

def test_report_command_writes_the_change_the_provenance_and_the_plot(tmp_path):
    from conftest import command

    _results_folder(tmp_path)
    checkpoint = tmp_path / "model.pth"
    checkpoint.write_bytes(b"weights")
    command("report.py").main(["--results", str(tmp_path), "--cfg", MICRO_CFG, "--checkpoint", str(checkpoint)])
    report = (tmp_path / "report.md").read_text()
    data = json.loads((tmp_path / "report.json").read_text())
    assert "| INT8 | PyTorch fake-quant, QAT | 96.111 | +0.278 |" in report
    origin = data["provenance"]
    assert origin["checkpoint"] == {"path": str(checkpoint), "sha256": hashlib.sha256(b"weights").hexdigest()}
    assert origin["config"]["path"] == MICRO_CFG and origin["config"]["model"] == "swin_micro_digits"
    for key in ("torch", "timm", "ONNX Runtime", "ModelOpt", "TensorRT builder"):
        assert f"| {key} | {origin['versions'][key]} |" in report
    assert f"| checkpoint | {checkpoint} (SHA-256 {origin['checkpoint']['sha256']}) |" in report
    assert data["reference_acc1"] == pytest.approx(95.833)
    assert (tmp_path / "accuracy_vs_speed.png").read_bytes()[:4] == b"\x89PNG"
    assert "_no benchmark results_" in report, "a missing benchmark says so, once"


def test_report_shows_the_sensitivity_and_recipes_tables_when_their_files_are_there(tmp_path):
    from swin_trt.report import write_report

    _results_folder(tmp_path)
    report = write_report(str(tmp_path), "micro")
    text = (tmp_path / "report.md").read_text()
    assert "## Quantization sensitivity" not in text and "## Quantization recipes" not in text
    assert report["sensitivity"] is None and report["quant_recipes"] is None
    sites = [{"site": "qkv.input", "quantizers": 4, "acc1_only": 51.944, "loss_only": 1.3778, "acc1_all_but": 93.889,
              "loss_all_but": 0.3875},
             {"site": "fc2.input", "quantizers": 4, "acc1_only": 95.833, "loss_only": 0.2247, "acc1_all_but": 39.444,
              "loss_all_but": 1.634}]
    (tmp_path / "sensitivity.json").write_text(json.dumps({"by": "row", "format": "int8", "sensitivity": sites,
                                                           "fp32": {"acc1": 95.833, "loss": 0.2245},
                                                           "all": {"acc1": 38.611, "loss": 1.6249}}))
    recipes = [{"recipe": "INT8 PTQ, max", "onnx_acc1": 38.889, "gemms": {"INT8": 26, "HALF": 1},
                "bytes_vs_fp16": 0.846, "seconds": 10.2},
               {"recipe": "INT8 PTQ, SmoothQuant α=0.5", "onnx_acc1": 95.833, "gemms": {"INT8": 26, "HALF": 1},
                "bytes_vs_fp16": 0.846, "seconds": 10.0}]
    (tmp_path / "quant_recipes.json").write_text(json.dumps({"fp32_acc1": 95.833, "recipes": recipes}))
    write_report(str(tmp_path), "micro")
    text = (tmp_path / "report.md").read_text()
    sensitivity = text.split("## Quantization sensitivity")[1].split("## ")[0]
    assert "| qkv.input | 51.944 | 1.3778 | -43.889 | 93.889 | 0.3875 | +55.278 |" in sensitivity
    assert sensitivity.index("qkv.input") < sensitivity.index("fc2.input")
    table = text.split("## Quantization recipes")[1].split("## ")[0]
    assert "| INT8 PTQ, max | 38.889 | -56.944 | HALF 1, INT8 26 | 0.846× | 10 |" in table
    assert "| INT8 PTQ, SmoothQuant α=0.5 | 95.833 | +0.000 |" in table
    assert text.index("## Quantization recipes") < text.index("## Provenance")
