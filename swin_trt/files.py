"""Files: inputs that must exist, and outputs written atomically (a temporary name, then a rename)."""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from typing import Any, Dict, Iterator

import torch

from swin_trt.errors import UserError


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
