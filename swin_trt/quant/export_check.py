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
   round across a quantization boundary and move by one step. Differences are counted in steps of the classifier's
   input: logit ``j`` moves by ``sum_k |W_jk| * step_k`` when every input ``k`` of the head moves by one quantization
   step (``step_k`` is the head input quantizer's step at that value: ``amax/127`` in INT8, the E4M3 spacing at
   ``|x_k|`` in FP8; an unquantized head input takes the INT8 step of the batch's range). Every logit may move
   ``QUANT.CHECK_STEPS`` such steps plus ``QUANT.CHECK_FP16_FACTOR`` times the most that PyTorch's own FP16 run of the
   same fake-quantized model (``torch.autocast``) moves any logit of the check images: the model's own sensitivity to
   FP16 rounding, small for a well-quantized model and large for one whose ranges are too wide for most of its channels
   (the outlier test bed's PTQ), where every boundary flip upstream is a large change. The top-1 class must also agree
   on every image whose lead over its second class is more than that tolerance can overturn (a closer race may flip
   either way and is not counted against the graph).
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
from swin_trt.quant.quantize import quantizer_modules

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


def check_structure(graph: onnx.ModelProto, model: nn.Module, label: str, skip: Iterable[str] = ()) -> Dict[str, int]:
    """Part 1 of the module docstring; returns ``{"quantizers": n, "pairs": n}`` (the quantizers named in ``skip``, the
    block formats' that quant/block_check.py checks, aside).

    Raises:
        ExportCheckError: a quantizer of the model has no pair in the graph, or a pair has another scale.
    """
    constants = _constants(graph.graph)
    consumers: Dict[str, List[onnx.NodeProto]] = {}
    for node in graph.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    quantize_nodes = [n for n in graph.graph.node if n.op_type in QUANTIZE_OPS]
    quantizers = {n: q for n, q in quantizer_modules(model).items() if n not in set(skip)}
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


def head_step_unit(model: nn.Module, head_input: torch.Tensor) -> torch.Tensor:
    """``sum_k |W_jk| * step_k`` for every image and logit, (N, classes): how far each logit moves when every input
    of the head moves by one quantization step."""
    return head_input_steps(model, head_input) @ model.head.weight.detach().float().abs().t()


def allowed_steps(steps: float, fp16_factor: float, own_fp16_steps: float) -> float:
    """How many head-input steps a logit may move: ``steps`` plus ``fp16_factor`` times the most PyTorch's own FP16
    run of the fake-quantized model moved any logit of the check images (in the same steps)."""
    return steps + fp16_factor * own_fp16_steps


class StepComparison:
    """Logit differences in head-input steps, the model's own FP16 movement, and top-1 agreement.

    The tolerance is known only at the end (it depends on the largest FP16 movement over all images), so each image's
    lead and the steps that would overturn it are kept until :meth:`result`.
    """

    def __init__(self, steps: float, fp16_factor: float) -> None:
        self.steps, self.fp16_factor = steps, fp16_factor
        self.worst_steps, self.own_fp16_steps, self.max_abs = 0.0, 0.0, 0.0
        self.leads: List[torch.Tensor] = []
        self.agreements: List[torch.Tensor] = []

    def update(self, reference: torch.Tensor, candidate: torch.Tensor, unit: torch.Tensor,
               reference_fp16: torch.Tensor) -> None:
        """Add a batch: logits (N, classes) of the FP32 fake-quantized model, the graph and PyTorch's FP16 run, and
        :func:`head_step_unit`."""
        unit = unit.clamp(min=1e-12)
        difference = (candidate.float() - reference.float()).abs()
        self.worst_steps = max(self.worst_steps, float((difference / unit).max()))
        self.own_fp16_steps = max(self.own_fp16_steps,
                                  float(((reference_fp16.float() - reference.float()).abs() / unit).max()))
        self.max_abs = max(self.max_abs, float(difference.max()))
        top2 = reference.topk(2, dim=1)
        # the lead over the second class in the steps that overturn it: the first logit falls, the second rises
        self.leads.append((top2.values[:, 0] - top2.values[:, 1]) / unit.gather(1, top2.indices).sum(dim=1))
        self.agreements.append(candidate.argmax(1) == top2.indices[:, 0])

    def result(self) -> Dict[str, Any]:
        allowed = allowed_steps(self.steps, self.fp16_factor, self.own_fp16_steps)
        leads = torch.cat(self.leads) if self.leads else torch.zeros(0)
        agree = torch.cat(self.agreements) if self.agreements else torch.zeros(0, dtype=torch.bool)
        decisive = leads > allowed
        return {"images": len(agree), "max_abs": self.max_abs, "worst_steps": self.worst_steps,
                "own_fp16_steps": self.own_fp16_steps, "allowed_steps": allowed,
                "worst": self.worst_steps / allowed, "top1_agreement": float(agree.float().mean()) if len(agree) else 1.0,
                "decisive_images": int(decisive.sum()),
                "decisive_agreement": float(agree[decisive].float().mean()) if decisive.any() else 1.0}


@torch.no_grad()
def compare_in_steps(model: nn.Module, predictor: OrtPredictor, images: Iterable, steps: float, fp16_factor: float,
                     desc: str) -> Dict[str, Any]:
    """Part 2 of the module docstring over the batches of ``images`` ((images, labels) pairs)."""
    captured: List[torch.Tensor] = []
    hook = model.head.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach().float()))
    comparison, meters = StepComparison(steps, fp16_factor), {"torch": AccuracyMeter(), "onnx": AccuracyMeter()}
    try:
        for batch, labels in progress(images, desc):
            captured.clear()
            reference = model(batch)
            unit = head_step_unit(model, captured[-1])
            with torch.autocast("cpu", dtype=torch.float16):
                reference_fp16 = model(batch).float()
            candidate = predictor(batch)
            comparison.update(reference, candidate, unit, reference_fp16)
            meters["torch"].update(reference, labels)
            meters["onnx"].update(candidate, labels)
    finally:
        hook.remove()
    out = comparison.result()
    for name, meter in meters.items():
        metrics = meter.result(1.0)
        out[f"{name}_acc1"], out[f"{name}_acc5"] = metrics["acc1"], metrics["acc5"]
    return out


def verify_quantized(path: str, model: nn.Module, check_images: Iterable, steps: float, fp16_factor: float,
                     val_loader: Optional[Iterable] = None, label: Optional[str] = None) -> Dict[str, Any]:
    """Every check of the module docstring on the Q/DQ file ``path`` (the model goes to the CPU, eval, FP32).

    Args:
        path: the exported file (maybe a temporary name; ``label`` names it in messages).
        model: the fake-quantized model it came from.
        check_images: in-distribution (images, labels) batches: the calibration images.
        steps: ``QUANT.CHECK_STEPS``.
        fp16_factor: ``QUANT.CHECK_FP16_FACTOR``.
        val_loader: labelled validation images, checked the same way.

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
    report["calibration"] = compare_in_steps(model, predictor, check_images, steps, fp16_factor, "check")
    if val_loader is not None:
        report["val"] = compare_in_steps(model, predictor, val_loader, steps, fp16_factor, "check val")
    for name, result in ((k, v) for k, v in report.items() if k != "structure"):
        _LOG.info("%s vs fake-quantized PyTorch on %s images (%d): worst logit %.2f head-input steps of %.2f allowed "
                  "(PyTorch's own FP16 run moves %.2f), max abs %.3e, top-1 agreement %.2f%% (%.2f%% of %d decisive)",
                  label, name, result["images"], result["worst_steps"], result["allowed_steps"],
                  result["own_fp16_steps"], result["max_abs"], 100 * result["top1_agreement"],
                  100 * result["decisive_agreement"], result["decisive_images"])
        if not result["worst"] <= 1.0:
            raise ExportCheckError(f"{label} differs from the fake-quantized model by {result['worst_steps']:.2f} "
                                   f"quantization steps of the classifier's input on the {name} images (max abs logit "
                                   f"difference {result['max_abs']:.3g}), past the {result['allowed_steps']:.2f} "
                                   f"allowed: {steps:g} (QUANT.CHECK_STEPS) plus {fp16_factor:g}x the "
                                   f"{result['own_fp16_steps']:.2f} that PyTorch's own FP16 run of the model moves "
                                   "(QUANT.CHECK_FP16_FACTOR).")
        if result["decisive_agreement"] < 1.0:
            flipped = result["decisive_images"] - round(result["decisive_agreement"] * result["decisive_images"])
            raise ExportCheckError(f"{label} changes the top-1 class of {flipped} of the {result['decisive_images']} "
                                   f"{name} images whose lead the tolerance cannot overturn.")
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
