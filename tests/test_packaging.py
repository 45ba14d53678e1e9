"""One importable name: ``cvae``. The folders core/, sweeps/ and analysis/ are ``cvae.core``, ``cvae.sweeps`` and
``cvae.analysis``; the bare names stay free (``sweeps`` is what W&B's local sweep controller imports)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "cvae", "core", "sweeps", "analysis")


def test_installed_package_resolves_to_the_repository_and_leaves_bare_names_free(tmp_path: Path) -> None:
    # From a neutral folder, so the repository root is not on sys.path: what an installed user sees.
    code = (
        "import importlib.util, json, cvae.core, cvae.sweeps, cvae.analysis\n"
        "def origin(name):\n"
        "    s = importlib.util.find_spec(name)\n"
        "    return s.origin if s else None\n"
        "print(json.dumps({'pkg': {m.__name__: m.__file__ for m in (cvae.core, cvae.sweeps, cvae.analysis)},\n"
        "                  'bare': {n: origin(n) for n in ('core', 'sweeps', 'analysis')}}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    found = json.loads(out.stdout)
    assert found["pkg"] == {f"cvae.{name}": str(ROOT / name / "__init__.py") for name in ("core", "sweeps", "analysis")}
    for name, origin in found["bare"].items():
        # Not found at all, or some other project's package (W&B's `sweeps` where wandb[sweeps] is installed).
        assert origin is None or not Path(origin).resolve().is_relative_to(ROOT), (name, origin)


def test_wheel_holds_only_cvae(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")} == {"cvae"}
    for module in ("cvae/core/model.py", "cvae/sweeps/runner.py", "cvae/analysis/figures.py",
                   "cvae/sweeps/configs/quickstart.yaml"):
        assert module in names
