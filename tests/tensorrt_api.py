"""The published TensorRT Python APIs the contract tests compare the code with.

- TensorRT 10.13: PyPI ``tensorrt-stubs`` (``.pyi`` files only, pinned in
  requirements-stubs.txt). They are installed with ``pip install --no-deps
  --target .venv/tensorrt-stubs``: their dependency ``tensorrt`` cannot be
  installed here, and in site-packages their ``tensorrt/`` folder of ``.pyi``
  files would import as an empty ``tensorrt`` namespace package.
- TensorRT-RTX: the real bindings, ``tensorrt_rtx_bindings``.

The stubs are generated text that is not always valid Python (a parameter
without a default after defaulted ones), so they are read line by line: a
class is ``class Name`` at column 0, its members the ``def name(`` and
``name:``/``name =`` lines indented by four spaces.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib.metadata
import inspect
import os
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Set

REPO = Path(__file__).resolve().parents[1]
STUBS_PIN_FILE = REPO / "requirements-stubs.txt"
_CLASS = re.compile(r"^class (\w+)")
_MEMBER = re.compile(r"^    (?:def (\w+)\((.*)\)(?:\s*->[^()]*)?:\s*$|(\w+)\s*[:=])")


def stubs_dir() -> Path:
    """Where the stubs were installed: ``$TENSORRT_STUBS_DIR``, else ``<venv>/tensorrt-stubs``."""
    return Path(os.environ.get("TENSORRT_STUBS_DIR") or Path(sys.prefix) / "tensorrt-stubs")


def pinned_stubs_version() -> str:
    """The ``tensorrt-stubs==X`` version of requirements-stubs.txt."""
    for line in STUBS_PIN_FILE.read_text().splitlines():
        if line.strip().startswith("tensorrt-stubs=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"{STUBS_PIN_FILE} pins no tensorrt-stubs version")


@dataclasses.dataclass
class StubAPI:
    """TensorRT's Python API as the stubs publish it.

    Attributes:
        version: the stubs' distribution version (``10.13.0.35.1``).
        module_names: names ``import tensorrt`` exposes (its ``__all__`` and annotated globals).
        classes: class name -> member name -> parameter names after ``self`` of each overload
            (an empty list for attributes, properties and enum members).
    """

    version: str
    module_names: Set[str]
    classes: Dict[str, Dict[str, List[List[str]]]]

    def has(self, cls: str, member: str) -> bool:
        return member in self.classes.get(cls, {})


def _parameter_names(text: str) -> List[str]:
    names = []
    for part in re.split(r",(?![^\[]*\])", text):
        name = part.split(":")[0].split("=")[0].strip().lstrip("*")
        if name and name not in ("self", "/"):
            names.append(name)
    return names


def parse_stub_classes(text: str) -> Dict[str, Dict[str, List[List[str]]]]:
    """Class name -> member -> overload parameter lists, from a generated ``.pyi`` (see the module docstring)."""
    classes: Dict[str, Dict[str, List[List[str]]]] = {}
    current: Optional[str] = None
    for line in text.splitlines():
        match = _CLASS.match(line)
        if match:
            current = match.group(1)
            classes[current] = {}
            continue
        if line and not line.startswith(" "):
            current = None
        match = _MEMBER.match(line)
        if current and match:
            if match.group(1):
                classes[current].setdefault(match.group(1), []).append(_parameter_names(match.group(2)))
            else:
                classes[current].setdefault(match.group(3), [])
    return classes


def parse_stub_module_names(text: str) -> Set[str]:
    """Names of ``tensorrt/__init__.pyi``: its ``__all__`` plus the ``name: type`` globals."""
    names: Set[str] = set()
    for line in text.splitlines():
        if line.startswith("__all__"):
            names.update(ast.literal_eval(line.split("=", 1)[1].strip()))
        match = re.match(r"^(\w+)\s*:", line)
        if match:
            names.add(match.group(1))
    return names


def load_stubs() -> StubAPI:
    """The installed stubs; an AssertionError that says how to install them when they are missing or another version."""
    folder = stubs_dir()
    install = ("install them as the README's second command does: pip install --no-deps --target .venv/tensorrt-stubs "
               "-r requirements-stubs.txt (or point TENSORRT_STUBS_DIR at such a folder)")
    dists = list(importlib.metadata.distributions(path=[str(folder)]))
    versions = [d.version for d in dists if d.metadata["Name"] == "tensorrt-stubs"]
    assert versions, f"no tensorrt-stubs in {folder}: {install}"
    assert versions[0] == pinned_stubs_version(), \
        f"{folder} holds tensorrt-stubs {versions[0]}, requirements-stubs.txt pins {pinned_stubs_version()}: {install}"
    classes = parse_stub_classes((folder / "tensorrt_bindings" / "tensorrt.pyi").read_text())
    module_names = parse_stub_module_names((folder / "tensorrt" / "__init__.pyi").read_text()) | set(classes)
    return StubAPI(versions[0], module_names, classes)


def rtx_has(module, cls: Optional[str], member: str) -> bool:
    """Whether TensorRT-RTX's bindings have ``cls.member`` (``cls`` None: a module attribute)."""
    if cls is None:
        return hasattr(module, member)
    return hasattr(module, cls) and hasattr(getattr(module, cls), member)


def assert_mirrors_stub(stubs: StubAPI, fake: type, cls: str) -> None:
    """Every public method of the test double ``fake`` takes the parameters one overload of TensorRT's ``cls`` takes."""
    for name, method in inspect.getmembers(fake, inspect.isfunction):
        if name.startswith("_"):
            continue
        assert stubs.has(cls, name), f"{fake.__name__}.{name}: TensorRT 10.13 {cls} has no {name}"
        params = [p for p in inspect.signature(method).parameters if p != "self"]
        assert params in stubs.classes[cls][name], \
            f"{fake.__name__}.{name}{tuple(params)} matches no TensorRT 10.13 overload {stubs.classes[cls][name]}"
