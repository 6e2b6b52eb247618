"""Accuracy and speed of a TensorRT engine on the validation images.

    python trt/eval_trt.py --eval --cfg configs/swin_tiny_patch4_window7_224.yaml \
        --resume weights/swin_tiny_fp16.engine --data-path ../imagenet_1k --batch-size 64

Reports Acc@1/Acc@5, the engine's own images/s (CUDA events around each
engine call) and end-to-end images/s (wall clock, data included), and with
``--compare-checkpoint`` the top-1 agreement and largest logit difference
with the PyTorch model in FP32 on the same GPU batches. By default (``--loader fast``)
images come from data/fast_loader.py (decode and resize in worker processes,
copy and normalise on a side stream); ``--loader gpu-decode`` decodes JPEGs
with nvJPEG and resizes whole batches on the GPU (data/gpu_decode.py);
``--loader pil`` uses the training code's loader. Batches outside the engine's profile are run in
profile-sized chunks.

``--loader gpu-decode`` is the fast path (5,043-7,065 images/s on the H100
machine against 2,517-3,013 for 16 CPU workers; benchmarks/data_pipeline.py), but
nvJPEG upsamples 4:2:0 chroma differently from libjpeg-turbo/PIL (decoded
pixels differ by about 3 grey levels on average), so the default ``fast``
decodes exactly as the PyTorch and ONNX Runtime evaluations do.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Dict, Iterable, Optional, Sequence

if __package__ in (None, ""):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import torch
from tqdm import tqdm

from evaluation import AccuracyMeter
from trt.backend import BACKEND_CHOICES
from utils import UserError, create_logger, format_table, metrics_dict, run_main, write_json
from validation import check_args, check_config, require_checkpoint, require_dataset, require_engine


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
    node = config.MODEL.SWIN_MLP if config.MODEL.TYPE == "swin_mlp" else config.MODEL.SWIN
    expected = [node.IN_CHANS, config.DATA.IMG_SIZE, config.DATA.IMG_SIZE]
    for name, shapes in meta["shapes"].items():
        if list(shapes["opt"][1:]) != expected:
            raise UserError(f"engine {engine_file} takes {name} of shape (N, {', '.join(map(str, shapes['opt'][1:]))}) "
                            f"but the config ({config.MODEL.NAME}) gives (N, {', '.join(map(str, expected))}): pass the "
                            "config the engine was built for.")


def gpu_batches(config, loader_kind: str, device: torch.device, dtype: torch.dtype, batch_size: int,
                workers: Optional[int]) -> Iterable:
    """Normalised batches on ``device``: ``fast`` (uint8 workers), ``gpu-decode`` (nvJPEG), or ``pil`` (data/build.py)."""
    if loader_kind == "fast":
        from data.fast_loader import GpuPrefetcher, build_fast_eval_loader

        loader = build_fast_eval_loader(config, batch_size, workers)
        return GpuPrefetcher(loader, device, config.DATA.MEAN, config.DATA.STD, dtype)
    if loader_kind == "gpu-decode":
        from data.fast_loader import eval_samples
        from data.gpu_decode import GpuDecodePrefetcher, build_encoded_loader

        loader = build_encoded_loader(eval_samples(config), batch_size,
                                      config.DATA.NUM_WORKERS if workers is None else workers)
        return GpuDecodePrefetcher(loader, device, config.DATA.IMG_SIZE, config.TEST.CROP, config.DATA.INTERPOLATION,
                                   config.DATA.MEAN, config.DATA.STD, dtype)
    from data import build_loader

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
                    desc: str = "TensorRT") -> Dict[str, Any]:
    """Accuracy of ``engine`` over ``batches`` (images already on its GPU), with speed and agreement.

    The logits of batch i are copied to the host asynchronously and scored after
    batch i+1 was queued, so the GPU is never idle waiting for the host.

    Returns:
        :func:`utils.metrics_dict` plus ``engine_images_per_s``, ``end_to_end_images_per_s`` and, with
        ``model``, ``torch_acc1``, ``torch_acc5``, ``top1_agreement``, ``max_abs``, ``relative``.
    """
    from onnx_tools.verify import LogitComparison

    meter, timer = AccuracyMeter(), EngineTimer()
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
    for images, target in tqdm(batches, desc=desc, leave=False):
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
    if model is not None:
        reference = torch_meter.result(seconds)
        out.update(torch_acc1=reference["acc1"], torch_acc5=reference["acc5"], **comparison.result())
    return out


def load_reference_model(config, checkpoint: str, device: torch.device) -> torch.nn.Module:
    """The PyTorch model of ``config`` with ``checkpoint``'s weights, FP32, eval mode, on ``device``."""
    from models import build_model, load_weights

    model = build_model(config)
    load_weights(model, checkpoint)
    return model.to(device).eval().float()


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eval", action="store_true", help="accepted for the original's command line (always evaluates)")
    parser.add_argument("--cfg", required=True, help="config YAML of the model the engine was built from")
    parser.add_argument("--resume", required=True, help="TensorRT engine file")
    parser.add_argument("--data-path", help="ImageNet-style root holding val/")
    parser.add_argument("--batch-size", type=int, help="images per batch (default DATA.BATCH_SIZE)")
    parser.add_argument("--workers", type=int, help="loader worker processes (default DATA.NUM_WORKERS)")
    parser.add_argument("--loader", choices=("fast", "gpu-decode", "pil"), default="fast",
                        help="data pipeline: decode in workers (fast, decodes like PIL), with nvJPEG on the GPU "
                             "(faster, chroma decoded slightly differently), or the PIL loader")
    parser.add_argument("--compare-checkpoint", help="PyTorch checkpoint to compare logits with")
    parser.add_argument("--cuda-graph", action="store_true", help="replay each batch size from a CUDA graph")
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="auto")
    parser.add_argument("--opts", nargs="+", default=[], help="config overrides, KEY VALUE pairs")
    parser.add_argument("--output-json", help="write the metrics here")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    logger = create_logger()
    from config import get_config
    from trt.engine import TRTEngine
    from trt.metadata import read_metadata

    check_args(args, {"batch_size": 1, "workers": 0})
    config = get_config(args.cfg, args.opts, DATA__DATA_PATH=args.data_path, DATA__BATCH_SIZE=args.batch_size)
    check_config(config, args.cfg)
    require_engine(args.resume)
    if args.compare_checkpoint:
        require_checkpoint(args.compare_checkpoint, "checkpoint", "pass the .pth file the engine was exported from")
    if not config.DATA.DATA_PATH:
        raise UserError("no --data-path given: pass the folder that holds val/ (e.g. datasets/digits).")
    require_dataset(config.DATA.DATA_PATH, ["val"])
    check_engine_config(read_metadata(args.resume), config, args.resume)
    engine = TRTEngine(args.resume, backend=args.backend, cuda_graph=args.cuda_graph)
    if args.compare_checkpoint:
        model = load_reference_model(config, args.compare_checkpoint, engine.device)
    else:
        model = None
    batches = gpu_batches(config, args.loader, engine.device, engine.inputs[0].dtype, config.DATA.BATCH_SIZE, args.workers)
    metrics = evaluate_engine(engine, batches, model)
    metrics.update(engine=args.resume, loader=args.loader, batch_size=config.DATA.BATCH_SIZE,
                   gpu=torch.cuda.get_device_name(engine.device), backend=engine.backend.describe())
    logger.info("Acc@1 %.3f Acc@5 %.3f on %d images", metrics["acc1"], metrics["acc5"], metrics["images"])
    columns = ["acc1", "acc5", "images", "engine_images_per_s", "end_to_end_images_per_s"]
    columns += ["torch_acc1", "top1_agreement", "max_abs"] if model is not None else []
    print(format_table([metrics], columns))
    if args.output_json:
        write_json(args.output_json, metrics)


if __name__ == "__main__":
    run_main(main)
