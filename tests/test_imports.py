"""The package's import graph: no cycles, and the layers the records schema sets up.

Every ``import`` counts, at module level or inside a function: a lazy import still ties two modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"cvae": "cvae", "cvae.core": "core", "cvae.sweeps": "sweeps", "cvae.analysis": "analysis"}


def modules() -> dict[str, Path]:
    out = {}
    for package, folder in PACKAGES.items():
        for path in sorted((ROOT / folder).glob("*.py")):
            out[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return out


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps |= {node.module} & known.keys()
                deps |= {f"{node.module}.{a.name}" for a in node.names} & known.keys()
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names} & known.keys()
        graph[name] = deps - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert {"cvae.schema", "cvae.core.trainer", "cvae.sweeps.queue", "cvae.analysis.load"} <= graph.keys()
    assert cycles(graph) == []


def test_layers() -> None:
    graph = import_graph()
    # The records format and the offline reader depend on nothing of ours.
    assert graph["cvae.schema"] == set()
    assert graph["cvae.wandb_offline"] == set()
    for name, deps in graph.items():
        if name.startswith("cvae.analysis"):
            # Analysis reads records (the schema, the offline reader), never the sweep runtime.
            assert not {d for d in deps if d.startswith("cvae.sweeps")}, name
        if name.startswith("cvae.core"):
            assert not {d for d in deps if d.startswith(("cvae.sweeps", "cvae.analysis"))}, name
