"""Results as dicts: the metrics every evaluation reports, and the small markdown tables that end each run."""
from __future__ import annotations

from typing import Any, Dict, Optional


def metrics_dict(acc1: float, acc5: float, loss: float, images: int, images_per_s: float, **extra: Any) -> Dict[str, Any]:
    """The metrics every evaluating script prints and writes with ``--output-json``."""
    out = {"acc1": float(acc1), "acc5": float(acc5), "loss": float(loss), "images": int(images), "images_per_s": float(images_per_s)}
    out.update(extra)
    return out


def weakest_classes(metrics: Dict[str, Any], count: int = 5) -> str:
    """``classes with the lowest Acc@1: cat 60.0% (5 images), ...`` from the ``classes`` of a metrics dict (a model
    that names its classes), or '' without them."""
    rows = sorted(metrics.get("classes") or [], key=lambda r: (r["acc1"], -r["images"]))[:count]
    if not rows:
        return ""
    return "classes with the lowest Acc@1: " + ", ".join(
        f"{r['class']} {r['acc1']:.1f}% ({r['images']} image{'s' if r['images'] != 1 else ''})" for r in rows)


def format_table(rows: list, columns: Optional[list] = None) -> str:
    """A small markdown table of dicts (used for the end-of-run summaries)."""
    if not rows:
        return ""
    columns = columns or list(rows[0].keys())

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
