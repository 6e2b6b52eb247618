"""One log format for every command (coloured on terminals, plain in files), and progress bars that keep logs clean."""
from __future__ import annotations

import logging
import os
import sys
from typing import Any, Iterable, Optional, TypeVar

T = TypeVar("T")


class _ColorFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        from termcolor import colored

        text = super().format(record)
        color = {logging.WARNING: "yellow", logging.ERROR: "red"}.get(record.levelno, "green")
        head, sep, rest = text.partition(" | ")
        return colored(head, color) + sep + rest


def create_logger(name: str = "swin", output_dir: Optional[str] = None, rank: int = 0) -> logging.Logger:
    """One logger format: coloured on terminals, plain in ``output_dir/log_rank{rank}.txt``."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
    fmt = f"[%(asctime)s {name}]" + (f"(rank {rank})" if rank else "") + " %(levelname)s | %(message)s"
    datefmt = "%H:%M:%S"
    if rank == 0:
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(_ColorFormatter(fmt, datefmt) if sys.stdout.isatty() else logging.Formatter(fmt, datefmt))
        logger.addHandler(console)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        fh = logging.FileHandler(os.path.join(output_dir, f"log_rank{rank}.txt"))
        fh.setFormatter(logging.Formatter(fmt, datefmt))
        logger.addHandler(fh)
    return logger


def progress(iterable: Iterable[T], desc: str, rank: int = 0, **kwargs: Any) -> Iterable[T]:
    """A tqdm bar over ``iterable`` on rank 0 when stderr is a terminal; the iterable itself otherwise.

    Cluster logs and CI output are files, where a bar would write a line per update: long loops log their
    progress every PRINT_FREQ steps instead (swin_trt/training/loop.py).
    """
    if rank != 0 or not sys.stderr.isatty():
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, leave=False, **kwargs)
