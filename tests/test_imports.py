"""The package's import graph: no cycles, and the layers the records schema sets up.

Every ``import`` counts, at module level or inside a function: a lazy import still ties two modules. An import
for type checking only (under ``if TYPE_CHECKING:``) does not: it never runs.
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
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                       for n in ast.walk(block)}
        for node in (n for n in ast.walk(tree) if id(n) not in typing_only):
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


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for dep in graph.get(todo.pop(), set()) - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def test_the_spec_reads_into_the_search_space_which_never_imports_the_spec() -> None:
    graph = import_graph()
    spec, types, params, space = (f"cvae.sweeps.{m}" for m in ("spec", "spec_types", "params", "space"))
    assert {space, params} <= graph[spec]  # the check sees imports
    assert not {spec, params} & reachable(graph, space), graph[space]
    assert not {spec, params, space} & reachable(graph, types), graph[types]


def test_importing_the_packages_changes_no_global_state() -> None:
    """No environment variable, warning filter or library log level changes on import: a user who imports
    ``cvae.core`` or ``cvae.sweeps`` in a notebook keeps their own settings (the CLI sets its own)."""
    import subprocess
    import sys

    code = """
import logging, os, warnings
import numpy, optuna, torch, sqlalchemy, PIL  # third-party imports may set their own; ours come after
env, filters, level = dict(os.environ), list(warnings.filters), optuna.logging.get_verbosity()
import cvae.core, cvae.core.trainer, cvae.core.evaluate, cvae.core.tester
import cvae.sweeps.queue, cvae.sweeps.storage, cvae.sweeps.runner, cvae.sweeps.spec, cvae.sweeps.launcher
import cvae.analysis.load, cvae.analysis.importance
changed_env = {k for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k)}
assert not changed_env, changed_env
assert list(warnings.filters) == filters, [f for f in warnings.filters if f not in filters]
assert optuna.logging.get_verbosity() == level, optuna.logging.get_verbosity()
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_analysis_reads_records_without_torch_or_pil() -> None:
    """The records' CSV reader lives with the records format (``cvae.schema``): reading a sweep's runs loads
    neither torch nor PIL (``cvae analysis table`` on a laptop without them installed as fast as pandas)."""
    import subprocess
    import sys

    code = "import sys, cvae.analysis.load, cvae.schema\nassert not {'torch', 'PIL'} & set(sys.modules), sys.modules.keys()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]


def test_cvae_core_public_api_resolves_on_first_use_without_importing_torch_before() -> None:
    """``from cvae.core import fit`` works (docs/python-api.md); ``import cvae.core.config`` (the spec, the
    analysis) still pulls no torch."""
    import subprocess
    import sys

    code = ("import sys, cvae.core, cvae.core.config; assert 'torch' not in sys.modules, 'torch'; "
            "from cvae.core import fit, ExperimentConfig, EpochResult, RunResult, StopTraining, DatasetError, "
            "generate_dataset, __all__; assert 'torch' in sys.modules; "
            "assert set(__all__) <= set(dir(cvae.core)); print(fit.__module__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "cvae.core.trainer", done.stderr[-2000:]


def test_the_process_that_supervises_a_sweep_imports_no_torch(tiny_dataset, tmp_path) -> None:
    """`cvae sweep run` checks the dataset, opens the study and writes the closing report without torch: only
    its workers train, so it starts in under a second and holds no torch in memory while it watches them."""
    import subprocess
    import sys

    import yaml

    spec = {"name": "t", "method": "grid", "parameters": {"N_dim": {"values": [4]}}, "workers": 1,
            "base": {"DR": str(tiny_dataset)}, "output_dir": str(tmp_path / "out"),
            "storage": f"sqlite:///{tmp_path / 's.db'}", "wandb": {"mode": "disabled"}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "out").mkdir()
    code = ("import sys; from cvae.sweeps.spec import load_spec; from cvae.sweeps.launcher import final_report, prepare\n"
            f"spec = load_spec({str(tmp_path / 'spec.yaml')!r}); final_report(spec, prepare(spec))\n"
            "assert 'torch' not in sys.modules, [m for m in sys.modules if m.startswith('torch')][:5]")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sweep t: trials" in done.stdout, done.stdout  # the closing report was written
