"""docs/python-api.md: its examples, run as they are written, in one fresh folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).parents[1] / "docs" / "python-api.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_page_has_an_example_for_each_task() -> None:
    code = "\n".join(blocks())
    for call in ("generate_dataset(", "fit(", "parse_spec(", "run_worker(", "load_local(", "save_figure(",
                 "build_report("):
        assert call in code, call


@pytest.mark.slow
def test_the_python_api_examples_run_as_written(tmp_path: Path) -> None:
    script = tmp_path / "examples.py"
    script.write_text("\n\n".join(blocks()))
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wandb"), "WANDB_SILENT": "true"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "96 (32, 64)" in out and "epoch 1: loss" in out and "copy the first frame:" in out
    assert "tfr" in out and "api-sweep 2 runs/api-sweep sqlite:///" in out and "2 complete;" in out
    assert "method='bohb'" in out and "wandb.mode='cloud'" in out
    assert {"best.ckpt", "metrics.csv"} <= {p.name for p in (tmp_path / "runs" / "api").iterdir()}
    assert (tmp_path / "figures" / "psnr_per_frame.png").stat().st_size > 0
    report = (tmp_path / "report.html").read_text()
    assert report.lower().startswith("<!doctype html>") and "api-sweep" in report and "no spec.yaml" not in report
