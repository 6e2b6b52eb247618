"""The report's plot: the change in Acc@1 against FP32 over images/s, one labelled point per backend and precision.

Labels are placed, not just offset: each goes to the first of a list of spots around its point (right, left, above,
below, then further up or down with a leader line) where its box stays inside the axes and overlaps no other label
and no point. Points of equal accuracy and similar speed (three ONNX Runtime rows on a CPU) therefore get stacked,
readable labels.
"""
from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Sequence, Tuple

from swin_trt.files import atomic_path

MIN_SPAN = 1.0  # points of Acc@1 the y axis spans at least: smaller differences read as what they are, small
COLORS = {"pytorch": "tab:blue", "onnxrt": "tab:orange", "tensorrt": "tab:green"}
MARKERS = {"fp32": "o", "fp16": "s", "int8": "^", "fp8": "D"}
_GAP = 8  # points between a marker and its label


def _spots() -> List[Tuple[float, float, str]]:
    """Offsets (points) and horizontal alignment of the spots a label may take, in order of preference."""
    spots = [(_GAP, 0.0, "left"), (-_GAP, 0.0, "right"), (0.0, 11.0, "center"), (0.0, -11.0, "center")]
    for step in range(1, 8):
        for dy in (9.0 * step, -9.0 * step):
            spots += [(_GAP, dy, "left"), (-_GAP, dy, "right")]
    return spots


_SPOTS = _spots()


@dataclasses.dataclass
class Point:
    """One point: its label, images/s, Acc@1, the keys of its colour (backend) and marker (precision), and whether its
    speed is the evaluation loop's (no benchmark row for it)."""

    label: str
    images_per_s: float
    acc1: float
    backend: str = ""
    precision: str = ""
    eval_loop: bool = False


def _plain_number(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:g}"


def _log_ticks(lo: float, hi: float) -> List[float]:
    """Ticks between ``lo`` and ``hi`` at 1, 2, 5 × 10^k (finer when the range is narrow), at least two."""
    for subs in ((1, 2, 5), (1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [m * 10 ** k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1) for m in subs]
        ticks = [t for t in ticks if lo <= t <= hi]
        if len(ticks) >= 3:
            return ticks
    return ticks if len(ticks) >= 2 else [lo, hi]


def _y_limits(values: Sequence[float]) -> Tuple[float, float]:
    lo, hi = min(values), max(values)
    span = max(MIN_SPAN, 1.5 * (hi - lo))
    middle = (lo + hi) / 2
    return middle - span / 2, middle + span / 2


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _inside(inner, outer) -> bool:
    return outer.x0 <= inner.x0 and inner.x1 <= outer.x1 and outer.y0 <= inner.y0 and inner.y1 <= outer.y1


def text_box(text, renderer):
    """The window extent of a label's text alone (an annotation's own extent includes its leader line)."""
    import matplotlib.text as mtext

    if hasattr(text, "update_positions"):
        text.update_positions(renderer)  # an annotation places its text from its offset only when drawn
    return mtext.Text.get_window_extent(text, renderer)


def _place_labels(fig, ax, points: Sequence[Point], ys: Sequence[float]) -> bool:
    """Annotate every point at its first free spot; False (and every label at its first spot) when one has none."""
    from matplotlib.transforms import Bbox

    for text in list(ax.texts):
        text.remove()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    area = ax.get_window_extent(renderer)
    centres = [ax.transData.transform((p.images_per_s, y)) for p, y in zip(points, ys)]
    radius = 5.0 * fig.dpi / 72
    taken = [Bbox.from_extents(x - radius, y - radius, x + radius, y + radius) for x, y in centres]
    all_placed = True
    for point, y in sorted(zip(points, ys), key=lambda py: (-py[1], py[0].images_per_s)):
        chosen = None
        for dx, dy, ha in _SPOTS:
            far = abs(dy) > 9
            label = ax.annotate(point.label, (point.images_per_s, y), xytext=(dx, dy), textcoords="offset points",
                                ha=ha, va="center", fontsize=8,
                                arrowprops=dict(arrowstyle="-", lw=0.6, color="0.55", shrinkA=1, shrinkB=4)
                                if far else None)
            box = text_box(label, renderer).padded(2)
            if _inside(box, area) and not any(_overlaps(box, other) for other in taken):
                chosen = box
                break
            label.remove()
        if chosen is None:
            all_placed = False
            dx, dy, ha = _SPOTS[0]
            label = ax.annotate(point.label, (point.images_per_s, y), xytext=(dx, dy), textcoords="offset points",
                                ha=ha, va="center", fontsize=8)
            chosen = text_box(label, renderer)
        taken.append(chosen)
    return all_placed


def accuracy_speed_figure(points: Sequence[Point], reference: Optional[float], title: str, subtitle: str = ""):
    """The figure (matplotlib, Agg): Acc@1 change against ``reference`` (or Acc@1 itself without one) over images/s
    on a log axis with plain tick labels, and Acc@1 on the right-hand axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    fig, ax = plt.subplots(figsize=(7.2, 4.6), dpi=120)
    base = reference if reference is not None else 0.0
    ys = [p.acc1 - base for p in points]
    for p, y in zip(points, ys):
        ax.scatter(p.images_per_s, y, s=42, color=COLORS.get(p.backend, "tab:gray"),
                   marker=MARKERS.get(p.precision, "P"), zorder=3, edgecolors="white", linewidths=0.5)
    speeds = [p.images_per_s for p in points] or [1.0]
    decades = math.log10(max(speeds) / min(speeds))
    pad = 10 ** (0.12 + 0.1 * decades)
    ax.set_xscale("log")
    ax.set_xlim(min(speeds) / pad, max(speeds) * pad)
    ax.xaxis.set_major_locator(FixedLocator(_log_ticks(*ax.get_xlim())))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _plain_number(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    marked = any(p.eval_loop for p in points)
    ax.set_xlabel("images/s (best batch of the benchmark" + ("; the eval loop's where marked)" if marked else ")"),
                  fontsize=9)
    low, high = _y_limits(ys or [0.0])
    ax.set_ylim(low, high)
    if reference is not None:
        ax.axhline(0.0, color="0.6", lw=0.8, ls="--", zorder=1)
        ax.set_ylabel("Acc@1 change against PyTorch FP32 (points)", fontsize=9)
        right = ax.secondary_yaxis("right", functions=(lambda d: d + base, lambda a: a - base))
        right.set_ylabel("Acc@1 (%)", fontsize=9)
    else:
        ax.set_ylabel("Acc@1 (%)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.set_title(title + ("\n" + subtitle if subtitle else ""), fontsize=9)
    fig.tight_layout()
    for _ in range(4):  # widen the accuracy axis until every label has a free spot
        if _place_labels(fig, ax, points, ys):
            break
        middle, half = (low + high) / 2, (high - low) * 0.75
        low, high = middle - half, middle + half
        ax.set_ylim(low, high)
    return fig


def save_plot(points: Sequence[Point], reference: Optional[float], path: str, title: str, subtitle: str = "") -> None:
    """Write :func:`accuracy_speed_figure` to ``path`` (PNG, atomically)."""
    import matplotlib.pyplot as plt

    fig = accuracy_speed_figure(points, reference, title, subtitle)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
