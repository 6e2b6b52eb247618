"""Shared plumbing: user-facing errors, atomic writes, checkpoint I/O, logging, metrics."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import tempfile
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterator, Optional

import torch


class UserError(Exception):
    """A mistake of the user's (missing file, wrong key, wrong checkpoint...).

    The message is one sentence naming the file and the fix; scripts turn it
    into that message on stderr and exit code 2, without a traceback.
    """


def run_main(main: Callable[[], Any]) -> None:
    """Run a script's ``main()``; a :class:`UserError` ends with its sentence and exit code 2."""
    try:
        code = main()
    except UserError as err:
        print(f"error: {user_message(err)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def user_message(err: UserError) -> str:
    """The sentence of ``err``, also when a DataLoader worker raised it.

    PyTorch re-raises a worker's exception as the same type with the worker's whole traceback as its
    message ("Caught UserError in DataLoader worker process 0. Original Traceback ..."); its last line
    holds the sentence.
    """
    text = str(err)
    if text.startswith("Caught UserError") and "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        return last.split("UserError: ", 1)[-1]
    return text


def require_file(path: str, what: str, hint: str = "check the path") -> str:
    """Return ``path`` if it is a file, else raise a :class:`UserError` naming it."""
    if not path or not os.path.isfile(path):
        raise UserError(f"{what} {path or '(none given)'} does not exist: {hint}.")
    return path


def require_parent_dir(path: str) -> str:
    """Return ``path`` if its folder exists, else raise a :class:`UserError`."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UserError(f"output folder {parent} does not exist: create it or choose another output path.")
    return path


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary name beside ``path``; rename it to ``path`` only on success."""
    require_parent_dir(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file, then rename: never a half-written checkpoint."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def write_json(path: str, data: Dict[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


class _CfgNodeAsOrderedDict:
    """Stands in for ``yacs.config.CfgNode`` while a checkpoint is unpickled with ``weights_only=True``.

    The original repository saves its yacs config inside every training checkpoint. The weights-only
    unpickler fills only exact ``dict``/``OrderedDict`` objects with items, so even an allow-listed
    ``CfgNode`` (a dict subclass) is refused; this stand-in makes the node an ``OrderedDict`` (whose
    ``__dict__`` takes the node's flags) and no yacs code runs while reading. :func:`_restore_cfgnodes`
    turns the result back into a ``CfgNode``.
    """

    def __new__(cls, *args: Any) -> "OrderedDict":
        return OrderedDict()


# exactly the globals a checkpoint of the original repository's training needs beyond PyTorch's defaults
CHECKPOINT_SAFE_GLOBALS = [(_CfgNodeAsOrderedDict, "yacs.config.CfgNode")]
_CFGNODE_FLAG = "__immutable__"  # set in every CfgNode's __dict__ by its constructor


def _restore_cfgnodes(value: Any) -> Any:
    """``OrderedDict`` objects made by :class:`_CfgNodeAsOrderedDict` (nested ones too) back into ``CfgNode``."""
    if isinstance(value, OrderedDict) and _CFGNODE_FLAG in vars(value):
        from yacs.config import CfgNode

        node = CfgNode({k: _restore_cfgnodes(v) for k, v in value.items()})
        if vars(value)[_CFGNODE_FLAG]:
            node.freeze()
        return node
    if type(value) is dict:
        return {k: _restore_cfgnodes(v) for k, v in value.items()}
    return value


def load_checkpoint_file(path: str) -> Dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (plus :data:`CHECKPOINT_SAFE_GLOBALS`).

    Raises:
        UserError: the file is missing or unreadable, or holds an object of a type weights-only loading
            refuses (the sentence names the type).
    """
    require_file(path, "checkpoint", "pass the path of a .pth file")
    try:
        with torch.serialization.safe_globals(CHECKPOINT_SAFE_GLOBALS):
            return _restore_cfgnodes(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as err:  # pickle, zip or unsupported-type errors all mean "not a checkpoint we can read safely"
        refused = _refused_types(path)
        if refused:
            raise UserError(f"checkpoint {path} holds objects of type {', '.join(refused)}, which loading with "
                            "weights_only=True refuses: if you trust the file, load it once with weights_only=False "
                            "and save only its 'model' state dict.") from None
        raise UserError(f"checkpoint {path} could not be read as a PyTorch checkpoint ({type(err).__name__}): is it the right file?") from None


def _refused_types(path: str) -> list:
    """The globals in ``path``'s pickle that weights-only loading does not allow (empty if it cannot tell)."""
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip checkpoint at all
        return []
    allowed = {name for _, name in CHECKPOINT_SAFE_GLOBALS}
    return [name for name in found if name not in allowed]


def metrics_dict(acc1: float, acc5: float, loss: float, images: int, images_per_s: float, **extra: Any) -> Dict[str, Any]:
    """The metrics every evaluating script prints and writes with ``--output-json``."""
    out = {"acc1": float(acc1), "acc5": float(acc5), "loss": float(loss), "images": int(images), "images_per_s": float(images_per_s)}
    out.update(extra)
    return out


def format_table(rows: list, columns: Optional[list] = None) -> str:
    """A small markdown table of dicts (used for the end-of-run summaries)."""
    if not rows:
        return ""
    columns = columns or list(rows[0].keys())

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


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
