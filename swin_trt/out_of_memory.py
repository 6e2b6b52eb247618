"""Out of GPU memory: one sentence naming the batch size, what was asked for, what the GPU has, and the flag to lower.

PyTorch raises ``torch.OutOfMemoryError`` ("CUDA out of memory. Tried to allocate 147.00 GiB. GPU 0 has a total
capacity of 79.19 GiB of which 3.21 GiB is free. ..."); ONNX Runtime's CUDA provider raises its RuntimeException
("... BFCArena::AllocateRawInternal Failed to allocate memory for requested buffer of size 939524096"). Both are
the user's batch size meeting the GPU, not a bug; :func:`out_of_memory_guard` turns them into a :class:`UserError`.
"""
from __future__ import annotations

import contextlib
import re
from typing import Iterator, Optional, Tuple

import torch

from swin_trt.errors import UserError

_ASKED = re.compile(r"Tried to allocate ([\d.]+ [KMGT]?i?B)")
_CAPACITY = re.compile(r"total capacity of ([\d.]+ [KMGT]?i?B) of which ([\d.]+ [KMGT]?i?B) is free")
_ORT_ASKED = re.compile(r"Failed to allocate memory for requested buffer of size (\d+)")


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


def is_out_of_memory(err: BaseException) -> bool:
    """True for PyTorch's CUDA out-of-memory error and ONNX Runtime's failed device allocation."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    return type(err).__module__.startswith("onnxruntime") and bool(_ORT_ASKED.search(str(err)))


def _asked(message: str) -> Optional[str]:
    found = _ASKED.search(message)
    if found:
        return found.group(1)
    found = _ORT_ASKED.search(message)
    return _gib(int(found.group(1))) if found else None


def _gpu_memory(message: str) -> Optional[Tuple[str, str]]:
    """(total, free) of the GPU: from the message where PyTorch wrote them, else asked of the driver."""
    found = _CAPACITY.search(message)
    if found:
        return found.group(1), found.group(2)
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        return _gib(total), _gib(free)
    return None


def out_of_memory_error(err: BaseException, batch_size: int, flag: str = "--batch-size") -> UserError:
    """The sentence for ``err`` (see :func:`is_out_of_memory`) at ``batch_size``."""
    message = str(err)
    asked = _asked(message)
    memory = _gpu_memory(message)
    what = f"it asked for {asked} more" if asked else "an allocation failed"
    has = f"the GPU has {memory[0]} ({memory[1]} free)" if memory else "the GPU's memory could not be read"
    return UserError(f"out of GPU memory at batch size {batch_size}: {what} and {has}: lower {flag}.")


@contextlib.contextmanager
def out_of_memory_guard(batch_size: int, flag: str = "--batch-size") -> Iterator[None]:
    """Run a command's work; running out of GPU memory ends in :func:`out_of_memory_error` (exit 2 in a script)."""
    try:
        yield
    except Exception as err:
        if not is_out_of_memory(err):
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise out_of_memory_error(err, batch_size, flag) from None
