"""Which ops of an FP32 graph must stay FP32 in its FP16 plan: measured on the graph, not guessed.

Every node output of the FP32 graph is made a graph output (polygraphy's ``mark all``) and run in ONNX Runtime
on real images. For each node we take the largest magnitude it produces and, for reductions whose accumulator
holds more than their output shows, the largest accumulator: a ReduceL2 computes ``sqrt(Σ x²)``, and TensorRT's
ONNX parser builds it as an elementwise square, a sum and a square root, so in FP16 both the squares and their
sum must fit under FP16's largest value (65504) even when the root would. An op whose measured value, or
accumulator, leaves less than :data:`HEADROOM` × of FP16's range is one the FP16 conversion must keep in FP32.
"""
from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from typing import Dict, Iterable, List, Sequence

import numpy as np
import onnx

_LOG = logging.getLogger("swin")
FP16_MAX = float(np.finfo(np.float16).max)  # 65504
HEADROOM = 16.0  # an op needs 16x between its largest measured value and FP16's largest: other images go further
# op type -> how its accumulator relates to its output (the value FP16 must hold inside the op)
ACCUMULATORS = {"ReduceL2": lambda out: out.astype(np.float64) ** 2, "ReduceSumSquare": lambda out: out}


@dataclass(frozen=True)
class OpRange:
    """The measured range of one op type over the graph.

    Attributes:
        op_type: ONNX op type.
        nodes: nodes of that type.
        max_output: largest |output| over its nodes and the images.
        max_accumulator: largest intermediate the op holds (a ReduceL2's sum of squares), else ``max_output``.
    """

    op_type: str
    nodes: int
    max_output: float
    max_accumulator: float

    @property
    def fp16_headroom(self) -> float:
        """FP16's largest value over the largest the op holds (inf when it holds only zeros)."""
        return FP16_MAX / self.max_accumulator if self.max_accumulator > 0 else float("inf")

    @property
    def needs_fp32(self) -> bool:
        return self.fp16_headroom < HEADROOM


def measure_ranges(model: onnx.ModelProto, batches: Iterable[np.ndarray], input_name: str = "input") -> List[OpRange]:
    """Per op type, the largest values the FP32 graph ``model`` produces over ``batches`` of images (N, C, H, W).

    Returns:
        one :class:`OpRange` per op type with float outputs, largest accumulator first.
    """
    import onnxruntime as ort
    from polygraphy import constants
    from polygraphy.backend.onnx import modify_outputs

    marked = modify_outputs(model, outputs=constants.MARK_ALL, copy=True)
    producer = {out: node.op_type for node in marked.graph.node for out in node.output}
    session = ort.InferenceSession(marked.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs() if o.name in producer and o.type == "tensor(float)"]
    output_max: Dict[str, float] = collections.defaultdict(float)
    accumulator_max: Dict[str, float] = collections.defaultdict(float)
    for batch in batches:
        for name, value in zip(names, session.run(names, {input_name: batch.astype(np.float32)})):
            op = producer[name]
            output_max[name] = max(output_max[name], float(np.abs(value).max(initial=0.0)))
            held = ACCUMULATORS[op](np.abs(value)) if op in ACCUMULATORS else np.abs(value)
            accumulator_max[name] = max(accumulator_max[name], float(held.max(initial=0.0)))
    by_type: Dict[str, List[str]] = collections.defaultdict(list)
    for name in names:
        by_type[producer[name]].append(name)
    ranges = [OpRange(op, len(outs), max(output_max[n] for n in outs), max(accumulator_max[n] for n in outs))
              for op, outs in by_type.items()]
    return sorted(ranges, key=lambda r: -r.max_accumulator)


def ops_needing_fp32(ranges: Sequence[OpRange]) -> List[str]:
    """Op types whose measured values leave less than :data:`HEADROOM` × of FP16's range."""
    return sorted(r.op_type for r in ranges if r.needs_fp32)


def format_ranges(ranges: Sequence[OpRange]) -> str:
    """Markdown table: op type, nodes, largest |output|, largest accumulator, FP16 headroom, verdict."""
    lines = ["| op | nodes | max abs output | max accumulator | FP16 headroom | FP16 |", "|---|---|---|---|---|---|"]
    for r in ranges:
        verdict = "keep FP32" if r.needs_fp32 else "ok"
        lines.append(f"| {r.op_type} | {r.nodes} | {r.max_output:.3g} | {r.max_accumulator:.3g} | "
                     f"{r.fp16_headroom:.3g}x | {verdict} |")
    return "\n".join(lines)
