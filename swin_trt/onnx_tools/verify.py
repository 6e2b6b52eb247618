"""Checks of an exported file against the PyTorch model it came from.

1. ``onnx.checker`` (full check, with shape inference);
2. ONNX Runtime against PyTorch on seeded random images: max abs difference,
   relative difference ``max|onnx - torch| / max|torch|`` and top-1 agreement;
3. optionally the same over a validation loader, with Acc@1/Acc@5 of both
   and a minimum top-1 agreement.

A check that fails raises :class:`ExportCheckError` with one sentence.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, Optional, Tuple

import onnx
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from swin_trt.evaluation import AccuracyMeter
from swin_trt.logs import progress
from swin_trt.onnx_tools.runtime import OrtPredictor

_LOG = logging.getLogger("swin")
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 5e-2}  # max relative difference to PyTorch FP32
MIN_TOP1_AGREEMENT = 0.99  # on a validation set
RANDOM_IMAGES = 4


class ExportCheckError(Exception):
    """An exported graph failed a check (invalid graph, or too far from PyTorch)."""


class LogitComparison:
    """Running max abs difference, max reference magnitude and top-1 agreement of two logit streams."""

    def __init__(self) -> None:
        self.max_abs = 0.0
        self.max_ref = 0.0
        self.agree = 0
        self.images = 0

    def update(self, reference: torch.Tensor, candidate: torch.Tensor) -> None:
        """Add a batch: both (N, classes); ``reference`` is PyTorch FP32."""
        reference, candidate = reference.float(), candidate.float()
        self.max_abs = max(self.max_abs, (candidate - reference).abs().max().item())
        self.max_ref = max(self.max_ref, reference.abs().max().item())
        self.agree += (candidate.argmax(1) == reference.argmax(1)).sum().item()
        self.images += len(reference)

    def result(self) -> Dict[str, float]:
        return {"max_abs": self.max_abs, "relative": self.max_abs / max(self.max_ref, 1e-12),
                "top1_agreement": self.agree / max(self.images, 1), "images": self.images}


def check_graph(path: str, label: Optional[str] = None) -> None:
    """``onnx.checker`` with ``full_check`` (types and shapes inferred); raises :class:`ExportCheckError`."""
    try:
        onnx.checker.check_model(path, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ExportCheckError(f"{label or path} is not a valid ONNX graph: {str(err).splitlines()[0]}") from None


def random_images(shape: Tuple[int, int, int], count: int = RANDOM_IMAGES, seed: int = 0) -> torch.Tensor:
    """Seeded standard-normal images (count, C, H, W), about the range of normalised inputs."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((count,) + tuple(shape), generator=generator)


@torch.no_grad()
def compare_with_torch(model: nn.Module, predictor: OrtPredictor, images: torch.Tensor) -> Dict[str, float]:
    """Compare ONNX Runtime with the PyTorch model (CPU, FP32) on one batch of images (N, C, H, W)."""
    comparison = LogitComparison()
    comparison.update(model(images), predictor(images))
    return comparison.result()


@torch.no_grad()
def compare_on_loader(model: nn.Module, predictor: OrtPredictor, loader: DataLoader, desc: str = "check") -> Dict[str, Any]:
    """Compare over a labelled loader; also returns Acc@1/Acc@5 of both (keys ``torch_acc1``, ``onnx_acc1``...)."""
    comparison, torch_meter, onnx_meter = LogitComparison(), AccuracyMeter(), AccuracyMeter()
    for images, target in progress(loader, desc):
        reference, candidate = model(images), predictor(images)
        comparison.update(reference, candidate)
        torch_meter.update(reference, target)
        onnx_meter.update(candidate, target)
    out: Dict[str, Any] = comparison.result()
    for name, meter in (("torch", torch_meter), ("onnx", onnx_meter)):
        metrics = meter.result(1.0)
        out[f"{name}_acc1"], out[f"{name}_acc5"] = metrics["acc1"], metrics["acc5"]
    return out


def verify_onnx(path: str, model: nn.Module, input_shape: Tuple[int, int, int], tolerance: float,
                val_loader: Optional[Iterable] = None, min_top1_agreement: float = MIN_TOP1_AGREEMENT,
                label: Optional[str] = None) -> Dict[str, Any]:
    """Run all checks on ``path`` (see the module docstring); returns ``{"random": ..., "val": ...}``.

    ONNX Runtime runs on the CPU provider here, so the check does not depend
    on the GPU's math modes.

    Args:
        path: the exported file.
        model: the PyTorch model it came from (put in eval mode, FP32, on the CPU).
        input_shape: (C, H, W).
        tolerance: largest allowed relative difference.
        val_loader: labelled images for the agreement check, or None.
        min_top1_agreement: smallest allowed top-1 agreement over ``val_loader``.
        label: name of the file in messages (``path`` may be a temporary name).

    Raises:
        ExportCheckError: the graph is invalid or a difference is past its limit.
    """
    label = label or path
    check_graph(path, label)
    model = model.eval().float().cpu()
    predictor = OrtPredictor(path, providers=["CPUExecutionProvider"])
    report: Dict[str, Any] = {"random": compare_with_torch(model, predictor, random_images(input_shape))}
    if val_loader is not None:
        report["val"] = compare_on_loader(model, predictor, val_loader)
    for name, result in report.items():
        _LOG.info("%s vs PyTorch on %s images (%d): max abs %.3e, relative %.3e, top-1 agreement %.2f%%", label, name,
                  result["images"], result["max_abs"], result["relative"], 100 * result["top1_agreement"])
        if not result["relative"] <= tolerance:
            raise ExportCheckError(f"{label} differs from PyTorch by {result['relative']:.2e} relative "
                                   f"(max abs {result['max_abs']:.2e}) on {name} images, past the {tolerance:.0e} allowed.")
    if "val" in report and report["val"]["top1_agreement"] < min_top1_agreement:
        raise ExportCheckError(f"{label} agrees with PyTorch on the top-1 class of {100 * report['val']['top1_agreement']:.2f}% "
                               f"of the validation images, below the {100 * min_top1_agreement:.0f}% required.")
    return report


def check_table_row(name: str, result: dict) -> dict:
    """One line of the check table (differences in scientific notation, accuracies in percent)."""
    row = {"images": f"{name} ({result['images']})", "max abs diff": f"{result['max_abs']:.2e}",
           "relative": f"{result['relative']:.2e}", "top-1 agreement %": f"{100 * result['top1_agreement']:.2f}"}
    for key in ("torch_acc1", "onnx_acc1"):
        row[key.replace("_acc1", " Acc@1")] = f"{result[key]:.2f}" if key in result else "-"
    return row
