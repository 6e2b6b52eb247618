"""The check of a Q/DQ export against the fake-quantized PyTorch model it came from.

A quantized graph cannot be judged like an FP32 or FP16 one, by a relative logit difference on random images:
noise images lie outside the calibrated ranges, where every clipped tensor and every value near a rounding
boundary moves, so that check failed correct graphs and passed a V2-T graph that agreed on 3 of 4 images. Here
the graph is judged where it will run, on in-distribution images (the calibration images the flow holds, and the
validation images when given), in two parts:

1. **Structure.** Every enabled quantizer of the model is in the graph as a QuantizeLinear whose output reaches a
   DequantizeLinear (through data movement at most), both with the model's scale, ``amax / bound`` (127 for INT8,
   448 for FP8 E4M3; per output channel for INT8 weights), to FP16's precision (the scale of an FP16-based graph is
   FP16). A dropped pair or a wrong scale is named by its quantizer.
2. **Numbers.** Between its pairs the graph computes in FP16 where PyTorch fake-quantizes in FP32, so some values
   round across a quantization boundary and move by one step; what reaches the logits is bounded by the classifier's
   own input step. The tolerance of logit ``j`` of an image is ``steps x sum_k |W_jk| * step_k``: how far logit ``j``
   moves when every input ``k`` of the head moves by ``steps`` quantization steps (``step_k`` is the head input
   quantizer's step at that value: ``amax/127`` in INT8, the E4M3 spacing at ``|x_k|`` in FP8; an unquantized head
   input takes the INT8 step of the batch's range). Every logit of every image must be within it
   (``QUANT.CHECK_STEPS``), and the top-1 class must agree on every image whose lead over its second class is more
   than the tolerance can move (a closer race may flip either way and is not counted against the graph).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np
import onnx
import torch
import torch.nn as nn
from modelopt.torch.quantization.nn import TensorQuantizer
from onnx import numpy_helper

from swin_trt.evaluation import AccuracyMeter
from swin_trt.logs import progress
from swin_trt.onnx_tools.runtime import OrtPredictor
from swin_trt.onnx_tools.verify import ExportCheckError, check_graph

_LOG = logging.getLogger("swin")
QUANTIZE_OPS = ("QuantizeLinear", "TRT_FP8QuantizeLinear")
DEQUANTIZE_OPS = ("DequantizeLinear", "TRT_FP8DequantizeLinear")
MOVEMENT_OPS = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten", "Slice", "Concat", "Split")
FP8_MAX = 448.0  # largest E4M3 value
FP8_MIN_EXPONENT = -6  # E4M3's smallest normal exponent; below it the spacing stays 2^-9
SCALE_RTOL = 2e-3  # FP16 holds a scale to 2^-11 relative; the exporter computes amax/bound in FP32


def quantizer_bound(quantizer: TensorQuantizer) -> float:
    """The largest quantized value: 127 (INT8), 448 (FP8 E4M3)."""
    return FP8_MAX if quantizer.num_bits == (4, 3) else float(2 ** (quantizer.num_bits - 1) - 1)


def enabled_quantizers(model: nn.Module) -> Dict[str, TensorQuantizer]:
    """Name -> the enabled TensorQuantizer modules of ``model`` that quantize (not only calibrate)."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, TensorQuantizer) and m.is_enabled and m._if_quant}


def _constants(graph: onnx.GraphProto) -> Dict[str, np.ndarray]:
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attribute.t)
    return values


def _scope(node_name: str) -> str:
    """``/layers.0/blocks.0/attn/qkv/input_quantizer/QuantizeLinear`` -> ``.layers.0.blocks.0.attn.qkv.input_quantizer.QuantizeLinear``."""
    return "." + node_name.strip("/").replace("/", ".")


def _dequantizers_after(node: onnx.NodeProto, consumers: Dict[str, List[onnx.NodeProto]]) -> List[onnx.NodeProto]:
    """The DequantizeLinear nodes the output of ``node`` reaches through data-movement ops."""
    found, frontier, seen = [], list(node.output), set()
    while frontier:
        tensor = frontier.pop()
        for consumer in consumers.get(tensor, []):
            if id(consumer) in seen:
                continue
            seen.add(id(consumer))
            if consumer.op_type in DEQUANTIZE_OPS:
                found.append(consumer)
            elif consumer.op_type in MOVEMENT_OPS:
                frontier.extend(consumer.output)
    return found


def check_structure(graph: onnx.ModelProto, model: nn.Module, label: str) -> Dict[str, int]:
    """Part 1 of the module docstring; returns ``{"quantizers": n, "pairs": n}``.

    Raises:
        ExportCheckError: a quantizer of the model has no pair in the graph, or a pair has another scale.
    """
    constants = _constants(graph.graph)
    consumers: Dict[str, List[onnx.NodeProto]] = {}
    for node in graph.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    quantize_nodes = [n for n in graph.graph.node if n.op_type in QUANTIZE_OPS]
    quantizers = enabled_quantizers(model)
    pairs = 0
    for name, quantizer in quantizers.items():
        mine = [n for n in quantize_nodes if _scope(n.name).startswith(f".{name}.")]
        if not mine:
            raise ExportCheckError(f"{label} has no QuantizeLinear for the model's quantizer {name}: the graph lost a "
                                   "Q/DQ pair the fake-quantized model has.")
        expected = (quantizer.amax.detach().float().cpu().numpy() / quantizer_bound(quantizer)).reshape(-1)
        for q in mine:
            dequantizers = _dequantizers_after(q, consumers)
            if not dequantizers:
                raise ExportCheckError(f"{label}: the QuantizeLinear of {name} reaches no DequantizeLinear: the graph "
                                       "lost half of a Q/DQ pair.")
            for node in [q] + dequantizers:
                scale = constants.get(node.input[1])
                if scale is None:
                    raise ExportCheckError(f"{label}: the scale of {node.name} ({name}) is not a constant.")
                scale = scale.astype(np.float64).reshape(-1)
                if scale.shape != expected.shape or not np.allclose(scale, expected, rtol=SCALE_RTOL, atol=0):
                    ratio = float(np.max(scale / expected)) if scale.shape == expected.shape else float("nan")
                    raise ExportCheckError(f"{label}: {node.op_type} {node.name} has a scale {ratio:.3g}x the model's "
                                           f"amax/{quantizer_bound(quantizer):g} of {name}: the graph does not "
                                           "quantize as the model was calibrated.")
            pairs += len(dequantizers)
    return {"quantizers": len(quantizers), "pairs": pairs}


def head_input_steps(model: nn.Module, head_input: torch.Tensor) -> torch.Tensor:
    """The quantization step at every input of the classifier, (N, K), for :func:`logit_tolerance`."""
    quantizer = getattr(model.head, "input_quantizer", None)
    x = head_input.abs()
    if quantizer is None or not quantizer.is_enabled or quantizer.amax is None:
        return (x.amax(dim=1, keepdim=True) / 127.0).expand_as(x)
    amax = quantizer.amax.detach().float().reshape(-1)[0]
    if quantizer.num_bits != (4, 3):
        return torch.full_like(x, float(amax / quantizer_bound(quantizer)))
    scale = amax / FP8_MAX
    exponent = torch.floor(torch.log2((x / scale).clamp(min=2.0 ** FP8_MIN_EXPONENT))).clamp(min=FP8_MIN_EXPONENT)
    return 2.0 ** (exponent - 3) * scale


def logit_tolerance(model: nn.Module, head_input: torch.Tensor, steps: float) -> torch.Tensor:
    """``steps x sum_k |W_jk| * step_k`` for every image and logit, (N, classes)."""
    return steps * head_input_steps(model, head_input) @ model.head.weight.detach().float().abs().t()


class StepComparison:
    """Worst logit difference in units of the tolerance, and top-1 agreement where the tolerance cannot flip it."""

    def __init__(self, steps: float) -> None:
        self.steps = steps
        self.worst, self.max_abs, self.images, self.agree, self.decisive, self.decisive_agree = 0.0, 0.0, 0, 0, 0, 0

    def update(self, reference: torch.Tensor, candidate: torch.Tensor, tolerance: torch.Tensor) -> None:
        difference = (candidate.float() - reference.float()).abs()
        self.worst = max(self.worst, float((difference / tolerance.clamp(min=1e-12)).max()) * self.steps)
        self.max_abs = max(self.max_abs, float(difference.max()))
        top2 = reference.topk(2, dim=1)
        lead = top2.values[:, 0] - top2.values[:, 1]
        # the top-1 can flip when the first logit may fall and the second rise by their tolerances
        reach = tolerance.gather(1, top2.indices).sum(dim=1)
        agree = candidate.argmax(1) == top2.indices[:, 0]
        decisive = lead > reach
        self.images += len(reference)
        self.agree += int(agree.sum())
        self.decisive += int(decisive.sum())
        self.decisive_agree += int((agree & decisive).sum())

    def result(self) -> Dict[str, Any]:
        return {"images": self.images, "max_abs": self.max_abs, "worst_steps": self.worst, "steps_allowed": self.steps,
                "top1_agreement": self.agree / max(self.images, 1), "decisive_images": self.decisive,
                "decisive_agreement": self.decisive_agree / self.decisive if self.decisive else 1.0}


@torch.no_grad()
def compare_in_steps(model: nn.Module, predictor: OrtPredictor, images: Iterable, steps: float,
                     desc: str) -> Dict[str, Any]:
    """Part 2 of the module docstring over the batches of ``images`` ((images, labels) pairs)."""
    captured: List[torch.Tensor] = []
    hook = model.head.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach().float()))
    comparison, meters = StepComparison(steps), {"torch": AccuracyMeter(), "onnx": AccuracyMeter()}
    try:
        for batch, labels in progress(images, desc):
            captured.clear()
            reference = model(batch)
            candidate = predictor(batch)
            comparison.update(reference, candidate, logit_tolerance(model, captured[-1], steps))
            meters["torch"].update(reference, labels)
            meters["onnx"].update(candidate, labels)
    finally:
        hook.remove()
    out = comparison.result()
    for name, meter in meters.items():
        metrics = meter.result(1.0)
        out[f"{name}_acc1"], out[f"{name}_acc5"] = metrics["acc1"], metrics["acc5"]
    return out


def verify_quantized(path: str, model: nn.Module, check_images: Iterable, steps: float,
                     val_loader: Optional[Iterable] = None, min_top1_agreement: float = 0.99,
                     label: Optional[str] = None) -> Dict[str, Any]:
    """Every check of the module docstring on the Q/DQ file ``path`` (the model goes to the CPU, eval, FP32).

    Args:
        path: the exported file (maybe a temporary name; ``label`` names it in messages).
        model: the fake-quantized model it came from.
        check_images: in-distribution (images, labels) batches: the calibration images.
        steps: ``QUANT.CHECK_STEPS``.
        val_loader: labelled validation images, checked the same way; there the top-1 agreement over all images
            must also reach ``min_top1_agreement``.

    Returns:
        ``{"structure": ..., "calibration": ..., "val": ...}`` (``val`` with ``val_loader`` only); each comparison
        holds Acc@1/Acc@5 of both (``torch_acc1``, ``onnx_acc1``...).

    Raises:
        ExportCheckError: a check failed; the sentence says which and by how much.
    """
    label = label or path
    check_graph(path, label)
    model = model.eval().float().cpu()
    report: Dict[str, Any] = {"structure": check_structure(onnx.load(path), model, label)}
    predictor = OrtPredictor(path, providers=["CPUExecutionProvider"])
    report["calibration"] = compare_in_steps(model, predictor, check_images, steps, "check")
    if val_loader is not None:
        report["val"] = compare_in_steps(model, predictor, val_loader, steps, "check val")
    for name, result in ((k, v) for k, v in report.items() if k != "structure"):
        _LOG.info("%s vs fake-quantized PyTorch on %s images (%d): worst logit %.2f of %.2g head-input steps, max abs "
                  "%.3e, top-1 agreement %.2f%% (%.2f%% of %d decisive)", label, name, result["images"],
                  result["worst_steps"], steps, result["max_abs"], 100 * result["top1_agreement"],
                  100 * result["decisive_agreement"], result["decisive_images"])
        if not result["worst_steps"] <= steps:
            raise ExportCheckError(f"{label} differs from the fake-quantized model by {result['worst_steps']:.2f} "
                                   f"quantization steps of the classifier's input on the {name} images (max abs logit "
                                   f"difference {result['max_abs']:.3g}), past the {steps:g} allowed "
                                   "(QUANT.CHECK_STEPS).")
        if result["decisive_agreement"] < 1.0:
            raise ExportCheckError(f"{label} changes the top-1 class of {result['decisive_images'] - round(result['decisive_agreement'] * result['decisive_images'])} "
                                   f"of the {result['decisive_images']} {name} images whose lead the quantization "
                                   "steps cannot overturn.")
    if val_loader is not None and report["val"]["top1_agreement"] < min_top1_agreement:
        raise ExportCheckError(f"{label} agrees with the fake-quantized model on the top-1 class of "
                               f"{100 * report['val']['top1_agreement']:.2f}% of the validation images, below the "
                               f"{100 * min_top1_agreement:.0f}% required.")
    return report


def check_batches(loader: Iterable, max_images: int) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Up to ``max_images`` images of ``loader`` as CPU batches, read once (the check runs them twice)."""
    batches, seen = [], 0
    for images, labels in loader:
        take = min(len(images), max_images - seen)
        batches.append((images[:take].cpu(), labels[:take].cpu()))
        seen += take
        if seen >= max_images:
            break
    return batches
