"""One log format for every command (coloured on terminals, plain in files), progress bars that keep logs clean,
and third-party chatter a user cannot act on kept off the console: warnings by the module that raises them, and what
ModelOpt and onnx-graphsurgeon print (:func:`third_party_output`)."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import warnings
from typing import Any, Dict, Iterable, Iterator, Optional, Tuple, Type, TypeVar

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
    # PuLP's notices about its 4.0 API, raised while ModelOpt's AutoQuantize solves its budget
    ("pulp", DeprecationWarning),
    # the exporter's own notices (the TorchScript exporter's deprecation, its logging set-up)
    ("torch.onnx", Warning),
)
# Warnings that other modules raise on a library's behalf (their stacklevel points at the caller), by their text
QUIET_MESSAGES: Tuple[Tuple[str, Type[Warning]], ...] = (
    # torch.onnx.export(..., dynamo=False): this project chooses the TorchScript exporter (shared/DESIGN.md says why)
    ("You are using the legacy TorchScript-based ONNX export", DeprecationWarning),
)
# Lines that ModelOpt and onnx-graphsurgeon print themselves (no warnings or logging): :func:`third_party_output`
QUIET_OUTPUT = tuple(re.compile(p) for p in (
    r"^\[[WIV]\] ",  # onnx-graphsurgeon's warnings and notes ("[W] Datatype: FLOAT8E4M3FN could not be converted ...")
    r"^Accessing the values of this constant tensor ",  # ... and the two lines of its constant-tensor note
    r"^If this is not what you intended, please avoid accessing the values of this constant tensor",
    r"^Inserted \d+ quantizers$",  # mtq.quantize
    r"^(Calibrating for |Estimating auto_quantize scores|AutoQuantize|Loading extension modelopt)",  # auto_quantize
))

# Third-party loggers whose warnings are of the same kind, demoted to DEBUG on the "swin" log (their errors are not).
QUIET_LOGGERS: Tuple[str, ...] = (
    "modelopt.onnx.autocast",  # AutoCast raising the opset of a Q/DQ graph to 19, duplicating shared constants
    "torch.utils.cpp_extension",  # "No CUDA runtime is found" when ModelOpt looks for its CUDA extension on a CPU
    # "Cosine annealing scheduler will have no effect": a QAT of one step (a calibration set of one batch) runs it at
    # the fine-tuning rate, as it should
    "timm.scheduler.cosine_lr",
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


def is_quiet(category: Type[Warning], filename: str, message: str = "") -> bool:
    """Whether a warning of ``category`` raised in ``filename`` is one of :data:`QUIET_WARNINGS` (or its text one of
    :data:`QUIET_MESSAGES`)."""
    module = origin_module(filename) or ""
    if any(str(message).startswith(text) and issubclass(category, kind) for text, kind in QUIET_MESSAGES):
        return True
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
            if is_quiet(category, filename, str(message)):
                logging.getLogger("swin").debug("%s:%s: %s: %s", filename, lineno, category.__name__, message)
            else:
                show(message, category, filename, lineno, file, line)

        showwarning._swin_routed = True  # type: ignore[attr-defined]
        warnings.showwarning = showwarning
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ToDebug) for f in logger.filters):
            logger.addFilter(_ToDebug())


def _is_chatter(line: str) -> bool:
    """A captured line (a progress bar's last state after its carriage returns) that :data:`QUIET_OUTPUT` names."""
    shown = line.rsplit("\r", 1)[-1].strip() or line.strip()
    return any(pattern.search(part.strip()) for part in (shown, line.split("\r", 1)[0]) for pattern in QUIET_OUTPUT)


@contextlib.contextmanager
def third_party_output(what: str) -> Iterator[None]:
    """Capture what the code run inside prints to stdout and stderr (ModelOpt's "Inserted N quantizers", its
    progress bars, onnx-graphsurgeon's notes): lines of :data:`QUIET_OUTPUT` go to the "swin" log at DEBUG, every other
    line is printed afterwards where it was going, so nothing a user should read is lost. The toolkit's own log
    handlers keep their streams and are not captured."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield
    finally:
        log = logging.getLogger("swin")
        for captured, stream in ((out, sys.stdout), (err, sys.stderr)):
            kept = []
            for line in captured.getvalue().splitlines():
                if _is_chatter(line):
                    log.debug("[%s] %s", what, line.rsplit("\r", 1)[-1].strip())
                elif line.strip():
                    kept.append(line)
            if kept:
                stream.write("\n".join(kept) + "\n")
                stream.flush()


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
