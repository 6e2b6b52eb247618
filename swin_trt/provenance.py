"""What made a report's figures: the code (commit), the machine (CPU, GPU and driver), the packages, the config and
the checkpoint.

Versions come from the installed packages' metadata (``importlib.metadata``), never from importing torch, ONNX
Runtime or TensorRT just to read ``__version__``; the GPU and its driver from ``nvidia-smi``.
"""
from __future__ import annotations

import datetime
import functools
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
from typing import Any, Dict, List, Optional, Sequence

from swin_trt.trt.metadata import file_sha256

NOT_GIT = "not a git checkout"


# module -> the name a reader knows it by
PACKAGES = {"torch": "torch", "timm": "timm", "onnxruntime": "ONNX Runtime", "modelopt": "ModelOpt"}


# the TensorRT-family modules that can build this project's engines (swin_trt/trt/backend.py)
TENSORRT_MODULES = ("tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings")


def _run(command: Sequence[str]) -> Optional[str]:
    """stdout of ``command``, or None when it cannot run or fails."""
    try:
        proc = subprocess.run(list(command), capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_commit(path: str) -> Dict[str, Any]:
    """``{"commit": sha or "not a git checkout", "uncommitted_changes": bool or None}`` of the checkout at ``path``."""
    if shutil.which("git") is None:
        return {"commit": NOT_GIT, "uncommitted_changes": None}
    commit = _run(["git", "-C", path, "rev-parse", "HEAD"])
    if not commit:
        return {"commit": NOT_GIT, "uncommitted_changes": None}
    status = _run(["git", "-C", path, "status", "--porcelain", "--untracked-files=no"])
    return {"commit": commit, "uncommitted_changes": bool(status) if status is not None else None}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def gpus() -> List[Dict[str, str]]:
    """``[{"name", "driver", "memory"}]`` per NVIDIA GPU that ``nvidia-smi`` lists; empty without one."""
    if shutil.which("nvidia-smi") is None:
        return []
    out = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    rows = []
    for line in (out or "").splitlines():
        name, driver, memory = ([part.strip() for part in line.split(",")] + ["", "", ""])[:3]
        rows.append({"name": name, "driver": driver, "memory": memory})
    return rows


def machine() -> Dict[str, Any]:
    """CPU, cores, operating system, Python, GPUs."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "os": platform.platform(terse=True),
            "python": platform.python_version(), "gpus": gpus()}


@functools.lru_cache(maxsize=1)
def _distributions() -> Dict[str, List[str]]:
    return importlib.metadata.packages_distributions()  # every installed distribution's files: read once


def module_version(module: str) -> Optional[str]:
    """``1.31.1 (onnxruntime-gpu)``: the version of the distribution that installs ``module`` (its name added when
    it differs from the module's), "installed, version unknown" for a module no distribution records, None when
    absent."""
    dists = _distributions().get(module) or []
    for dist in dists:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        return version if dist.replace("-", "_") == module else f"{version} ({dist})"
    return "installed, version unknown" if importlib.util.find_spec(module) is not None else None


def versions() -> Dict[str, str]:
    """``{reader's name: version}`` of torch, timm, ONNX Runtime, ModelOpt and every TensorRT-family builder here."""
    out = {label: module_version(module) or "not installed" for module, label in PACKAGES.items()}
    builders = [f"{module} {version}" for module in TENSORRT_MODULES if (version := module_version(module))]
    out["TensorRT builder"] = ", ".join(builders) or "not installed"
    return out


def file_record(path: Optional[str]) -> Optional[Dict[str, str]]:
    """``{"path", "sha256"}`` of a file, ``{"path", "sha256": "missing"}`` when it is gone, None without a path."""
    if not path:
        return None
    return {"path": path, "sha256": file_sha256(path) if os.path.isfile(path) else "missing"}


def weights_record(reference: Optional[str]) -> Optional[Dict[str, Any]]:
    """Where the weights came from (models/weight_source.py: the path or Hub id, its revision, each weight file's
    SHA-256), or :func:`file_record` of a reference that no longer resolves; None without one."""
    if not reference:
        return None
    from swin_trt.errors import UserError
    from swin_trt.models.weight_source import resolve

    try:
        return resolve(reference).describe()
    except UserError:
        return file_record(reference)


def provenance(cfg_file: Optional[str] = None, checkpoint: Optional[str] = None, code_dir: Optional[str] = None,
               model: Optional[str] = None) -> Dict[str, Any]:
    """Everything :func:`format_provenance` prints, as a dict for ``report.json``.

    Args:
        cfg_file: the config the figures were made with.
        checkpoint: the weights they were made from (any reference models/weight_source.py reads).
        code_dir: a folder of the checkout (default: this package's).
        model: ``MODEL.NAME``.
    """
    code_dir = code_dir or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = file_record(cfg_file)
    if config is not None and model:
        config["model"] = model
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **git_commit(code_dir), "machine": machine(), "versions": versions(), "config": config,
            "checkpoint": weights_record(checkpoint)}


def describe_machine(info: Dict[str, Any]) -> str:
    """``Intel(R) Xeon(R) Processor (2 cores); GPU: NVIDIA H200 (driver 570.124.06)`` or ``...; no NVIDIA GPU``."""
    gpu_list = info.get("gpus") or []
    names = sorted({f"{g['name']} (driver {g['driver']})" for g in gpu_list})
    count = f"{len(gpu_list)}× " if len(gpu_list) > 1 and len(names) == 1 else ""
    gpu = f"GPU: {count}{', '.join(names)}" if names else "no NVIDIA GPU"
    return f"{info.get('cpu', 'unknown CPU')} ({info.get('cores')} cores); {gpu}"


def describe_weights(record: Dict[str, Any]) -> str:
    """``hf:microsoft/swin-tiny... (transformers folder, revision 0123abc; model.safetensors SHA-256 ...)`` or
    ``path (SHA-256 ...)`` for a record of :func:`weights_record` (or an older report's file record)."""
    if "weights" not in record:
        return f"{record['path']} (SHA-256 {record['sha256']})"
    from swin_trt.models.weight_source import KINDS

    head = [KINDS.get(record.get("kind"), record.get("kind", ""))]
    if record.get("revision"):
        head.append(f"revision {record['revision']}")
    files = "; ".join(f"{os.path.basename(w['path'])} SHA-256 {w['sha256']}" for w in record["weights"])
    return f"{record['reference']} ({', '.join(head)}; {files})"


def format_provenance(info: Dict[str, Any]) -> str:
    """A two-column markdown table of :func:`provenance`."""
    commit = info.get("commit", NOT_GIT)
    if info.get("uncommitted_changes"):
        commit += " with uncommitted changes"
    machine_info = info.get("machine") or {}
    rows = [("commit", commit), ("date", info.get("date", "")), ("machine", describe_machine(machine_info)),
            ("system", f"{machine_info.get('os', '')}, Python {machine_info.get('python', '')}")]
    rows += [(name, version) for name, version in (info.get("versions") or {}).items()]
    config = info.get("config")
    if config:
        extra = f", {config['model']}" if config.get("model") else ""
        rows.append(("config", f"{config['path']}{extra} (SHA-256 {config['sha256']})"))
    weights = info.get("checkpoint")
    if weights:
        rows.append(("checkpoint", describe_weights(weights)))
    return "\n".join(["| | |", "|---|---|"] + [f"| {name} | {value} |" for name, value in rows])
