"""The deployment report: what each backend and precision changed against FP32, how fast each runs, the precision plan
of each engine's graph, a plot, and what made the figures."""
from __future__ import annotations

import glob
import json
import os
from typing import Any, Dict, List, Optional

from swin_trt.benchmark_table import best_rates, format_markdown, speedups
from swin_trt.errors import UserError
from swin_trt.files import atomic_path, write_json
from swin_trt.provenance import describe_machine, format_provenance, provenance
from swin_trt.quant.recipes import recipe_table
from swin_trt.quant.sensitivity import sensitivity_rows
from swin_trt.report_plot import Point, save_plot
from swin_trt.tables import format_table

BACKEND_ORDER = ["pytorch", "fakequant", "onnxrt", "tensorrt"]


PRECISION_ORDER = ["fp32", "amp", "fp16", "int8", "fp8", "mxfp8", "nvfp4"]


STAGE_ORDER = ["ptq", "qat", "restored"]


# the accuracy files' backend names -> trt/benchmark.py's
ACCURACY_TO_BENCH = {"pytorch": "eager", "onnxrt": "ort", "tensorrt": "trt"}


BACKEND_NAMES = {"pytorch": "PyTorch", "onnxrt": "ONNX Runtime", "tensorrt": "TensorRT"}


STAGE_NAMES = {"ptq": "PyTorch fake-quant, PTQ", "qat": "PyTorch fake-quant, QAT",
               "restored": "PyTorch fake-quant, restored"}


def _order(row: Dict) -> tuple:
    b, p = row["backend"], row["precision"]
    return (PRECISION_ORDER.index(p) if p in PRECISION_ORDER else 99,
            BACKEND_ORDER.index(b) if b in BACKEND_ORDER else 99,
            STAGE_ORDER.index(row.get("stage", "")) if row.get("stage") in STAGE_ORDER else 0)


def backend_name(row: Dict) -> str:
    if row["backend"] == "fakequant":
        return STAGE_NAMES.get(row.get("stage", ""), f"PyTorch fake-quant, {row.get('stage', '')}")
    return BACKEND_NAMES.get(row["backend"], row["backend"])


def fake_quant_rows(quant: Optional[Dict]) -> List[Dict]:
    """The calibrated (PTQ) and fine-tuned (QAT) model's accuracy, measured by swin_quant_flow.py in PyTorch with
    fake quantization (its ``--output-json`` rows), as accuracy rows of backend ``fakequant``."""
    if not quant:
        return []
    fmt = quant.get("format", "int8")
    return [{"backend": "fakequant", "precision": fmt, **row} for row in quant.get("rows") or []
            if row.get("stage") in STAGE_ORDER]


def load_accuracy(results: str) -> List[Dict]:
    """One row per ``accuracy/<backend>_<precision>.json``, and the fake-quantized rows of ``quant_metrics.json``;
    each measured row with ``delta_acc1``, its Acc@1 minus the PyTorch FP32 row's (points)."""
    rows = []
    for path in glob.glob(os.path.join(results, "accuracy", "*.json")):
        backend, _, precision = os.path.basename(path)[:-len(".json")].partition("_")
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if "backend" in data:  # trt/eval_trt.py records the TensorRT module that ran the engine under this key
            data["runtime"] = data.pop("backend")
        rows.append({**data, "backend": backend, "precision": precision})
    for path in sorted(glob.glob(os.path.join(results, "quant_metrics*.json"))):  # one per quantized format
        rows += fake_quant_rows(load_result(results, os.path.basename(path)))
    reference = reference_acc1(rows)
    for row in rows:
        if reference is not None and "acc1" in row:
            row["delta_acc1"] = row["acc1"] - reference
    return sorted(rows, key=_order)


def reference_acc1(rows: List[Dict]) -> Optional[float]:
    """Acc@1 of the PyTorch FP32 row, the reference every change is measured against (None when it did not run)."""
    return next((r["acc1"] for r in rows if r["backend"] == "pytorch" and r["precision"] == "fp32" and "acc1" in r),
                None)


def load_result(results: str, name: str) -> Optional[Dict]:
    """``results/name`` as JSON, or None when the step has not written it: ``benchmark.json`` (trt/benchmark.py),
    ``precision_plan.json`` (``trt/inspect_engine.py --compare ... --output-json``), ``quant_metrics.json``
    (swin_quant_flow.py)."""
    path = os.path.join(results, name)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def short_status(status: str) -> str:
    """``not run: no CUDA GPU here: running ... (...)`` -> ``not run: no CUDA GPU here`` (the cell; the whole sentence
    goes under the table once)."""
    return ": ".join(status.split(": ")[:2])


def accuracy_table(rows: List[Dict]) -> str:
    """Markdown: precision, backend, Acc@1, change against PyTorch FP32, Acc@5, loss, images; a row that did not run
    says why in its Acc@1 cell, and the full reasons follow the table once each."""
    lines = ["| precision | backend | Acc@1 | Δ Acc@1 vs PyTorch FP32 | Acc@5 | loss | images |",
             "|---|---|---:|---:|---:|---:|---:|"]
    reasons: Dict[str, List[str]] = {}
    for r in rows:
        head = f"| {r['precision'].upper()} | {backend_name(r)} |"
        if "acc1" not in r:
            status = r.get("status", "not run")
            if short_status(status) != status:
                reasons.setdefault(status, []).append(f"{backend_name(r)} {r['precision'].upper()}")
            lines.append(f"{head} {short_status(status)} | | | | |")
            continue
        is_reference = r["backend"] == "pytorch" and r["precision"] == "fp32"
        delta = "reference" if is_reference else (f"{r['delta_acc1']:+.3f}" if "delta_acc1" in r else "")
        loss = f"{r['loss']:.4f}" if "loss" in r else ""
        lines.append(f"{head} {r['acc1']:.3f} | {delta} | {r['acc5']:.3f} | {loss} | {r.get('images', '')} |")
    for status, which in reasons.items():
        lines += ["", f"{', '.join(which)}: {status}."]
    return "\n".join(lines)


CLASSES_SHOWN = 10  # classes in the report's per-class table


def class_table(rows: List[Dict], count: int = CLASSES_SHOWN) -> str:
    """Per-class Acc@1 of every evaluation that names its classes (a model with label names): the ``count`` classes
    that lose most against the PyTorch FP32 row in any other row (then the weakest in it), one column per row."""
    measured = [r for r in rows if r.get("classes")]
    if not measured:
        return ""
    reference = next((r for r in measured if r["backend"] == "pytorch" and r["precision"] == "fp32"), measured[0])
    columns = [(f"{backend_name(r)} {r['precision'].upper()}", {c["class"]: c["acc1"] for c in r["classes"]})
               for r in measured]
    base = {c["class"]: c for c in reference["classes"]}

    def loss(name: str) -> tuple:
        drops = [base[name]["acc1"] - acc[name] for _, acc in columns if name in acc]
        return (-max(drops, default=0.0), base[name]["acc1"], name)

    shown = sorted(base, key=loss)[:count]
    lines = ["| class | images | " + " | ".join(label for label, _ in columns) + " |",
             "|---|---:|" + "---:|" * len(columns)]
    for name in shown:
        cells = [f"{acc[name]:.1f}" if name in acc else "" for _, acc in columns]
        lines.append(f"| {name} | {base[name]['images']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


CLASSES_NOTE = ("Acc@1 (%) per class, by the model's own class names, for the {shown} of {total} classes that lose most "
                "against PyTorch FP32 in any row (then the weakest there).")


def ran_with(rows: List[Dict]) -> str:
    """The providers ONNX Runtime ran with and the GPU TensorRT ran on, as the evaluations recorded them."""
    parts = []
    providers = sorted({r["providers"] for r in rows if r["backend"] == "onnxrt" and r.get("providers")})
    if providers:
        parts.append(f"ONNX Runtime ran with {', '.join(providers)}")
    engines = sorted({f"{r.get('runtime', 'TensorRT')} on {r['gpu']}" for r in rows
                      if r["backend"] == "tensorrt" and r.get("gpu")})
    if engines:
        parts.append(f"TensorRT engines ran with {', '.join(engines)}")
    if any(r["backend"] == "fakequant" for r in rows):
        parts.append("fake-quant rows: the quantized PyTorch model as swin_quant_flow.py evaluates it (quantization "
                     "simulated in FP32)")
    return "; ".join(parts) + "." if parts else ""


PLAN_NOTE = ("Read from TensorRT's own parse of each engine's ONNX graph (strongly typed, batch 1; "
             "trt/network_plan.py): what an engine stores, not a measurement of one. Under strong typing these bytes "
             "decide whether INT8 can beat FP16 on real TensorRT: an INT8 graph that left its non-GEMM layers in FP32 "
             "would store more than the FP16 engine and lose to it by construction.")


def _gemm_types(summary: Dict) -> set:
    return {t for kinds in summary.get("gemms", {}).values() for t in kinds}


def _quantized_format(summary: Dict) -> Optional[str]:
    """``INT8``/``FP8`` when the graph's GEMMs run in that type, else None."""
    return next((t for t in ("INT8", "FP8") if t in _gemm_types(summary)), None)


def plan_verdict(plan: Optional[Dict]) -> str:
    """One line a reader can act on: how many bytes each quantized graph stores against the FP16 graph, and how many
    FP32 compute layers it keeps."""
    summaries = [g["summary"] for g in (plan or {}).get("graphs") or []]
    fp16 = next((s for s in summaries if _gemm_types(s) == {"HALF"}), None)  # every GEMM in FP16
    if fp16 is None or not fp16.get("bytes"):
        return ""
    lines = []
    for s in summaries:
        fmt = _quantized_format(s)
        if fmt is None:
            continue
        ratio = s["bytes"] / fp16["bytes"]
        layers = s["fp32_compute_layers"]
        verdict = ("it can beat FP16 on bytes" if ratio < 1 and layers == 0 else
                   "it would lose to FP16 by construction: look at QUANT.HIGH_PRECISION and the ONNX keep-FP32 list")
        lines.append(f"**{fmt} stores {ratio:.2f}× the FP16 graph's bytes per image and keeps {layers} FP32 compute "
                     f"layer{'s' if layers != 1 else ''}** (the FP16 graph: {fp16['fp32_compute_layers']}): {verdict}.")
    return "\n\n".join(lines)


def precision_plan_table(plan: Optional[Dict]) -> str:
    """Side-by-side plan of the graphs (rows: layers, FP32 compute layers, MB per image by type, GEMMs by precision)."""
    from swin_trt.trt.network_plan import comparison_rows

    graphs = (plan or {}).get("graphs") or []
    if not graphs:
        return "_" + ((plan or {}).get("status") or "no precision plan") + "_"
    labels = [os.path.basename(g["source"]) for g in graphs]
    return format_table(comparison_rows([g["summary"] for g in graphs], labels))


SENSITIVITY_NOTE = ("Each site of the placement table ({by}s) quantized in {format} alone, and every site but that one, on "
                    "the model calibrated once (`swin_quant_flow.py --sensitivity`), sorted by harm: the sites that cost "
                    "most on their own first. \"Δ alone\" is against FP32, \"Δ all but\" against every site quantized: "
                    "what keeping that site in high precision (`QUANT.KEEP_HIGH_PRECISION`, `QUANT.DISABLED`) wins back.")
RECIPES_NOTE = ("`benchmarks/quant_recipes.py`: each recipe's Q/DQ graph evaluated in ONNX Runtime on all of val/, its "
                "matrix multiplies by precision and its activation bytes against the FP16 graph from the precision plan "
                "(TensorRT-RTX's parse, a plan and not an engine), and the wall time of the quantization run.")


def bench_rows(bench: Optional[Dict]) -> List[Dict]:
    """The cells trt/benchmark.py wrote (its ``--output-json``)."""
    return list((bench or {}).get("results") or [])


def throughput_table(bench: Optional[Dict]) -> str:
    """A row per backend and precision, a column per batch size, the speed-up against the same backend's FP16."""
    rows = bench_rows(bench)
    if not rows:
        return "_" + ((bench or {}).get("status") or "no benchmark results") + "_"
    return format_markdown(rows)


def plot_points(rows: List[Dict], bench: Optional[Dict]) -> List[Point]:
    """A point per evaluated backend and precision: its best benchmarked images/s (the eval loop's images/s, marked,
    where the benchmark has no row for it). The fake-quant rows have no speed of their own and are left out."""
    best = best_rates(bench_rows(bench))
    points = []
    for r in rows:
        if "acc1" not in r or r["backend"] not in ACCURACY_TO_BENCH:
            continue
        label = f"{backend_name(r)} {r['precision'].upper()}"
        benchmarked = best.get((ACCURACY_TO_BENCH[r["backend"]], r["precision"]))
        if benchmarked is not None:
            points.append(Point(label, benchmarked[0], r["acc1"], r["backend"], r["precision"]))
        elif r.get("images_per_s"):
            points.append(Point(label + " (eval loop)", r["images_per_s"], r["acc1"], r["backend"], r["precision"],
                                eval_loop=True))
    return points


def write_report(results: str, title: str = "", cfg_file: Optional[str] = None, checkpoint: Optional[str] = None,
                 model: Optional[str] = None) -> Dict[str, Any]:
    """Write ``report.md``, ``report.json`` and ``accuracy_vs_speed.png`` into ``results``; returns the JSON's dict."""
    if not os.path.isdir(results):
        raise UserError(f"results folder {results} does not exist: run the pipeline first.")
    rows = load_accuracy(results)
    bench = load_result(results, "benchmark.json")
    plan = load_result(results, "precision_plan.json")
    origin = provenance(cfg_file, checkpoint, model=model)
    where = describe_machine(origin["machine"])
    commit = origin["commit"][:12] + (" with uncommitted changes" if origin.get("uncommitted_changes") else "")
    md = [f"# {title or 'Deployment report'}", "", f"On {where}; commit {commit}, {origin['date']} (provenance at the "
          "end).", "", "## Accuracy", "", accuracy_table(rows), ""]
    note = ran_with(rows)
    md += [note, ""] if note else []
    classes = class_table(rows)
    if classes:
        total = max(len(r["classes"]) for r in rows if r.get("classes"))
        md += ["### Classes", "", CLASSES_NOTE.format(shown=min(total, CLASSES_SHOWN), total=total), "", classes, ""]
    md += ["## Throughput (images/s)", "", throughput_table(bench), ""]
    if bench and bench.get("devices"):
        md += [f"Measured on {bench.get('date', '')}: {', '.join(map(str, bench['devices']))}; torch "
               f"{bench.get('torch', '')}; random inputs already on the device (the model, not the data pipeline).", ""]
    md += ["![Acc@1 change against images/s](accuracy_vs_speed.png)", "",
           "## Precision plan of each engine's graph", "", precision_plan_table(plan), ""]
    verdict = plan_verdict(plan)
    md += [verdict, ""] if verdict else []
    md += [PLAN_NOTE, ""]
    sensitivity = load_result(results, "sensitivity.json")
    if sensitivity and sensitivity.get("sensitivity"):
        md += ["## Quantization sensitivity", "", SENSITIVITY_NOTE.format(**{"by": sensitivity.get("by", "row"),
                                                                           "format": sensitivity.get("format", "int8")}),
               "", format_table(sensitivity_rows(sensitivity)), ""]
    recipes = load_result(results, "quant_recipes.json")
    if recipes and recipes.get("recipes"):
        md += ["## Quantization recipes", "", RECIPES_NOTE, "", format_table(recipe_table(recipes)), ""]
    md += ["## Provenance", "", format_provenance(origin), ""]
    with atomic_path(os.path.join(results, "report.md")) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\n".join(md))
    summaries = [{"graph": g["source"], **g["summary"]} for g in (plan or {}).get("graphs", [])]
    ratios = [{"row": label, "vs_fp16": ratio, "batch": batch}
              for label, (ratio, batch) in speedups(bench_rows(bench)).items()]
    report = {"provenance": origin, "reference_acc1": reference_acc1(rows), "accuracy": rows,
              "precision_plan": summaries or plan, "throughput": bench, "speedup_vs_fp16": ratios,
              "sensitivity": sensitivity, "quant_recipes": recipes}
    write_json(os.path.join(results, "report.json"), report)
    save_plot(plot_points(rows, bench), reference_acc1(rows), os.path.join(results, "accuracy_vs_speed.png"),
              f"{title or 'Deployment report'}: Acc@1 against images/s", where)
    return report
