"""Start-up time: building the datasets and reading the first batch, before and after lazy bad-image handling.

    python benchmarks/startup.py [--root output/startup_jpegs] [--num-files 100000] [--classes 1000]

Writes an ImageFolder of ``--num-files`` small JPEGs in ``--classes`` class
folders under ``ROOT/train`` (kept for reuse; ``ROOT/val`` is a link to it,
so both splits have every file), then times, for the two commands that build
the most datasets:

- ``main.py --eval``: the val/ dataset and loader, then its first batch;
- ``swin_quant_flow.py --quantize``: the val/ loader, the calibration set and
  the QAT training loader (built in that order by the script), then the first
  calibration batch.

"before" is the approach replaced in issue 13, timed inline here: every image
header opened and verified when a dataset is built (``old_checked_folder``).
"after" is the code as it is (data/build.py, quant/calibrate.py). Files are in
the page cache (written just before, or read by the warm-up pass), so the
figures are the CPU cost of the opens; on a cold network file system the
difference grows. Prints a markdown table; no asserts.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Subset
from torchvision.datasets import ImageFolder

from swin_trt.config import get_config
from swin_trt.data import build_loader
from swin_trt.data.transforms import build_transform
from swin_trt.errors import UserError, run_main
from swin_trt.files import write_json
from swin_trt.quant.calibrate import \
    build_calib_loader  # imported here: both scripts import it (and ModelOpt) at start-up
from swin_trt.tables import format_table

DISTINCT = 64  # distinct JPEG payloads, written round-robin: the opens, not the encoding, are what is measured


def write_tree(root: str, num_files: int, classes: int, size: int = 32) -> bool:
    """``root/train/<class>/<i>.jpg`` (``num_files`` over ``classes``) and ``root/val`` -> train; False if it existed.

    Written under a temporary name and renamed when complete, so an interrupted run never leaves a partial tree.
    """
    if os.path.isdir(os.path.join(root, "train")):
        return False
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    rng = np.random.default_rng(0)
    payloads = []
    for _ in range(DISTINCT):
        path = os.path.join(tempfile.gettempdir(), "startup_payload.jpg")
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path, "JPEG", quality=90)
        with open(path, "rb") as f:
            payloads.append(f.read())
        os.remove(path)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.", dir=parent)
    try:
        for c in range(classes):
            folder = os.path.join(tmp, "train", f"n{c:08d}")
            os.makedirs(folder)
            for i in range(c, num_files, classes):
                with open(os.path.join(folder, f"{i:07d}.jpg"), "wb") as f:
                    f.write(payloads[i % DISTINCT])
        os.symlink("train", os.path.join(tmp, "val"))
        os.replace(tmp, root)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    return True


class OpenCounter:
    """Counts ``PIL.Image.open`` calls while active (the number of image files a step opened)."""

    def __init__(self) -> None:
        self.count = 0
        self._real = Image.open

    def __enter__(self) -> "OpenCounter":
        def counting(*args: Any, **kwargs: Any):
            self.count += 1
            return self._real(*args, **kwargs)

        Image.open = counting
        return self

    def __exit__(self, *exc: Any) -> None:
        Image.open = self._real


def old_checked_folder(root: str, transform: Callable) -> ImageFolder:
    """The dataset as built before issue 13: ImageFolder, then every header opened and verified, bad ones dropped."""
    dataset = ImageFolder(root, transform=transform)
    good = []
    for path, label in dataset.samples:
        try:
            with Image.open(path) as image:
                image.verify()
            good.append((path, label))
        except (OSError, UnidentifiedImageError, SyntaxError):
            pass
    dataset.samples = dataset.imgs = good
    dataset.targets = [label for _, label in good]
    return dataset


def before_eval(config) -> DataLoader:
    dataset = old_checked_folder(os.path.join(config.DATA.DATA_PATH, "val"), build_transform(config, False))
    return DataLoader(dataset, batch_size=config.DATA.BATCH_SIZE, shuffle=False, num_workers=config.DATA.NUM_WORKERS)


def after_eval(config) -> DataLoader:
    return build_loader(config, "val")


def before_quant(config) -> DataLoader:
    """val loader, calibration subset of a checked train folder, checked QAT train folder (swin_quant_flow.py's order)."""
    before_eval(config)
    calib = old_checked_folder(os.path.join(config.DATA.DATA_PATH, "train"), build_transform(config, False))
    picked = torch.randperm(len(calib), generator=torch.Generator().manual_seed(config.SEED))
    calib_loader = DataLoader(Subset(calib, picked[:config.QUANT.NUM_CALIB_BATCH * config.DATA.BATCH_SIZE].tolist()),
                              batch_size=config.DATA.BATCH_SIZE, num_workers=config.DATA.NUM_WORKERS)
    old_checked_folder(os.path.join(config.DATA.DATA_PATH, "train"), build_transform(config, True))
    return calib_loader


def after_quant(config) -> DataLoader:
    build_loader(config, "val")
    calib_loader = build_calib_loader(config, config.QUANT.NUM_CALIB_BATCH, config.DATA.BATCH_SIZE)
    build_loader(config, "train")
    return calib_loader


def time_start_up(build: Callable[[Any], DataLoader], config) -> Dict[str, float]:
    """Seconds to build (``build(config)``) and to read the first batch; image files opened by each."""
    with OpenCounter() as opens:
        start = time.perf_counter()
        loader = build(config)
        built = time.perf_counter() - start
        opened_building = opens.count
        next(iter(loader))
        total = time.perf_counter() - start
    return {"build_s": built, "first_batch_s": total - built, "total_s": total, "opened_building": opened_building,
            "opened": opens.count}


def benchmark(root: str, cfg: str, batch_size: int, workers: int, repeats: int) -> List[Dict[str, Any]]:
    """One row per command: build and first-batch seconds before and after, each the median of ``repeats`` runs."""
    config = get_config(cfg, ["DATA.NUM_WORKERS", str(workers)], DATA__DATA_PATH=root, DATA__BATCH_SIZE=batch_size)
    files = sum(len(files) for _, _, files in os.walk(os.path.join(root, "train")))
    rows = []
    cases = [("main.py --eval", f"val/ ({files:,} files)", before_eval, after_eval),
             ("swin_quant_flow.py --quantize", f"val/, calibration set, QAT train/ ({files:,} files each)",
              before_quant, after_quant)]
    time_start_up(after_eval, config)  # warm-up: page cache, imports
    for command, what, before, after in cases:
        row: Dict[str, Any] = {"command": command, "datasets built": what}
        for label, build in (("before", before), ("after", after)):
            runs = [time_start_up(build, config) for _ in range(repeats)]
            for key in ("build_s", "first_batch_s", "total_s"):
                row[f"{label} {key}"] = round(statistics.median(r[key] for r in runs), 2)
            row[f"{label} images opened"] = runs[0]["opened"]
        row["speed-up"] = f"{row['before total_s'] / row['after total_s']:.1f}x"
        rows.append(row)
    return rows


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="output/startup_jpegs", help="where the JPEG tree is written (and reused)")
    p.add_argument("--num-files", type=int, default=100_000, help="JPEG files in train/ (val/ links to it)")
    p.add_argument("--classes", type=int, default=1000, help="class folders")
    p.add_argument("--cfg", default="configs/swin_tiny_patch4_window7_224.yaml", help="config of the loaders")
    p.add_argument("--batch-size", type=int, default=128, help="images in the first batch")
    p.add_argument("--workers", type=int, default=0, help="loader worker processes (0: read in this process)")
    p.add_argument("--repeats", type=int, default=3, help="runs per cell; the median is shown")
    p.add_argument("--output-json", help="write the rows here")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    from swin_trt.validation import check_args

    check_args(args, {"num_files": 1, "classes": 1, "batch_size": 1, "workers": 0, "repeats": 1})
    if args.classes > args.num_files:
        raise UserError(f"--classes {args.classes} is more than --num-files {args.num_files}: every class needs a file.")
    start = time.perf_counter()
    if write_tree(args.root, args.num_files, args.classes):
        print(f"wrote {args.num_files:,} JPEGs in {args.classes} classes under {args.root} in "
              f"{time.perf_counter() - start:.0f} s")
    rows = benchmark(args.root, args.cfg, args.batch_size, args.workers, args.repeats)
    print(f"{datetime.date.today()}, {platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}, torch {torch.__version__}, batch {args.batch_size}, loader workers {args.workers}, "
          f"median of {args.repeats}")
    print(format_table(rows))
    if args.output_json:
        write_json(args.output_json, {"rows": rows, "date": str(datetime.date.today()), "cpus": os.cpu_count()})


if __name__ == "__main__":
    run_main(main)
