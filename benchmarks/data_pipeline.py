"""Images per second the evaluation data pipeline delivers to the GPU.

    python benchmarks/data_pipeline.py --images 20000 --workers 16 --batch-size 256

Writes ImageNet-sized JPEGs (about 500x375, quality 90, 4:2:0 chroma, ~100 kB each) into
``--folder`` (kept for reuse), then times data/fast_loader.py: decode + resize
in worker processes, pinned uint8 batches, copy and normalise on a side CUDA
stream. A batch counts as delivered when the GPU has it normalised. The first
pass warms the page cache and the workers; the timed passes follow. A TensorRT
FP16 Swin-T engine on an H100 consumes about 5,000 images/s, the target.
``--gpu-decode`` also times the alternative where workers only read files
and nvJPEG decodes on the GPU; ``--baseline`` the PIL loader of data/build.py
(torchvision transforms, float32 batches), for comparison.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from swin_trt.data.fast_loader import GpuPrefetcher, build_uint8_loader, sample_list
from swin_trt.data.gpu_decode import GpuDecodePrefetcher, build_encoded_loader
from swin_trt.data.transforms import EVAL_CROP_PCT
from swin_trt.errors import run_main
from swin_trt.files import atomic_path, write_json
from swin_trt.tables import format_table

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLASSES = 10


def _write_one(job) -> None:
    from PIL import Image

    path, seed, width, height, subsampling = job
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.int16)
    image = image + rng.integers(-24, 24, image.shape, dtype=np.int16)  # texture, so the files are photo-sized
    with atomic_path(path) as tmp:  # an interrupted run must not leave a truncated JPEG that the next run reuses
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(tmp, "JPEG", quality=90, subsampling=subsampling)


def write_jpegs(folder: str, count: int, workers: int, seed: int = 0, subsampling: int = 2) -> int:
    """An ImageFolder of ``count`` JPEGs (sizes around 500x375) in ``folder``; existing files are kept.

    ``subsampling``: PIL's chroma subsampling, 2 = 4:2:0 (like most photos), 0 = 4:4:4.

    Returns:
        the number of files written now.
    """
    rng = np.random.default_rng(seed)
    jobs = []
    for i in range(count):
        class_dir = os.path.join(folder, f"class_{i % CLASSES:02d}")
        os.makedirs(class_dir, exist_ok=True)
        path = os.path.join(class_dir, f"{i:06d}.JPEG")
        width, height = (500, 375) if i % 4 else (375, 500)  # ImageNet mixes landscape and portrait
        width, height = width + int(rng.integers(-30, 30)), height + int(rng.integers(-30, 30))
        if not os.path.isfile(path):
            jobs.append((path, seed + i, width, height, subsampling))
    if jobs:
        with multiprocessing.get_context("spawn").Pool(max(workers, 1)) as pool:
            for _ in tqdm(pool.imap_unordered(_write_one, jobs, chunksize=32), total=len(jobs), desc="writing JPEGs",
                          disable=not sys.stderr.isatty()):
                pass
    return len(jobs)


def time_delivery(batches: Iterable, device: torch.device, images_wanted: int, desc: str,
                  consume: Optional[Callable[[torch.Tensor], Any]] = None) -> Dict[str, float]:
    """Pull batches until ``images_wanted`` have arrived on ``device``; images/s over that span.

    Args:
        batches: re-iterable (a loader, not a generator): passes repeat until enough images came.
        consume: called on every batch (a model sharing the GPU with the pipeline), inside the timed span.
    """
    delivered, start = 0, time.perf_counter()
    with tqdm(total=images_wanted, desc=desc, unit="img", disable=not sys.stderr.isatty()) as bar:
        while delivered < images_wanted:
            for images, _ in batches:
                if consume is not None:
                    consume(images)
                delivered += len(images)
                bar.update(len(images))
                if delivered >= images_wanted:
                    break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return {"images": delivered, "seconds": seconds, "images_per_s": delivered / seconds}


def consumer_model(cfg: str, device: torch.device, dtype: torch.dtype) -> Callable[[torch.Tensor], Any]:
    """The model of ``cfg`` (random weights) in ``dtype`` on ``device``: a stand-in for the engine the data feeds."""
    from swin_trt.config import get_config
    from swin_trt.models import build_model

    model = build_model(get_config(cfg)).to(device=device, dtype=dtype).eval()

    @torch.no_grad()
    def consume(images: torch.Tensor) -> torch.Tensor:
        return model(images)

    return consume


def benchmark_pipeline(folder: str, images: int, batch_size: int, workers: int, size: int = 224,
                       baseline: bool = False, gpu_decode: bool = False, dtype: torch.dtype = torch.float16,
                       consumer_cfg: Optional[str] = None) -> list:
    """Rows ``{"pipeline", "images", "seconds", "images_per_s", ...}`` for the fast loader (and the alternatives).

    With ``consumer_cfg`` every batch also goes through that model on the same GPU, and a first row times the
    model alone on one synthetic batch, so the rows show how much of the model's rate each pipeline keeps.
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    consume = consumer_model(consumer_cfg, device, dtype) if consumer_cfg else None
    suffix = f" + {os.path.basename(consumer_cfg)}" if consumer_cfg else ""
    rows = []
    if consume is not None:
        synthetic = [(torch.randn(batch_size, 3, size, size, device=device, dtype=dtype), None)]
        time_delivery(synthetic, device, 4 * batch_size, "warm-up model", consume)
        rows.append(dict(pipeline=f"model alone (one synthetic batch){suffix}",
                         **time_delivery(synthetic, device, images, "model", consume)))
    samples = sample_list(folder)
    loader = build_uint8_loader(samples, size, batch_size, workers)
    prefetcher = GpuPrefetcher(loader, device, IMAGENET_MEAN, IMAGENET_STD, dtype)
    time_delivery(prefetcher, device, min(len(samples), images), "warm-up")
    rows.append(dict(pipeline=f"fast (uint8 workers, GPU normalise){suffix}",
                     **time_delivery(prefetcher, device, images, "fast", consume)))
    for background in (True, False) if gpu_decode else ():
        encoded = GpuDecodePrefetcher(build_encoded_loader(samples, batch_size, workers), device, size, EVAL_CROP_PCT, "bicubic",
                                      IMAGENET_MEAN, IMAGENET_STD, dtype, background=background)
        time_delivery(encoded, device, min(len(samples), images // 4), "warm-up GPU decode")
        how = "producer thread" if background else "inline, one batch ahead"
        rows.append(dict(pipeline=f"GPU decode (nvJPEG, workers read files; {how}){suffix}",
                         **time_delivery(encoded, device, images, "GPU decode", consume)))
    if baseline:
        from torchvision import transforms

        from swin_trt.data.bad_images import ImageLoader
        from swin_trt.data.image_folder import CheckedImageFolder
        from swin_trt.data.transforms import eval_resize_size

        transform = transforms.Compose([
            transforms.Resize(eval_resize_size(size, EVAL_CROP_PCT), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(size), transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
        dataset = CheckedImageFolder(folder, transform)
        pil = ImageLoader(dataset, batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda",
                          persistent_workers=workers > 0)

        class ToDevice:
            def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
                for x, y in pil:
                    yield x.to(device, non_blocking=True), y

        time_delivery(ToDevice(), device, min(len(samples), images // 4), "warm-up PIL")
        rows.append(dict(pipeline="PIL (data/build.py transforms)", **time_delivery(ToDevice(), device, images, "PIL")))
    for row in rows:
        row.update(batch_size=batch_size, workers=workers, device=str(device) if device.type == "cpu"
                   else torch.cuda.get_device_name(device), cpus=os.cpu_count())
    return rows


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", default="output/bench_jpegs", help="where the JPEGs are written (and reused)")
    parser.add_argument("--num-files", type=int, default=5000, help="JPEG files to write")
    parser.add_argument("--images", type=int, default=20000, help="images to deliver in the timed pass")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="loader worker processes")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--gpu-decode", action="store_true", help="also time nvJPEG decoding on the GPU")
    parser.add_argument("--baseline", action="store_true", help="also time the PIL loader")
    parser.add_argument("--consumer-cfg", metavar="CFG", help="also run this model (random weights, FP16 on a GPU) on "
                        "every batch, e.g. configs/swin_tiny_patch4_window7_224.yaml")
    parser.add_argument("--output-json", help="write the rows here")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    written = write_jpegs(args.folder, args.num_files, args.workers)
    print(f"{args.folder}: {args.num_files} JPEGs ({written} written now)")
    rows = benchmark_pipeline(args.folder, args.images, args.batch_size, args.workers, args.img_size, args.baseline,
                              args.gpu_decode, consumer_cfg=args.consumer_cfg)
    print(format_table(rows, ["pipeline", "images_per_s", "images", "seconds", "batch_size", "workers", "cpus", "device"]))
    if args.output_json:
        write_json(args.output_json, {"rows": rows})


if __name__ == "__main__":
    run_main(main)
