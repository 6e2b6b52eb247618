"""Contracts with published APIs: the code fails these tests when it drifts from what the pinned packages offer.

- Every third-party ``from X import Y`` (lazy ones inside functions too) and ``import X.Y`` of the project's own
  code resolves in the installed packages, and those packages are the versions requirements*.txt pins.
- Every TensorRT attribute trt/ uses exists in TensorRT 10.13's published Python API (the ``tensorrt-stubs``
  ``.pyi`` files) and in TensorRT-RTX's bindings, or its use is guarded: by ``hasattr``/``getattr`` (a feature
  one of the two lacks), by ``backend.is_rtx`` (TensorRT-RTX only) or by its ``else`` (TensorRT only).

Module attributes are found exactly: trt/ names the TensorRT-family module ``trt`` wherever it uses it, so every
``trt.X`` and ``trt.X.Y`` is checked. Members of TensorRT objects (``config.set_flag``) cannot be typed statically,
so :data:`OBJECT_MEMBERS` declares which class each name is used on; a test fails when trt/ uses a name that some
TensorRT class has but the table does not declare (or :data:`NOT_TENSORRT` does not explain).
"""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

from tensorrt_api import REPO, StubAPI, load_stubs, rtx_has, stubs_dir

rtx = pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX wheels (tensorrt-rtx-cu13-*) not installed")

TRT_CODE = sorted((REPO / "swin_trt" / "trt").rglob("*.py")) + sorted((REPO / "trt").rglob("*.py"))

# member name -> the TensorRT classes trt/ uses it on (names as in TensorRT 10.13 and TensorRT-RTX)
OBJECT_MEMBERS: Dict[str, Tuple[str, ...]] = {
    # build: trt/build_engine.py (and the parsed network read by trt/inspect_engine.py)
    "create_builder_config": ("Builder",), "create_network": ("Builder",),
    "create_optimization_profile": ("Builder",), "build_serialized_network": ("Builder",),
    "set_memory_pool_limit": ("IBuilderConfig",), "builder_optimization_level": ("IBuilderConfig",),
    "profiling_verbosity": ("IBuilderConfig",), "set_flag": ("IBuilderConfig",), "clear_flag": ("IBuilderConfig",),
    "get_flag": ("IBuilderConfig",), "create_timing_cache": ("IBuilderConfig",), "set_timing_cache": ("IBuilderConfig",),
    "get_timing_cache": ("IBuilderConfig",), "add_optimization_profile": ("IBuilderConfig",),
    "num_compute_capabilities": ("IBuilderConfig",), "get_compute_capability": ("IBuilderConfig",),
    "serialize": ("ITimingCache",), "set_shape": ("IOptimizationProfile",), "nbytes": ("IHostMemory",),
    "parse": ("OnnxParser",), "parse_from_file": ("OnnxParser",), "num_errors": ("OnnxParser",),
    "get_error": ("OnnxParser",), "node": ("ParserError",), "node_name": ("ParserError",),
    "node_operator": ("ParserError",), "desc": ("ParserError",), "code": ("ParserError",),
    "num_inputs": ("INetworkDefinition", "ILayer"), "num_outputs": ("INetworkDefinition", "ILayer"),
    "get_input": ("INetworkDefinition", "ILayer"), "get_output": ("INetworkDefinition", "ILayer"),
    "num_layers": ("INetworkDefinition", "ICudaEngine"), "get_layer": ("INetworkDefinition",),
    "type": ("ILayer",), "name": ("ITensor", "ILayer", "DataType", "LayerType", "TensorIOMode"),
    "shape": ("ITensor",), "dtype": ("ITensor",), "is_shape_tensor": ("ITensor",), "min_severity": ("Logger",),
    # run: trt/engine.py, trt/engine_inspector.py
    "deserialize_cuda_engine": ("Runtime",), "get_engine_validity": ("Runtime",),
    "num_io_tensors": ("ICudaEngine",), "get_tensor_name": ("ICudaEngine",), "get_tensor_mode": ("ICudaEngine",),
    "get_tensor_dtype": ("ICudaEngine",), "get_tensor_profile_shape": ("ICudaEngine",),
    "get_tensor_shape": ("ICudaEngine", "IExecutionContext"), "create_execution_context": ("ICudaEngine",),
    "create_runtime_config": ("ICudaEngine",), "device_memory_size_v2": ("ICudaEngine",),
    "num_optimization_profiles": ("ICudaEngine",), "create_engine_inspector": ("ICudaEngine",),
    "set_execution_context_allocation_strategy": ("IRuntimeConfig",),
    "set_device_memory": ("IExecutionContext",), "set_optimization_profile_async": ("IExecutionContext",),
    "set_input_shape": ("IExecutionContext",), "set_tensor_address": ("IExecutionContext",),
    "execute_async_v3": ("IExecutionContext",), "is_stream_capturable": ("IExecutionContext",),
    "get_engine_information": ("EngineInspector",),
}

# names some TensorRT class also has, used in trt/ only on other objects: onnx.TensorProto types, Python lists, dicts,
# files and strings, torch tensors, numpy, BatchProfile fields, argparse, and our own EngineBuilder.builder,
# Backend.logger and TRTEngine.engine
NOT_TENSORRT: Set[str] = {
    "FLOAT", "FLOAT16", "INT4", "INT8", "UINT8", "append", "update", "pop", "read", "write", "reset", "start", "size",
    "clone", "numpy", "min", "opt", "max", "mode", "builder", "logger", "engine",
}


def parents(tree: ast.AST) -> Dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def guard_of(node: ast.AST, up: Dict[ast.AST, ast.AST], member: str) -> Optional[str]:
    """How a use of ``member`` at ``node`` is guarded: ``feature`` (hasattr/getattr), ``rtx``, ``trt`` or None."""
    child = node
    while child in up:
        parent = up[child]
        if isinstance(parent, ast.Call) and isinstance(parent.func, ast.Name) \
                and parent.func.id in ("hasattr", "getattr") and child is not parent.func:
            return "feature"
        tests = []
        if isinstance(parent, (ast.If, ast.IfExp)) and child is not parent.test:
            in_body = child in (parent.body if isinstance(parent.body, list) else [parent.body])
            tests.append((parent.test, in_body))
        if isinstance(parent, ast.BoolOp) and isinstance(parent.op, ast.And):
            earlier = parent.values[:parent.values.index(child)] if child in parent.values else []
            tests.extend((value, True) for value in earlier)
        for test, in_body in tests:
            source = ast.unparse(test)
            if "hasattr(" in source and f"'{member}'" in source:
                return "feature"
            if "is_rtx" in source:
                negated = source.startswith("not ")
                return "rtx" if in_body != negated else "trt"
        child = parent
    return None


def trt_module_uses(path: Path) -> Iterator[Tuple[int, Optional[str], str, Optional[str]]]:
    """``(line, class or None, member, guard)`` for every ``trt.X`` / ``trt.X.Y`` / ``getattr(trt.X, "Y")``."""
    tree = ast.parse(path.read_text(), str(path))
    up = parents(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "trt":
            yield node.lineno, None, node.attr, guard_of(node, up, node.attr)
            outer = up.get(node)
            if isinstance(outer, ast.Attribute) and outer.value is node:
                yield outer.lineno, node.attr, outer.attr, guard_of(outer, up, outer.attr)
            if isinstance(outer, ast.Call) and isinstance(outer.func, ast.Name) and outer.func.id in ("getattr", "hasattr") \
                    and outer.args[0] is node and isinstance(outer.args[1], ast.Constant):
                yield outer.lineno, node.attr, outer.args[1].value, "feature"


def member_uses(path: Path) -> Iterator[Tuple[int, str, Optional[str]]]:
    """``(line, name, guard)`` for every ``obj.name`` and ``getattr/hasattr(obj, "name")`` not on ``trt`` itself."""
    tree = ast.parse(path.read_text(), str(path))
    up = parents(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and not (isinstance(node.value, ast.Name) and node.value.id == "trt") \
                and not (isinstance(node.value, ast.Attribute) and isinstance(node.value.value, ast.Name)
                         and node.value.value.id == "trt"):
            yield node.lineno, node.attr, guard_of(node, up, node.attr)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr") \
                and len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str) \
                and not ast.unparse(node.args[0]).startswith("trt."):
            yield node.lineno, node.args[1].value, "feature"


def verdict(stubs: StubAPI, cls: Optional[str], member: str, guard: Optional[str]) -> Optional[str]:
    """None when the use is allowed, else what is wrong."""
    in_stubs = member in stubs.module_names if cls is None else stubs.has(cls, member)
    in_rtx = rtx_has(rtx, cls, member)
    what = f"{cls + '.' if cls else 'tensorrt.'}{member}"
    if in_stubs and in_rtx:
        return None
    if not in_stubs and not in_rtx:
        return f"{what} exists in neither TensorRT 10.13 nor TensorRT-RTX {rtx.__version__}"
    missing = "TensorRT 10.13" if not in_stubs else f"TensorRT-RTX {rtx.__version__}"
    allowed = {"feature": True, "rtx": in_rtx, "trt": in_stubs}.get(guard or "", False)
    return None if allowed else f"{what} is missing in {missing} and its use is not guarded for that"


@pytest.fixture(scope="module")
def stubs() -> StubAPI:
    return load_stubs()


def test_tensorrt_stubs_are_the_pinned_tensorrt_10_13_release(stubs):
    init = (stubs_dir() / "tensorrt" / "__init__.pyi").read_text()
    assert re.search(r"^__version__: str = '10\.13\.", init, re.M), "the stubs do not describe TensorRT 10.13"
    assert {"Builder", "IBuilderConfig", "ICudaEngine", "IExecutionContext"} <= set(stubs.classes)


def test_every_tensorrt_module_attribute_exists_in_tensorrt_10_13_and_tensorrt_rtx(stubs):
    problems, seen = [], 0
    for path in TRT_CODE:
        for line, cls, member, guard in trt_module_uses(path):
            seen += 1
            problem = verdict(stubs, cls, member, guard)
            if problem:
                problems.append(f"{path.relative_to(REPO)}:{line}: {problem}")
    assert seen > 20, "found almost no trt.X uses: does trt/ still call the TensorRT module `trt`?"
    assert not problems, "\n".join(problems)


def test_every_tensorrt_object_member_is_declared_and_exists_in_both_apis_or_is_guarded(stubs):
    tensorrt_names = {m for members in stubs.classes.values() for m in members}
    tensorrt_names |= {m for name in dir(rtx) if isinstance(getattr(rtx, name), type)
                       for m in vars(getattr(rtx, name))}
    tensorrt_names = {n for n in tensorrt_names if not n.startswith("_")} - set(dir(object))
    problems, undeclared = [], set()
    for path in TRT_CODE:
        for line, member, guard in member_uses(path):
            if member not in OBJECT_MEMBERS:
                if member in tensorrt_names and member not in NOT_TENSORRT:
                    undeclared.add(f"{path.relative_to(REPO)}:{line}: {member}")
                continue
            for cls in OBJECT_MEMBERS[member]:
                problem = verdict(stubs, cls, member, guard)
                if problem:
                    problems.append(f"{path.relative_to(REPO)}:{line}: {problem}")
    assert not undeclared, ("trt/ uses names that TensorRT classes have but OBJECT_MEMBERS does not declare (add them "
                            "with their class, or to NOT_TENSORRT if used on other objects):\n" + "\n".join(sorted(undeclared)))
    assert not problems, "\n".join(problems)


def test_declared_members_are_still_used(stubs):
    used = {member for path in TRT_CODE for _, member, _ in member_uses(path)}
    assert not set(OBJECT_MEMBERS) - used, f"declared but unused: {sorted(set(OBJECT_MEMBERS) - used)}"


def test_guard_detection_tells_feature_tensorrt_rtx_and_tensorrt_branches_apart():
    source = ("if hasattr(c, 'x'):\n    c.x()\nif backend.is_rtx:\n    c.y()\nelse:\n    c.z()\n"
              "c.w()\nv = getattr(c, 'v', None)\nok = hasattr(c, 'u') and c.u()\n")
    tree = ast.parse(source)
    up = parents(tree)
    guards = {n.attr: guard_of(n, up, n.attr) for n in ast.walk(tree)
              if isinstance(n, ast.Attribute) and n.attr in "xyzwu"}
    assert guards == {"x": "feature", "y": "rtx", "z": "trt", "w": None, "u": "feature"}


def test_tensorrt_data_type_names_the_code_maps_are_members_of_both_apis(stubs):
    from swin_trt.trt.backend import TORCH_DTYPES
    from swin_trt.trt.engine_inspector import DTYPE_WORDS

    for name in set(TORCH_DTYPES) | set(DTYPE_WORDS.values()):
        assert stubs.has("DataType", name) and name in rtx.DataType.__members__, name


# --- third-party imports ---------------------------------------------------------------------------------------------

# Python-backend model sources: they run in the Triton server's own environment (requirements-triton.txt), not here
SERVER_SIDE = REPO / "swin_trt" / "serving" / "python_backend"


def project_files() -> List[Path]:
    """The project's Python files that run in its own environment."""
    skip = {".venv", "venv", ".git", "output", "weights", "results", "datasets"}
    return sorted(p for p in REPO.rglob("*.py") if not skip & set(p.relative_to(REPO).parts)
                  and (p.parent != SERVER_SIDE or p.name == "image_preprocessing.py"))


def third_party_imports(files: Optional[List[Path]] = None) -> Dict[str, Set[str]]:
    """Module -> names imported from it (``""`` for a plain ``import module``) over the project's own code."""
    local = {p.stem for p in REPO.glob("*.py")} | {p.name for p in REPO.iterdir() if p.is_dir()}
    found: Dict[str, Set[str]] = {}
    for path in project_files() if files is None else files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                pairs = [(node.module, alias.name) for alias in node.names]
            elif isinstance(node, ast.Import):
                pairs = [(alias.name, "") for alias in node.names]
            else:
                continue
            for module, name in pairs:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in local or (path.parent / f"{top}.py").exists():
                    continue
                found.setdefault(module, set()).add(name)
    return found


RESOLVE = r'''
import importlib, json, sys, warnings
warnings.simplefilter("ignore")
failures = []
for module, names in json.loads(sys.argv[1]).items():
    try:
        mod = importlib.import_module(module)
    except Exception as err:
        failures.append(f"import {module}: {type(err).__name__}: {err}")
        continue
    for name in names:
        if name and not hasattr(mod, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except Exception as err:
                failures.append(f"from {module} import {name}: {type(err).__name__}: {err}")
print(json.dumps(failures))
'''


def test_every_third_party_import_of_the_project_resolves_in_the_installed_packages():
    imports = third_party_imports()
    assert "polygraphy.backend.common" in imports and "modelopt.onnx.autocast" in imports  # lazy imports are seen
    # a fresh interpreter: importing ModelOpt and polygraphy must not leak into the other tests
    proc = subprocess.run([sys.executable, "-c", RESOLVE, json.dumps({m: sorted(n) for m, n in imports.items()})],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    failures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not failures, "\n".join(failures)


def pins(files: Tuple[str, ...] = ("requirements.txt", "requirements-test.txt")) -> Dict[str, str]:
    """Distribution name (normalised) -> pinned version, over ``files`` (the project environment's by default)."""
    found = {}
    for name in files:
        for line in (REPO / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if "==" in line:
                dist, version = line.split("==", 1)
                found[re.sub(r"[-_.]+", "-", dist.split("[")[0]).lower()] = version.strip()
    return found


def test_every_third_party_package_the_code_imports_is_pinned_and_installed_at_its_pin():
    import importlib.metadata

    distributions = importlib.metadata.packages_distributions()
    pinned = pins()
    problems = []
    for top in sorted({module.split(".")[0] for module in third_party_imports()}):
        dists = [re.sub(r"[-_.]+", "-", d).lower() for d in distributions.get(top, [])]
        matches = [d for d in dists if d in pinned]
        if not matches:
            problems.append(f"{top}: from {dists or 'no installed distribution'}, none pinned in requirements*.txt")
            continue
        installed = importlib.metadata.version(matches[0])
        if installed != pinned[matches[0]]:
            problems.append(f"{top}: {matches[0]} {installed} installed, {pinned[matches[0]]} pinned")
    assert not problems, "\n".join(problems)


# Python-backend models: what they import resolves in the server's environment, at the pins of requirements-triton.txt
SERVER_PINS = r'''
import importlib.metadata, json, re, sys
distributions = importlib.metadata.packages_distributions()
found = {}
for top in json.loads(sys.argv[1]):
    for dist in distributions.get(top, []):
        found.setdefault(top, []).append([re.sub(r"[-_.]+", "-", dist).lower(), importlib.metadata.version(dist)])
print(json.dumps(found))
'''


def test_python_backend_models_import_what_the_server_environment_has_at_its_pins(triton_server_env):
    files = sorted(SERVER_SIDE.glob("*_model.py"))
    imports = third_party_imports(files)
    assert {"numpy", "onnxruntime", "triton_python_backend_utils"} <= set(imports)
    # the stub puts the backend's folder (triton_python_backend_utils) and the model's folder on sys.path
    backend = Path(triton_server_env.server_dir) / "backends" / "python"
    python = Path(triton_server_env.root) / "bin" / "python3"
    env = {"PYTHONPATH": f"{backend}:{SERVER_SIDE}", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([str(python), "-c", RESOLVE, json.dumps({m: sorted(n) for m, n in imports.items()})],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    failures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not failures, "\n".join(failures)
    tops = sorted({m.split(".")[0] for m in imports} - {"triton_python_backend_utils"})
    proc = subprocess.run([str(python), "-c", SERVER_PINS, json.dumps(tops)], capture_output=True, text=True,
                          timeout=300, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    installed = json.loads(proc.stdout.strip().splitlines()[-1])
    pinned = pins(("requirements-triton.txt",))
    for top in tops:
        matches = [(dist, version) for dist, version in installed.get(top, []) if dist in pinned]
        assert matches, f"{top}: not pinned in requirements-triton.txt ({installed.get(top)})"
        assert matches[0][1] == pinned[matches[0][0]], f"{top}: {matches[0]} installed, {pinned[matches[0][0]]} pinned"
