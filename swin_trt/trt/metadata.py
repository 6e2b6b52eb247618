"""The small JSON written beside every engine, and the checks made against it before loading.

A serialized engine only deserializes with the TensorRT version that built it
and (full TensorRT) on the GPU architecture it was built for; when either
differs the runtime logs an error and returns None. The JSON lets the loader
say which of the two it is, in one sentence, before trying.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, Optional

from swin_trt.errors import UserError
from swin_trt.files import write_json

REBUILD = "rebuild it on this machine with trt/build_engine.py"


def metadata_path(engine_file: str) -> str:
    """``model.engine`` -> ``model.engine.json``."""
    return engine_file + ".json"


def file_sha256(path: str, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def write_metadata(engine_file: str, data: Dict[str, Any]) -> str:
    """Write ``data`` beside ``engine_file`` (atomically); returns the JSON path."""
    path = metadata_path(engine_file)
    write_json(path, data)
    return path


def read_metadata(engine_file: str) -> Optional[Dict[str, Any]]:
    """The JSON beside ``engine_file``, or None when there is none (an engine built elsewhere)."""
    path = metadata_path(engine_file)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise UserError(f"engine metadata {path} is not readable JSON ({err}): delete it or rebuild the engine.") from None


def check_compatible(engine_file: str, meta: Optional[Dict[str, Any]], backend_name: str, version: str,
                     device: Optional[Dict[str, str]]) -> None:
    """Raise a :class:`UserError` when ``meta`` says the engine cannot load here.

    Args:
        engine_file: the engine (for the message).
        meta: its metadata (None: nothing to check).
        backend_name: ``tensorrt`` or ``tensorrt_rtx`` as loaded here.
        version: the loaded module's version.
        device: ``{"name", "compute_capability"}`` of the GPU here (None: no GPU).
    """
    if not meta:
        return
    built_with = f"{meta.get('backend')} {meta.get('version')}"
    if meta.get("backend") != backend_name:
        raise UserError(f"engine {engine_file} was built with {built_with} but {backend_name} {version} is loaded: "
                        f"pass --backend {meta.get('backend')} if it is installed, or {REBUILD}.")
    if meta.get("version") != version:
        raise UserError(f"engine {engine_file} was built with {built_with} and this machine has {backend_name} {version} "
                        f"(engines load only with the exact version that built them): {REBUILD}.")
    built_gpu = meta.get("gpu") or {}
    # full TensorRT engines are tied to the compute capability they were built on; TensorRT-RTX
    # ahead-of-time engines target a list of architectures and say so at load time themselves
    if backend_name == "tensorrt" and device and built_gpu.get("compute_capability") \
            and built_gpu["compute_capability"] != device["compute_capability"]:
        raise UserError(f"engine {engine_file} was built on {built_gpu.get('name')} (compute capability "
                        f"{built_gpu['compute_capability']}) and this GPU is {device['name']} (compute capability "
                        f"{device['compute_capability']}): {REBUILD}.")
