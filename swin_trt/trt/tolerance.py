"""Tolerance report of a candidate's tensors against a reference's, tensor by tensor.

A tensor passes when every element satisfies ``|c - r| <= atol + rtol * |r|``
(the rule of numpy.allclose and polygraphy's default comparison). The report
keeps the reference's order (topological for ONNX Runtime with all outputs
marked), so the first failing tensor is where the two start to diverge.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional

import numpy as np


@dataclasses.dataclass
class TensorDiff:
    """Differences of one tensor. ``rel`` is ``max|c - r| / max|r|``; ``violations`` counts elements past the tolerance."""

    name: str
    shape: tuple
    max_abs: float
    mean_abs: float
    rel: float
    violations: int
    passed: bool
    note: str = ""


def diff_tensor(name: str, reference: np.ndarray, candidate: np.ndarray, atol: float, rtol: float) -> TensorDiff:
    """Compare one tensor pair (cast to float64; a shape mismatch fails with a note)."""
    if reference.shape != candidate.shape:
        return TensorDiff(name, tuple(reference.shape), float("inf"), float("inf"), float("inf"), -1, False,
                          f"shape {tuple(candidate.shape)} vs {tuple(reference.shape)}")
    r = reference.astype(np.float64)
    c = candidate.astype(np.float64)
    err = np.abs(c - r)
    if err.size == 0:
        return TensorDiff(name, tuple(r.shape), 0.0, 0.0, 0.0, 0, True, "empty")
    finite = np.isfinite(c) == np.isfinite(r)
    violations = int(np.count_nonzero(~(err <= atol + rtol * np.abs(r)) | ~finite))
    max_abs = float(np.nanmax(err)) if np.isfinite(err).any() else float("inf")
    scale = float(np.nanmax(np.abs(r))) if r.size else 0.0
    return TensorDiff(name, tuple(r.shape), max_abs, float(np.nanmean(err)), max_abs / scale if scale > 0 else max_abs,
                      violations, violations == 0)


def tolerance_report(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], atol: float,
                     rtol: float, outputs: Optional[List[str]] = None) -> Dict[str, Any]:
    """Compare every tensor present in both (in the reference's order).

    Args:
        reference, candidate: tensor name -> array.
        atol, rtol: the tolerance.
        outputs: the model's real outputs (reported separately as ``outputs_passed``).

    Returns:
        ``{"atol", "rtol", "compared", "failed", "only_reference", "only_candidate",
        "first_failure", "worst", "outputs_passed", "tensors": [TensorDiff as dict...]}``.
    """
    common = [name for name in reference if name in candidate]
    diffs = [diff_tensor(name, np.asarray(reference[name]), np.asarray(candidate[name]), atol, rtol) for name in common]
    failed = [d for d in diffs if not d.passed]
    worst = max(diffs, key=lambda d: d.rel, default=None)
    outputs = [o for o in (outputs or []) if o in candidate and o in reference]
    by_name = {d.name: d for d in diffs}
    return {
        "atol": atol, "rtol": rtol, "compared": len(diffs), "failed": len(failed),
        "only_reference": sorted(set(reference) - set(candidate)), "only_candidate": sorted(set(candidate) - set(reference)),
        "first_failure": failed[0].name if failed else None, "worst": worst.name if worst else None,
        "outputs_passed": all(by_name[o].passed for o in outputs) if outputs else None,
        "tensors": [dataclasses.asdict(d) for d in diffs],
    }


def report_rows(report: Dict[str, Any], only_failed: bool = False, limit: int = 40) -> List[Dict[str, Any]]:
    """Table rows (name, max_abs, rel, violations, ok) of a report, the failed ones only if asked."""
    rows = [t for t in report["tensors"] if not (only_failed and t["passed"])]
    return [{"tensor": t["name"], "shape": "x".join(map(str, t["shape"])), "max_abs": t["max_abs"], "rel": t["rel"],
             "violations": t["violations"], "ok": "yes" if t["passed"] else "NO"} for t in rows[:limit]]
