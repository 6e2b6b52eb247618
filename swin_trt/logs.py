"""One log format for every command (coloured on terminals, plain in files), progress bars that keep logs clean,
and third-party warnings a user cannot act on kept off the console."""
from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any, Dict, Iterable, Optional, Tuple, Type, TypeVar

from swin_trt.files import make_folder, writing

T = TypeVar("T")

# Warnings raised by code we call but a user of this toolkit cannot act on, by the module that raises them (and the
# category): they go to the "swin" log at DEBUG instead of the console. Everything else, the project's own warnings
# included, is shown as before.
QUIET_WARNINGS: Tuple[Tuple[str, Type[Warning]], ...] = (
    # ModelOpt's quantizer code, traced when the quantized model is exported (torch TracerWarnings about its
    # Python-side checks of amax), and its note that the transformers package is absent
    ("modelopt", Warning),
    # torch.jit.script's deprecation notice: ModelOpt's tensor_quant.py applies it when imported; this project never does
    ("torch.jit._script", FutureWarning),
)

# Third-party loggers whose warnings are of the same kind, demoted to DEBUG on the "swin" log (their errors are not).
QUIET_LOGGERS: Tuple[str, ...] = (
    "modelopt.onnx.autocast",  # AutoCast raising the opset of a Q/DQ graph to 19, duplicating shared constants
    "torch.utils.cpp_extension",  # "No CUDA runtime is found" when ModelOpt looks for its CUDA extension on a CPU
)

_ORIGINS: Dict[str, Optional[str]] = {}  # file name -> module name (None: no loaded module has that file)


def origin_module(filename: str) -> Optional[str]:
    """The name of the loaded module whose source file is ``filename`` (where a warning was raised), or None.

    A module is in ``sys.modules`` from the start of its import, so a warning raised while it is imported finds it.
    """
    if filename not in _ORIGINS:
        target = os.path.abspath(filename)
        files = ((name, getattr(module, "__file__", None)) for name, module in list(sys.modules.items()))
        _ORIGINS[filename] = next((name for name, path in files if path and os.path.abspath(path) == target), None)
    return _ORIGINS[filename]


def is_quiet(category: Type[Warning], filename: str) -> bool:
    """Whether a warning of ``category`` raised in ``filename`` is one of :data:`QUIET_WARNINGS`."""
    module = origin_module(filename) or ""
    return any((module == prefix or module.startswith(prefix + ".")) and issubclass(category, kind)
               for prefix, kind in QUIET_WARNINGS)


class _ToDebug(logging.Filter):
    """A logger filter that re-logs each record below ERROR on the "swin" log at DEBUG and stops it (errors pass)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        logging.getLogger("swin").debug("[%s] %s", record.name, record.getMessage())
        return False


def route_third_party_warnings() -> None:
    """Send :data:`QUIET_WARNINGS` and :data:`QUIET_LOGGERS` records to the "swin" log at DEBUG (idempotent).

    Wraps :func:`warnings.showwarning`, so warnings filters (``-W``, ``PYTHONWARNINGS``) still decide first whether a
    warning is shown at all; only where a shown warning goes changes.
    """
    show = warnings.showwarning
    if not getattr(show, "_swin_routed", False):
        def showwarning(message, category, filename, lineno, file=None, line=None):
            if is_quiet(category, filename):
                logging.getLogger("swin").debug("%s:%s: %s: %s", filename, lineno, category.__name__, message)
            else:
                show(message, category, filename, lineno, file, line)

        showwarning._swin_routed = True  # type: ignore[attr-defined]
        warnings.showwarning = showwarning
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ToDebug) for f in logger.filters):
            logger.addFilter(_ToDebug())


class _ColorFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        from termcolor import colored

        text = super().format(record)
        color = {logging.WARNING: "yellow", logging.ERROR: "red"}.get(record.levelno, "green")
        head, sep, rest = text.partition(" | ")
        return colored(head, color) + sep + rest


def create_logger(name: str = "swin", output_dir: Optional[str] = None, rank: int = 0) -> logging.Logger:
    """One logger format: coloured on terminals at INFO, plain in ``output_dir/log_rank{rank}.txt`` at DEBUG (with
    the third-party warnings :func:`route_third_party_warnings` sends there)."""
    route_third_party_warnings()
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
    fmt = f"[%(asctime)s {name}]" + (f"(rank {rank})" if rank else "") + " %(levelname)s | %(message)s"
    datefmt = "%H:%M:%S"
    if rank == 0:
        console = logging.StreamHandler(sys.stdout)
        console.setLevel(logging.INFO)
        console.setFormatter(_ColorFormatter(fmt, datefmt) if sys.stdout.isatty() else logging.Formatter(fmt, datefmt))
        logger.addHandler(console)
    if output_dir:
        log_file = os.path.join(output_dir, f"log_rank{rank}.txt")
        make_folder(output_dir)
        with writing(log_file):
            fh = logging.FileHandler(log_file)
        fh.setLevel(logging.DEBUG)
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
