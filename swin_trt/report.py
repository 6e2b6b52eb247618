"""The deployment report: accuracy per backend and precision, the precision plan of each engine's graph, throughput, a plot."""
from __future__ import annotations

import glob
import json
import os
from typing import Dict, List, Optional

from swin_trt.errors import UserError
from swin_trt.files import atomic_path, write_json
from swin_trt.tables import format_table

BACKEND_ORDER = ["pytorch", "onnxrt", "tensorrt"]


PRECISION_ORDER = ["fp32", "amp", "fp16", "int8", "fp8"]


# trt/benchmark.py's backend names → the accuracy files' names
BENCH_TO_ACCURACY = {"eager": "pytorch", "ort": "onnxrt", "trt": "tensorrt"}


BACKEND_NAMES = {"pytorch": "PyTorch", "onnxrt": "ONNX Runtime", "tensorrt": "TensorRT"}


def _order(row: Dict) -> tuple:
    b, p = row["backend"], row["precision"]
    return (BACKEND_ORDER.index(b) if b in BACKEND_ORDER else 99, PRECISION_ORDER.index(p) if p in PRECISION_ORDER else 99)


def load_accuracy(results: str) -> List[Dict]:
    """One row per ``accuracy/<backend>_<precision>.json``."""
    rows = []
    for path in glob.glob(os.path.join(results, "accuracy", "*.json")):
        backend, _, precision = os.path.basename(path)[:-len(".json")].partition("_")
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        rows.append({"backend": backend, "precision": precision, **data})
    return sorted(rows, key=_order)


def load_result(results: str, name: str) -> Optional[Dict]:
    """``results/name`` as JSON, or None when the step has not written it: ``benchmark.json`` (trt/benchmark.py),
    ``precision_plan.json`` (``trt/inspect_engine.py --compare ... --output-json``)."""
    path = os.path.join(results, name)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


PLAN_NOTE = ("Read from TensorRT's own parse of each engine's ONNX graph (strongly typed, batch 1; "
             "trt/network_plan.py): what an engine stores, not a measurement of one. Under strong typing these bytes "
             "decide whether INT8 can beat FP16 on real TensorRT: an INT8 graph that left its non-GEMM layers in FP32 "
             "would store more than the FP16 engine and lose to it by construction.")


def precision_plan_table(plan: Optional[Dict]) -> str:
    """Side-by-side plan of the graphs (rows: layers, FP32 compute layers, MB per image by type, GEMMs by precision)."""
    from swin_trt.trt.network_plan import comparison_rows

    graphs = (plan or {}).get("graphs") or []
    if not graphs:
        return "_" + ((plan or {}).get("status") or "no precision plan") + "_"
    labels = [os.path.basename(g["source"]) for g in graphs]
    return format_table(comparison_rows([g["summary"] for g in graphs], labels))


def accuracy_table(rows: List[Dict]) -> str:
    lines = ["| backend | precision | Acc@1 | Acc@5 | loss | images | images/s (end to end) | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "acc1" in r:
            lines.append(f"| {BACKEND_NAMES.get(r['backend'], r['backend'])} | {r['precision'].upper()} | {r['acc1']:.3f} | "
                         f"{r['acc5']:.3f} | {r['loss']:.4f} | {r['images']} | {r['images_per_s']:.1f} | {r.get('note', '')} |")
        else:
            lines.append(f"| {BACKEND_NAMES.get(r['backend'], r['backend'])} | {r['precision'].upper()} | – | – | – | – | – | "
                         f"{r.get('status', 'not run')} |")
    return "\n".join(lines)


def bench_rows(bench: Optional[Dict]) -> List[Dict]:
    """The cells trt/benchmark.py wrote (its ``--output-json``)."""
    return list((bench or {}).get("results") or [])


def throughput_table(bench: Optional[Dict]) -> str:
    """Rows: batch sizes; columns: backend/precision; cells: images/s, as trt/benchmark.py prints them."""
    from swin_trt.benchmark import format_markdown

    rows = bench_rows(bench)
    if not rows:
        return "_no benchmark results_"
    return format_markdown(rows, sorted({r["batch"] for r in rows}))


def plot(rows: List[Dict], bench: Optional[Dict], path: str, title: str = "") -> None:
    """Acc@1 against images/s, one point per backend and precision (speed from the benchmark's best batch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = {}
    for r in bench_rows(bench):
        if r.get("images_per_s"):
            key = (BENCH_TO_ACCURACY.get(r.get("backend"), r.get("backend")), r.get("precision"))
            best[key] = max(best.get(key, 0.0), r["images_per_s"])
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for r in rows:
        if "acc1" not in r:
            continue
        speed = best.get((r["backend"], r["precision"]), r["images_per_s"])
        ax.scatter(speed, r["acc1"], s=40)
        ax.annotate(f"{BACKEND_NAMES.get(r['backend'], r['backend'])} {r['precision'].upper()}", (speed, r["acc1"]),
                    textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("images/s (best batch of the benchmark; end-to-end eval where not benchmarked)")
    ax.set_ylabel("Acc@1 (%)")
    ax.set_title(title or "accuracy against speed", fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_report(results: str, title: str = "") -> Dict:
    if not os.path.isdir(results):
        raise UserError(f"results folder {results} does not exist: run the pipeline first.")
    rows = load_accuracy(results)
    bench = load_result(results, "benchmark.json")
    plan = load_result(results, "precision_plan.json")
    md = [f"# {title or 'Deployment report'}", "", "## Accuracy", "", accuracy_table(rows), "",
          "## Precision plan of each engine's graph", "", precision_plan_table(plan), "", PLAN_NOTE, "",
          "## Throughput (images/s)", "", throughput_table(bench), ""]
    if bench and bench.get("devices"):
        md += [f"Measured on {bench.get('date', '')}: {', '.join(map(str, bench['devices']))}; torch {bench.get('torch', '')}", ""]
    md += ["![Acc@1 against images/s](accuracy_vs_speed.png)", ""]
    with atomic_path(os.path.join(results, "report.md")) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\n".join(md))
    summaries = [{"graph": g["source"], **g["summary"]} for g in (plan or {}).get("graphs", [])]
    report = {"accuracy": rows, "precision_plan": summaries or plan, "throughput": bench}
    write_json(os.path.join(results, "report.json"), report)
    plot(rows, bench, os.path.join(results, "accuracy_vs_speed.png"), title)
    return report
