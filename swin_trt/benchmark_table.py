"""The throughput table of trt/benchmark.py and the report: a row per backend and precision, a column per batch size,
and the speed-up of each row against the FP16 row of its own backend."""
from __future__ import annotations

import csv
import io
from typing import Any, Dict, Optional, Sequence, Tuple

CSV_KEYS = ["column", "backend", "provider", "precision", "batch", "images_per_s", "ms_per_batch", "device", "note"]


def family(cell: Dict[str, Any]) -> Tuple[str, str]:
    """The backend a cell's speed-up is taken within: PyTorch eager, torch.compile, ONNX Runtime with one provider,
    TensorRT (an ORT INT8 row against ORT FP16 on the same provider, never against TensorRT FP16)."""
    return cell.get("backend", ""), cell.get("provider") or ""


def _rates(results: Sequence[Dict[str, Any]]) -> Dict[str, Dict[int, float]]:
    """``{row label: {batch: images/s}}`` of the measured cells."""
    rates: Dict[str, Dict[int, float]] = {}
    for r in results:
        if r.get("batch") is not None and r.get("images_per_s"):
            rates.setdefault(r["column"], {})[r["batch"]] = r["images_per_s"]
    return rates


def speedups(results: Sequence[Dict[str, Any]]) -> Dict[str, Tuple[float, int]]:
    """``{row label: (images/s of the row / images/s of its backend's FP16 row, batch)}`` at the largest batch both
    measured; rows whose backend has no FP16 row (PyTorch on a CPU) are left out."""
    rates = _rates(results)
    fp16_label = {family(r): r["column"] for r in results if r.get("precision") == "fp16" and r["column"] in rates}
    out = {}
    for r in results:
        label, reference = r["column"], fp16_label.get(family(r))
        if label in out or label not in rates or reference is None:
            continue
        common = set(rates[label]) & set(rates[reference])
        if common:
            batch = max(common)
            out[label] = (rates[label][batch] / rates[reference][batch], batch)
    return out


def not_measured(results: Sequence[Dict[str, Any]]) -> Dict[str, str]:
    """``{row label: why}`` for rows without one measured cell (the reason of the first cell that gives one)."""
    rates = _rates(results)
    out: Dict[str, str] = {}
    for r in results:
        if r["column"] not in rates and r["column"] not in out:
            out[r["column"]] = r.get("reason") or r.get("note") or "not measured"
    return out


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def format_markdown(results: Sequence[Dict[str, Any]], batch_sizes: Optional[Sequence[int]] = None) -> str:
    """Rows = backend and precision, columns = batch sizes (images/s, or why a cell is empty), then the speed-up
    against the same backend's FP16 row. Rows and batch sizes with no measured cell are not columns or rows of the
    table: the rows are listed under it with their reason."""
    rates = _rates(results)
    labels = [label for label in dict.fromkeys(r["column"] for r in results) if label in rates]
    # a batch no row measured is still a column when a cell says why it did not run there (out of GPU memory)
    measured_batches = {b for per_row in rates.values() for b in per_row}
    measured_batches |= {r["batch"] for r in results if str(r.get("note", "")).startswith("not run")}
    batches = [b for b in (batch_sizes or sorted(measured_batches)) if b in measured_batches]
    notes = {(r["column"], r.get("batch")): r.get("note", "") for r in results}
    ratios = speedups(results)
    ratio_batches = {batch for _, batch in ratios.values()}
    one_batch = len(ratio_batches) == 1
    header = ["backend, precision"] + [f"batch {b}" for b in batches]
    if ratios:
        header.append(f"vs FP16 of its backend (batch {next(iter(ratio_batches))})" if one_batch
                      else "vs FP16 of its backend")
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for label in labels:
        cells = [_rate(rates[label][b]) if b in rates[label] else notes.get((label, b), "") for b in batches]
        if ratios:
            ratio = ratios.get(label)
            cells.append("–" if ratio is None else f"{ratio[0]:.2f}×" + ("" if one_batch else f" (batch {ratio[1]})"))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    missing = not_measured(results)
    if missing:
        lines += [""] + [f"- not measured: {label}: {why}" for label, why in missing.items()]
    return "\n".join(lines)


def format_csv(results: Sequence[Dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_KEYS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(results)
    return out.getvalue()


def best_rates(results: Sequence[Dict[str, Any]]) -> Dict[Tuple[str, str], Tuple[float, str]]:
    """``{(backend, precision): (best images/s over the batch sizes, row label)}``, the fastest row of each pair."""
    best: Dict[Tuple[str, str], Tuple[float, str]] = {}
    for r in results:
        if r.get("batch") is not None and r.get("images_per_s"):
            key = (r["backend"], r["precision"])
            if r["images_per_s"] > best.get(key, (0.0, ""))[0]:
                best[key] = (r["images_per_s"], r["column"])
    return best
