"""Files: inputs that must exist, and outputs written atomically (a temporary name, then a rename)."""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import tempfile
from typing import Any, Dict, Iterator, Optional

import torch

from swin_trt.errors import UserError


def require_file(path: str, what: str, hint: str = "check the path") -> str:
    """Return ``path`` if it is a file, else raise a :class:`UserError` naming it."""
    if not path or not os.path.isfile(path):
        raise UserError(f"{what} {path or '(none given)'} does not exist: {hint}.")
    return path


def make_folder(path: str) -> str:
    """``os.makedirs(path, exist_ok=True)``; a folder that cannot be made (read-only, full) ends in one sentence."""
    with writing(path):
        os.makedirs(path, exist_ok=True)
    return path


def require_parent_dir(path: str) -> str:
    """Return ``path`` if its folder exists, else raise a :class:`UserError`."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UserError(f"output folder {parent} does not exist: create it or choose another output path.")
    return path


# errors of a write that the user fixes (room, permissions), not bugs: what each means, for the sentence
WRITE_ERRORS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file is larger than this process may write (ulimit -f)",
    errno.EROFS: "the folder is on a read-only filesystem",
    errno.EACCES: "the folder is not writable",
    errno.EPERM: "the folder is not writable",
}


def _free_bytes(folder: str) -> Optional[int]:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


class WriteError(UserError):
    """A write that failed for want of room or permission; ``errno`` says which (a key of :data:`WRITE_ERRORS`)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.errno = code


def write_error(code: int, path: str, needed: Optional[int] = None) -> WriteError:
    """The sentence for a failed write of ``path``: what went wrong, the bytes it needed where known, the fix."""
    folder = os.path.dirname(os.path.abspath(path))
    free = _free_bytes(folder) if code in (errno.ENOSPC, errno.EDQUOT) else None
    sizes = ([f"it needed {needed:,} bytes"] if needed is not None else []) + (
        [f"{free:,} bytes free"] if free is not None else [])
    detail = f" ({', '.join(sizes)})" if sizes else ""
    return WriteError(f"could not write {path}: {WRITE_ERRORS[code]}{detail}; nothing was left under that name: "
                      f"free space or choose a writable folder for it.", code)


@contextlib.contextmanager
def writing(path: str, needed: Optional[int] = None) -> Iterator[None]:
    """Turn a failed write of ``path`` (disk full, quota, read-only, not writable) into a :class:`WriteError`.

    A write of a temporary file inside (an inner ``writing``) is reported under ``path``, the name the user gave.
    """
    try:
        yield
    except WriteError as err:
        raise write_error(err.errno, path, needed) from None
    except OSError as err:
        if err.errno not in WRITE_ERRORS:
            raise
        raise write_error(err.errno, path, needed) from None


def require_room(path: str, needed: int) -> str:
    """Before a long run whose first write is ``path`` (``needed`` bytes, estimated): its folder can be made and
    written, and has the room. Checked up front, so hours of training or calibration are not spent on a disk that
    cannot take their result.

    Raises:
        WriteError: in the sentence :func:`write_error` gives a failed write, naming the folder (cannot be made or
            written) or ``path`` with the bytes it needs and those free.
    """
    folder = os.path.dirname(os.path.abspath(path))
    make_folder(folder)
    with writing(folder):
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=folder)
        os.close(fd)
        os.remove(probe)
    free = _free_bytes(folder)
    if free is not None and free < needed:
        raise WriteError(f"could not write {path}: it needs about {needed:,} bytes and {free:,} are free there; nothing "
                         "was started: free space or choose a writable folder for it.", errno.ENOSPC)
    return path


@contextlib.contextmanager
def atomic_path(path: str, needed: Optional[int] = None) -> Iterator[str]:
    """Yield a temporary name beside ``path``; rename it to ``path`` only on success.

    A write that fails for want of room or permission ends in one :class:`UserError` naming ``path`` (and
    ``needed``, its size in bytes, when the caller knows it); the temporary file is removed in every case.
    """
    require_parent_dir(path)
    folder = os.path.dirname(os.path.abspath(path))
    with writing(path, needed):
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
    with atomic_path(path, len(data)) as tmp:
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
