"""Which TensorRT-family Python module to use, and the few places where their APIs differ.

Three modules expose the same builder/runtime API: ``tensorrt`` (TensorRT 10.x
and 11.x), ``tensorrt_rtx`` (TensorRT-RTX from the SDK) and
``tensorrt_rtx_bindings`` (TensorRT-RTX from the PyPI wheels). The code of the
other modules in trt/ is written once against that common API and asks this
module for the handful of differences: the strongly-typed network flag
(required on TensorRT 10, ignored on 11, the default on TensorRT-RTX) and
whether the module is TensorRT-RTX (which builds ahead of time on a CPU).

Full TensorRT cannot create a builder without a GPU (``trt.Builder`` raises
pybind11's ``TypeError: ... factory function returned nullptr``), so ``auto``
passes over it on a machine without one, and :meth:`Backend.create_builder`
turns that failure into one sentence when ``tensorrt`` was asked for by name.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
from types import ModuleType
from typing import Dict, Optional, Tuple

import torch

from swin_trt.errors import UserError

_LOG = logging.getLogger("swin")

# backend name -> modules tried in order
MODULES: Dict[str, Tuple[str, ...]] = {
    "tensorrt": ("tensorrt",),
    "tensorrt_rtx": ("tensorrt_rtx", "tensorrt_rtx_bindings"),
}
AUTO_ORDER = ("tensorrt", "tensorrt_rtx")
BACKEND_CHOICES = ("auto",) + AUTO_ORDER
_LOGGERS: Dict[str, object] = {}  # module name -> its Logger: TensorRT keeps the first logger of a process

# TensorRT DataType member name -> torch dtype (FP8 is E4M3 in TensorRT)
TORCH_DTYPES: Dict[str, torch.dtype] = {
    "FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT8": torch.int8,
    "UINT8": torch.uint8, "INT32": torch.int32, "INT64": torch.int64, "BOOL": torch.bool,
    "FP8": torch.float8_e4m3fn,
}


@dataclasses.dataclass(frozen=True)
class Backend:
    """A loaded TensorRT-family module.

    Attributes:
        name: ``tensorrt`` or ``tensorrt_rtx`` (the name recorded in engine metadata).
        module: the imported Python module.
        module_name: the module actually imported (``tensorrt_rtx_bindings`` for the wheels).
        version: the module's ``__version__``.
    """

    name: str
    module: ModuleType
    module_name: str
    version: str

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def is_rtx(self) -> bool:
        return self.name == "tensorrt_rtx"

    def describe(self) -> str:
        return f"{self.name} {self.version}"

    def logger(self, verbose: bool = False):
        """The process's TensorRT logger for this module, at VERBOSE or WARNING."""
        trt = self.module
        logger = _LOGGERS.setdefault(self.module_name, trt.Logger(trt.Logger.WARNING))
        logger.min_severity = trt.Logger.VERBOSE if verbose else trt.Logger.WARNING
        return logger

    def create_builder(self, logger):
        """``Builder(logger)``, or a :class:`UserError` when this machine cannot make one.

        Raises:
            UserError: full TensorRT found no usable GPU (the bindings raise ``TypeError``
                because ``createInferBuilder`` returned nullptr).
        """
        trt = self.module
        try:
            builder = trt.Builder(logger)
        except TypeError as err:
            builder, reason = None, str(err)
        else:
            reason = "it returned None"
        if builder is None:
            raise UserError(f"{self.describe()} could not create a builder ({reason}); full TensorRT needs a visible "
                            "NVIDIA GPU with a working driver: check nvidia-smi, or pass --backend tensorrt_rtx to "
                            "build on the CPU with TensorRT-RTX.")
        return builder

    def network_flags(self) -> int:
        """Flags for ``Builder.create_network``: always strongly typed.

        TensorRT 10 needs ``1 << STRONGLY_TYPED``; TensorRT 11 keeps the member
        but ignores it; TensorRT-RTX networks are strongly typed whatever the
        flags. Setting the bit where the member exists is right for all three.
        """
        trt = self.module
        flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        return 0 if flag is None else 1 << int(flag)


def is_tensorrt_module(module: ModuleType) -> bool:
    """True for real TensorRT-family bindings.

    A folder holding only ``.pyi`` files (what ``pip install tensorrt-stubs`` puts in
    site-packages) imports as an empty namespace package: importable, but no API.
    """
    return hasattr(module, "Builder") and hasattr(module, "__version__")


def _import_first(names: Tuple[str, ...]) -> Optional[Tuple[ModuleType, str]]:
    for module_name in names:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        except OSError as err:  # the module exists but its shared libraries do not load
            _LOG.warning("%s is installed but did not load (%s)", module_name, err)
            continue
        if is_tensorrt_module(module):
            return module, module_name
        _LOG.warning("%s imports but is not a TensorRT binding (no Builder or __version__; type stubs only?): "
                     "ignoring it", module_name)
    return None


def load_backend(choice: str = "auto") -> Backend:
    """Import the TensorRT-family module that ``choice`` names.

    Args:
        choice: ``auto`` (``tensorrt`` when importable and a CUDA GPU is visible, else
            TensorRT-RTX), ``tensorrt`` or ``tensorrt_rtx``.

    Raises:
        UserError: the choice is unknown, no such module is installed, or (``auto``) only
            full TensorRT is installed and there is no GPU for it.
    """
    if choice not in BACKEND_CHOICES:
        raise UserError(f"--backend {choice!r} is not known: use one of {', '.join(BACKEND_CHOICES)}.")
    names = AUTO_ORDER if choice == "auto" else (choice,)
    passed_over = None
    for name in names:
        found = _import_first(MODULES[name])
        if not found:
            continue
        module, module_name = found
        backend = Backend(name, module, module_name, str(module.__version__))
        if choice == "auto" and not backend.is_rtx and not torch.cuda.is_available():
            # full TensorRT creates neither builder nor runtime without a GPU; TensorRT-RTX builds on the CPU
            passed_over = backend
            continue
        if passed_over:
            _LOG.info("%s is installed but no CUDA GPU is visible: using %s, which builds on the CPU",
                      passed_over.describe(), backend.describe())
        return backend
    if passed_over:
        raise UserError(f"{passed_over.describe()} is installed but no CUDA GPU is visible, and full TensorRT needs one "
                        "to build or run engines: run on a GPU machine, or install tensorrt-rtx-cu13-bindings to build "
                        "on the CPU.")
    wanted = " or ".join(m for n in names for m in MODULES[n])
    raise UserError(f"no TensorRT Python module is installed ({wanted} not importable): install tensorrt "
                    "(TensorRT 10/11, needs an NVIDIA GPU to run engines) or tensorrt-rtx-cu13-bindings "
                    "(TensorRT-RTX, builds on the CPU).")


def torch_dtype(trt_dtype) -> torch.dtype:
    """The torch dtype of a TensorRT ``DataType`` (matched by member name, so any backend's enum works)."""
    name = getattr(trt_dtype, "name", str(trt_dtype).split(".")[-1])
    try:
        return TORCH_DTYPES[name]
    except KeyError:
        raise ValueError(f"TensorRT data type {name} has no torch equivalent") from None


def dtype_name(trt_dtype) -> str:
    """``DataType.HALF`` -> ``HALF`` for any backend's enum."""
    return getattr(trt_dtype, "name", str(trt_dtype).split(".")[-1])


def runtime_unavailable_reason(modules: Tuple[str, ...] = ("tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings")) -> Optional[str]:
    """Why TensorRT engines cannot run here (None when they might): no GPU, or none of ``modules`` installed."""
    if not torch.cuda.is_available():
        return "no CUDA GPU here: running a TensorRT engine needs one (TensorRT-RTX builds on the CPU but cannot run)"
    if not any(_import_first((m,)) for m in modules if importlib.util.find_spec(m)):
        return f"no TensorRT Python module installed ({' or '.join(modules)})"
    return None


def cuda_device_summary() -> Optional[Dict[str, str]]:
    """Name and compute capability of the current CUDA device, or None without one."""
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    return {"name": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}"}
