"""Accuracy and speed of a TensorRT engine over batches already on its GPU, and the loaders that feed it."""
from __future__ import annotations

import time
from typing import Any, Dict, Iterable, Optional, Sequence

import torch

from swin_trt.contract import config_input_shape
from swin_trt.data.transforms import eval_crop_pct
from swin_trt.errors import UserError
from swin_trt.evaluation import AccuracyMeter
from swin_trt.logs import progress
from swin_trt.tables import metrics_dict


class EngineTimer:
    """CUDA-event time of engine calls, read only at the end so the loop never waits on the GPU."""

    def __init__(self) -> None:
        self.pairs = []
        self.images = 0

    def start(self) -> "torch.cuda.Event":
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def stop(self, start_event, images: int) -> None:
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        self.pairs.append((start_event, end))
        self.images += images

    def images_per_s(self) -> float:
        torch.cuda.synchronize()
        ms = sum(a.elapsed_time(b) for a, b in self.pairs)
        return images_per_second(self.images, ms / 1e3)


def images_per_second(images: int, seconds: float) -> float:
    """``images / seconds``; 0 when nothing was timed."""
    return images / seconds if seconds > 0 else 0.0


def check_engine_config(meta: Optional[Dict[str, Any]], config, engine_file: str) -> None:
    """Compare the engine's input shape (from its metadata JSON) with the config's images, before any GPU work.

    Raises:
        UserError: the engine was built for another image size or channel count.
    """
    if not meta or not meta.get("shapes"):
        return
    expected = list(config_input_shape(config))
    for name, shapes in meta["shapes"].items():
        if list(shapes["opt"][1:]) != expected:
            raise UserError(f"engine {engine_file} takes {name} of shape (N, {', '.join(map(str, shapes['opt'][1:]))}) "
                            f"but the config ({config.MODEL.NAME}) gives (N, {', '.join(map(str, expected))}): pass the "
                            "config the engine was built for.")


def gpu_batches(config, loader_kind: str, device: torch.device, dtype: torch.dtype, batch_size: int,
                workers: Optional[int]) -> Iterable:
    """Normalised batches on ``device``: ``fast`` (uint8 workers), ``gpu-decode`` (nvJPEG), or ``pil`` (data/build.py)."""
    if loader_kind == "fast":
        from swin_trt.data.fast_loader import GpuPrefetcher, build_fast_eval_loader

        loader = build_fast_eval_loader(config, batch_size, workers)
        return GpuPrefetcher(loader, device, config.DATA.MEAN, config.DATA.STD, dtype)
    if loader_kind == "gpu-decode":
        from swin_trt.data.fast_loader import eval_samples
        from swin_trt.data.gpu_decode import GpuDecodePrefetcher, build_encoded_loader

        loader = build_encoded_loader(eval_samples(config), batch_size,
                                      config.DATA.NUM_WORKERS if workers is None else workers)
        return GpuDecodePrefetcher(loader, device, config.DATA.IMG_SIZE, eval_crop_pct(config), config.DATA.INTERPOLATION,
                                   config.DATA.MEAN, config.DATA.STD, dtype)
    from swin_trt.data import build_loader

    loader = build_loader(config, "val", batch_size=batch_size, shuffle=False, num_workers=workers)

    class OnDevice:
        def __len__(self) -> int:
            return len(loader)

        def __iter__(self):
            for images, target in loader:
                yield images.to(device, dtype, non_blocking=True), target

    return OnDevice()


@torch.no_grad()
def evaluate_engine(engine, batches: Iterable, model: Optional[torch.nn.Module] = None,
                    desc: str = "TensorRT", label_names: Sequence[str] = ()) -> Dict[str, Any]:
    """Accuracy of ``engine`` over ``batches`` (images already on its GPU), with speed and agreement.

    The logits of batch i are copied to the host asynchronously and scored after
    batch i+1 was queued, so the GPU is never idle waiting for the host.

    Returns:
        :func:`utils.metrics_dict` plus ``engine_images_per_s``, ``end_to_end_images_per_s`` and, with
        ``model``, ``torch_acc1``, ``torch_acc5``, ``top1_agreement``, ``max_abs``, ``relative``.
    """
    from swin_trt.onnx_tools.verify import LogitComparison

    meter, timer = AccuracyMeter(label_names), EngineTimer()
    torch_meter, comparison = AccuracyMeter(), LogitComparison()
    pending = None

    def score(item) -> None:
        logits, target, reference, done = item
        done.synchronize()
        meter.update(logits, target)
        if reference is not None:
            torch_meter.update(reference, target)
            comparison.update(reference, logits)

    start = time.perf_counter()
    for images, target in progress(batches, desc):
        t0 = timer.start()
        logits = engine(images)
        timer.stop(t0, len(images))
        reference = model(images.float()).to("cpu", non_blocking=True) if model is not None else None
        item = (logits.float().to("cpu", non_blocking=True), target, reference, torch.cuda.Event())
        item[-1].record()
        if pending is not None:
            score(pending)
        pending = item
    if pending is not None:
        score(pending)
    seconds = time.perf_counter() - start
    result = meter.result(seconds)
    out = metrics_dict(result["acc1"], result["acc5"], result["loss"], result["images"], result["images_per_s"],
                       engine_images_per_s=timer.images_per_s(), end_to_end_images_per_s=result["images_per_s"])
    if "classes" in result:
        out["classes"] = result["classes"]
    if model is not None:
        reference = torch_meter.result(seconds)
        out.update(torch_acc1=reference["acc1"], torch_acc5=reference["acc5"], **comparison.result())
    return out


def load_reference_model(config, checkpoint: str, device: torch.device) -> torch.nn.Module:
    """The PyTorch model of ``config`` with ``checkpoint``'s weights, FP32, eval mode, on ``device``."""
    from swin_trt.models import build_model, load_weights

    model = build_model(config)
    load_weights(model, checkpoint)
    return model.to(device).eval().float()
