"""The package's layout: no import circle between the modules of swin_trt/, counting imports inside functions."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

from conftest import REPO

PACKAGE = REPO / "swin_trt"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> Dict[str, Set[str]]:
    """Module -> the swin_trt modules it imports anywhere in its source (a package import counts as its __init__)."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py") if "python_backend" not in p.parts}
    graph: Dict[str, Set[str]] = {}
    for name, path in files.items():
        targets: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                candidates = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            targets.update(c for c in candidates if c in files and c != name)
        graph[name] = targets
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One import circle as a list of modules (first repeated last), or [] when there is none."""
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_find_cycle_finds_a_circle_through_a_function_level_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_import_circle_in_the_package():
    graph = import_graph()
    assert "swin_trt.trt.engine_builder" in graph["swin_trt.trt.network_plan"]  # the walk sees real edges
    assert find_cycle(graph) == []
