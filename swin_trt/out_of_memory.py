"""Out of GPU memory: one sentence naming the batch size, what was asked for, what the GPU has, and the flag to lower.

It reaches a command in several forms, all recognised here (:func:`find_out_of_memory`):

- PyTorch's ``torch.OutOfMemoryError`` ("CUDA out of memory. Tried to allocate 147.00 GiB. GPU 0 has a total
  capacity of 79.19 GiB of which 3.21 GiB is free. ..."), raised directly, or re-raised by a DataLoader worker (the
  same type, the worker's traceback as its message);
- a CUDA runtime error that PyTorch raises as ``torch.AcceleratorError`` (a RuntimeError) or RuntimeError: "CUDA
  error: out of memory", cuBLAS's and cuDNN's ``*_STATUS_ALLOC_FAILED``;
- ONNX Runtime's CUDA provider's RuntimeException ("... BFCArena::AllocateRawInternal Failed to allocate memory for
  requested buffer of size 939524096", "CUDA failure 2: out of memory");
- any of these wrapped by another library: chained as the ``__cause__`` or ``__context__`` of another exception, or
  kept as an attribute (``torch.compile``'s ``BackendCompilerFailed`` and ``InductorError`` keep it as
  ``inner_exception``).

All are the user's batch size meeting the GPU, not a bug: :func:`out_of_memory_guard` turns them into a
:class:`UserError`.
"""
from __future__ import annotations

import contextlib
import re
from typing import Iterator, List, Optional, Tuple

import torch

from swin_trt.errors import UserError

_ASKED = re.compile(r"Tried to allocate ([\d.]+ [KMGT]?i?B)")
_CAPACITY = re.compile(r"total capacity of ([\d.]+ [KMGT]?i?B) of which ([\d.]+ [KMGT]?i?B) is free")
_ORT_ASKED = re.compile(r"Failed to allocate memory for requested buffer of size (\d+)")
# a CUDA allocation that failed, in the words of the CUDA runtime, cuBLAS, cuDNN and ONNX Runtime's CUDA provider
_CUDA_OOM = re.compile(r"CUDA error: out of memory|CUDA failure 2: out of memory|cudaErrorMemoryAllocation|"
                       r"CUBLAS_STATUS_ALLOC_FAILED|CUDNN_STATUS_ALLOC_FAILED")
# attributes under which libraries keep the exception they wrap (torch._dynamo / torch._inductor: inner_exception)
WRAPPED = ("inner_exception", "original_exception", "orig_exc")


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


def _is_out_of_memory_itself(err: BaseException) -> bool:
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err)
    if type(err).__module__.startswith("onnxruntime"):
        return bool(_ORT_ASKED.search(text) or _CUDA_OOM.search(text))
    return isinstance(err, RuntimeError) and bool(_CUDA_OOM.search(text))


def _wrapped(err: BaseException) -> List[BaseException]:
    """The exceptions ``err`` carries: its cause, its context and what it keeps under :data:`WRAPPED`."""
    found = [err.__cause__, err.__context__] + [getattr(err, name, None) for name in WRAPPED]
    return [e for e in found if isinstance(e, BaseException)]


def find_out_of_memory(err: BaseException) -> Optional[BaseException]:
    """The out-of-memory error in ``err`` or anything it wraps (see the module docstring), else None."""
    pending, seen = [err], set()
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if _is_out_of_memory_itself(current):
            return current
        pending.extend(_wrapped(current))
    return None


def is_out_of_memory(err: BaseException) -> bool:
    """True when ``err`` is, or wraps, running out of GPU memory (PyTorch, CUDA libraries, ONNX Runtime)."""
    return find_out_of_memory(err) is not None


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
        try:
            free, total = torch.cuda.mem_get_info()
        except RuntimeError:  # a CUDA context that the failed allocation left unusable
            return None
        return _gib(total), _gib(free)
    return None


def out_of_memory_error(err: BaseException, batch_size: int, flag: str = "--batch-size") -> UserError:
    """The sentence for ``err`` (see :func:`is_out_of_memory`) at ``batch_size``."""
    message = str(find_out_of_memory(err) or err)
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
        release_cached_memory()
        raise out_of_memory_error(err, batch_size, flag) from None


def release_cached_memory() -> None:
    """Give PyTorch's cached blocks back after an out-of-memory error (best effort: the CUDA context may be gone)."""
    if torch.cuda.is_available():
        try:
            torch.cuda.empty_cache()
        except RuntimeError:
            pass
