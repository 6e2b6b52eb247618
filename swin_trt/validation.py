"""Checks made before any work: the numbers a user passes (flags and config) and the kind of every input file.

A wrong number or file found late costs a traceback from deep inside PyTorch,
protobuf or ModelOpt, after minutes of start-up; found here it costs one
sentence naming the flag, key or file and the fix (a :class:`UserError`).
"""
from __future__ import annotations

import argparse
import importlib
import os
from typing import Dict, Iterable, Tuple, Union

from yacs.config import CfgNode

from swin_trt.errors import UserError
from swin_trt.files import require_file

Bound = Union[int, Tuple[int, int]]  # a minimum, or (minimum, maximum), both inclusive

# config keys that hold counts or sizes, with their smallest (and largest) allowed value
CONFIG_BOUNDS: Dict[str, Bound] = {
    "DATA.BATCH_SIZE": 1, "DATA.IMG_SIZE": 1, "DATA.NUM_WORKERS": 0, "MODEL.NUM_CLASSES": 1,
    "TRAIN.EPOCHS": 0, "TRAIN.WARMUP_EPOCHS": 0, "TRAIN.ACCUMULATION_STEPS": 1, "SAVE_FREQ": 1, "PRINT_FREQ": 1,
    "QUANT.NUM_CALIB_BATCH": 1, "QUANT.FINETUNE_EPOCHS": 0, "QUANT.PERCENTILE": (0, 100), "QUANT.SMOOTH_ALPHA": (0, 1),
    "QUANT.CHECK_STEPS": 0, "QUANT.SENSITIVITY_IMAGES": 1, "QUANT.CHECK_FP16_FACTOR": 0, "QUANT.CHECK_IMAGES": 1, "QUANT.EFFECTIVE_BITS": (4, 16),
    "ONNX.OPSET": 17, "ONNX.BATCH_SIZE": 1,
    "TRT.WORKSPACE_MIB": 1, "TRT.MIN_BATCH": 1, "TRT.OPT_BATCH": 1, "TRT.MAX_BATCH": 1, "TRT.OPTIMIZATION_LEVEL": (0, 5),
}
_ZIP, _PICKLE = b"PK\x03\x04", 0x80


def _bounds(bound: Bound) -> Tuple[int, float]:
    return bound if isinstance(bound, tuple) else (bound, float("inf"))


def _outside(value: float, bound: Bound) -> str:
    """'' when ``value`` is within ``bound``, else what it must be ("of at least 1", "between 0 and 5")."""
    low, high = _bounds(bound)
    if low <= value <= high:
        return ""
    return f"of at least {low}" if high == float("inf") else f"between {low} and {high}"


def check_args(args: argparse.Namespace, bounds: Dict[str, Bound]) -> None:
    """Check the numeric flags of ``args`` (by their ``dest``); flags left out (None) are not checked.

    A list value (``nargs``) is checked item by item.

    Raises:
        UserError: naming the flag, its value and the allowed range.
    """
    for dest, bound in bounds.items():
        value = getattr(args, dest, None)
        for item in value if isinstance(value, list) else [value]:
            if item is None:
                continue
            need = _outside(item, bound)
            if need:
                flag = "--" + dest.replace("_", "-")
                raise UserError(f"{flag} is {item}: pass a number {need}.")


def check_config(config: CfgNode, cfg_file: str) -> None:
    """Check every count and size of the merged config (YAML, ``--opts`` and flags) against :data:`CONFIG_BOUNDS`.

    Raises:
        UserError: naming the key, its value, where it can come from and the allowed range.
    """
    for key, bound in CONFIG_BOUNDS.items():
        node = config
        for part in key.split("."):
            node = node[part]
        need = _outside(node, bound)
        if need:
            raise UserError(f"config value {key} is {node} (from {cfg_file}, --opts or a flag): set it to a number {need}.")


def describe(path: str) -> str:
    """A few words on what ``path`` holds, for messages ("a text file", "a zip archive", "a folder"...)."""
    if os.path.isdir(path):
        return "a folder"
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        return "an empty file"
    if head.startswith(_ZIP):
        return "a zip archive, such as a PyTorch checkpoint"
    if head[0] == _PICKLE:
        return "a Python pickle, such as an old PyTorch checkpoint"
    if b"\0" not in head:
        try:
            head.decode("utf-8")
            return "a text file"
        except UnicodeDecodeError:
            pass
    return "a binary file of another kind"


def _is_checkpoint(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(_ZIP) or (len(head) > 1 and head[0] == _PICKLE)


def require_checkpoint(path: str, what: str = "checkpoint", hint: str = "pass the .pth file") -> str:
    """Return ``path`` if it is a PyTorch checkpoint file (zip or legacy pickle), else raise a :class:`UserError`."""
    require_file(path, what, hint)
    if not _is_checkpoint(path):
        raise UserError(f"{what} {path} is not a PyTorch checkpoint (it is {describe(path)}): {hint}.")
    return path


def _load_onnx_header(path: str):
    """The ONNX model in ``path`` without external weights, or None when protobuf cannot parse it as one."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(path, load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, UnicodeDecodeError):
        return None
    return model if len(model.graph.node) else None  # protobuf accepts some garbage as an empty message


def require_onnx(path: str, what: str = "ONNX file", hint: str = "pass the .onnx file written by export.py"):
    """The ONNX model in ``path`` (without external weights) if it parses as one with a graph.

    Raises:
        UserError: missing, or not an ONNX model (the sentence says what it is instead).
    """
    require_file(path, what, hint)
    model = None if os.path.getsize(path) == 0 or _is_checkpoint(path) else _load_onnx_header(path)
    if model is None:
        raise UserError(f"{what} {path} is not an ONNX model (it is {describe(path)}): {hint}.")
    return model


def require_engine(path: str) -> str:
    """Return ``path`` unless it is plainly not a TensorRT engine (missing, text, a checkpoint or an ONNX model).

    Engines have no common signature across TensorRT versions and TensorRT-RTX, so only the other
    kinds are recognised here; the runtime checks the rest.
    """
    hint = "pass the .engine file written by trt/build_engine.py"
    require_file(path, "TensorRT engine", hint)
    if not _is_checkpoint(path) and os.path.getsize(path) and _load_onnx_header(path) is not None:
        raise UserError(f"TensorRT engine {path} is an ONNX model, not an engine: build one from it with "
                        "trt/build_engine.py and pass the .engine file.")
    kind = describe(path)
    if kind in ("an empty file", "a text file") or _is_checkpoint(path):
        raise UserError(f"TensorRT engine {path} is not an engine (it is {kind}): {hint}.")
    return path


def require_dataset(root: str, splits: Iterable[str]) -> str:
    """Return ``root`` if it is a folder holding each of ``splits`` (``train``, ``val``) as a folder."""
    if not os.path.isdir(root):
        raise UserError(f"dataset folder {root} does not exist: pass --data-path pointing at a folder with train/ and "
                        "val/ (e.g. datasets/digits).")
    for split in splits:
        if not os.path.isdir(os.path.join(root, split)):
            raise UserError(f"dataset folder {root} has no {split}/ folder: pass --data-path pointing at a folder with "
                            f"train/ and val/, each holding one sub-folder of images per class.")
    return root


def require_modelopt_onnx(purpose: str) -> None:
    """Import ModelOpt's ONNX tools now, so a missing optional package is one sentence, not a traceback.

    ``modelopt.onnx`` needs the packages of ModelOpt's ``[onnx]`` extra (``lief``, ``onnx_graphsurgeon``...),
    which requirements.txt lists by hand; without one it raises an ImportError from deep inside ModelOpt.
    """
    try:
        importlib.import_module("modelopt.onnx.autocast")
    except ImportError as err:
        missing = _missing_module(err)
        raise UserError(f"{purpose} needs ModelOpt's ONNX extras, and the Python module {missing!r} is not installed: "
                        "pip install -r requirements.txt (it lists them, with onnxruntime-gpu: uninstall a plain "
                        "onnxruntime first).") from None


def _missing_module(err: ImportError) -> str:
    """The module an ImportError is about, following ModelOpt's re-raise ("No module named 'lief' Please install ...")."""
    seen = err
    while seen is not None:
        if isinstance(seen, ModuleNotFoundError) and seen.name:
            return seen.name.split(".")[0]
        seen = seen.__cause__ or seen.__context__
    text = str(err)
    if "No module named '" in text:
        return text.split("No module named '", 1)[1].split("'", 1)[0].split(".")[0]
    return text.splitlines()[0] if text else "unknown"
