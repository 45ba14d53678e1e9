"""A sweep file written as W&B's documentation writes one runs unchanged, and W&B users find their runs as
W&B makes them: one per trial, goal-aware summaries, the model as an artifact, the console, and the study
stops at ``metric.target``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from cvae.schema import WANDB_PATH
from cvae.wandb_offline import read_offline_runs_merged

pytestmark = pytest.mark.slow  # sweeps and agent runs end to end

# W&B's structure (program, command, a top-level project, metric with a target, parameters with `value`,
# `values` and a distribution, early_terminate, run_cap); every fixed training key is a `value` parameter,
# as a W&B file says it. Only the dataset path is this test's. The tiny model trains on half the clips and
# validates with the lab's one rollout (the evaluation's K samples and diagnostics are other tests' subject).
SMALL_MODEL = """\
  train_vi_len: {{value: 4}}
  batch_size: {{value: 4}}
  val_vi_len: {{value: 24}}
  F_dim: {{value: 16}}
  L_dim: {{value: 8}}
  N_dim: {{value: 4}}
  D_out_dim: {{value: 16}}
  num_workers: {{value: 1}}
  partial: {{value: 0.5}}
  val_samples: {{value: 1}}
  val_diagnostics: {{value: false}}
"""
WANDB_FILE = """\
program: train.py
command:
  - ${{env}}
  - cvae
  - train
  - ${{args}}
project: cvae-docs
name: "Docs sweep: target"
method: random
metric:
  name: val/psnr
  goal: maximize
  target: 0.0
parameters:
  kl_anneal_type:
    values: ["cyclical", "none"]
  lr:
    distribution: log_uniform_values
    min: 0.0005
    max: 0.002
  DR: {{value: {dataset}}}
  num_epoch: {{value: 2}}
""" + SMALL_MODEL + """\
early_terminate:
  type: hyperband
  min_iter: 1
run_cap: 4
"""


def test_a_wandb_docs_file_runs_and_stops_at_its_target(tiny_dataset: Path, tmp_path: Path) -> None:
    spec_path = tmp_path / "sweep.yaml"
    spec_path.write_text(WANDB_FILE.format(dataset=tiny_dataset))
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wb")}
    out = subprocess.run([sys.executable, "-m", "cvae", "sweep", "run", str(spec_path), "--no-live"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    # The free-text name became the study's slug; its program and command need no change.
    study = optuna.load_study(study_name="docs-sweep-target", storage=f"sqlite:///{tmp_path}/runs/docs-sweep-target/study.db")
    states = [t.state.name for t in study.get_trials()]
    # Any validated PSNR reaches a target of 0 dB: the first trial stops the study, the rest stay queued.
    assert states.count("COMPLETE") == 1 and states.count("WAITING") == 3, states
    assert "reached metric.target 0: the sweep stopped there" in out.stdout
    (trial,) = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    runs = read_offline_runs_merged(tmp_path / "wb").values()
    assert sorted(r.job_type for r in runs) == ["sweep-summary", "trial"]
    (run,) = [r for r in runs if r.job_type == "trial"]
    assert str(run.path) == trial.user_attrs[WANDB_PATH]
    # Tags are the categorical choice only, not the float drawn for lr.
    assert run.tags == (f"kl_anneal_type={trial.params['kl_anneal_type']}",)
    assert run.group == "docs-sweep-target" and run.job_type == "trial"
    scalars = [h["val/psnr"] for h in run.history if "val/psnr" in h]
    assert run.summary["val/psnr"] == {"max": max(scalars)} and trial.value == max(scalars)
    assert {tuple(sorted(a["aliases"])) for a in run.artifacts if a["type"] == "model"} <= {
        ("best",), ("latest",), ("best", "latest")}
    assert any("best" in a["aliases"] for a in run.artifacts if a["type"] == "model")
    assert any("epoch 0 (1 of 2)  loss" in line for line in run.console), run.console[:5]  # the worker's log lines


# One file for both runners: `wandb agent` needs every training key as a parameter, save_root included (its
# runs make their folders in it); `cvae sweep run` reads that constant save_root as its output_dir.
AGENT_FILE = """\
name: agent-and-sweep
command: [cvae, train, "${{args}}"]
method: grid
metric: {{name: val/psnr, goal: maximize}}
parameters:
  lr: {{values: [0.001, 0.002, 0.004]}}
  save_root: {{value: {runs}}}
  DR: {{value: {dataset}}}
  num_epoch: {{value: 1}}
""" + SMALL_MODEL + """\
  tfr: {{value: 0}}
  num_threads: {{value: 1}}
"""


def _agent_run(spec: dict, lr: float, run_id: str, cwd: Path, wandb_dir: Path) -> subprocess.Popen:
    """What `wandb agent` does for one run of the file: its parameters as `--key=value` (W&B's ${args}), the
    sweep and the run id in the environment, the file's command. Started, not waited for."""
    args = [f"--{key}={p['value'] if 'value' in p else lr}" for key, p in spec["parameters"].items()]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(wandb_dir), "WANDB_SWEEP_ID": "sw3agent",
           "WANDB_RUN_ID": run_id}
    return subprocess.Popen([sys.executable, "-m", "cvae", "train", *args, "--no-progress"], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_one_wandb_file_runs_under_wandb_agent_and_under_cvae_sweep_run(tiny_dataset: Path, tmp_path: Path) -> None:
    import yaml

    from cvae.schema import METRICS_CSV, read_csv

    path = tmp_path / "sweep.yaml"
    path.write_text(AGENT_FILE.format(runs="runs", dataset=tiny_dataset))
    spec = yaml.safe_load(path.read_text())
    runs = tmp_path / "runs"
    # Three agents at once (as on a machine running several): each run in its own folder all the same.
    agents = [_agent_run(spec, lr, f"agentrun{i}", tmp_path, tmp_path / "wb")
              for i, lr in enumerate((0.001, 0.002, 0.004))]
    for i, agent in enumerate(agents):
        _, err = agent.communicate(timeout=300)
        assert agent.returncode == 0, err[-3000:]
        assert f"run agentrun{i} writes in {Path('runs') / f'agentrun{i}'}" in err
    # Three runs, three folders named by their run ids, none overwriting another.
    folders = sorted(p.name for p in runs.iterdir())
    assert folders == ["agentrun0", "agentrun1", "agentrun2"]
    for i, lr in enumerate((0.001, 0.002, 0.004)):
        folder = runs / f"agentrun{i}"
        assert [int(r["epoch"]) for r in read_csv(folder / METRICS_CSV)] == [0]
        assert (folder / "best.ckpt").is_file() and (folder / "last.ckpt").is_file()
        assert yaml.safe_load((folder / "config.yaml").read_text())["lr"] == lr
    wb = read_offline_runs_merged(tmp_path / "wb")
    assert sorted(wb) == ["agentrun0", "agentrun1", "agentrun2"]
    assert {r.sweep_id for r in wb.values()} == {"sw3agent"}
    assert sorted(r.config["lr"] for r in wb.values()) == [0.001, 0.002, 0.004]
    agent_records = {p: (p / METRICS_CSV).read_bytes() for p in runs.iterdir()}

    # The same file under cvae sweep run: its trials' folders and study in save_root's folder, beside the
    # agent's runs, which stay as they were.
    env = {**os.environ, "WANDB_MODE": "disabled"}  # its W&B runs are the other tests' subject
    out = subprocess.run([sys.executable, "-m", "cvae", "sweep", "run", str(path), "--no-live"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    study = optuna.load_study(study_name="agent-and-sweep", storage=f"sqlite:///{runs}/study.db")
    assert sorted(t.params["lr"] for t in study.get_trials() if t.state.name == "COMPLETE") == [0.001, 0.002, 0.004]
    assert {p: (p / METRICS_CSV).read_bytes() for p in agent_records} == agent_records
    assert all((runs / f"t000{t.number}" / METRICS_CSV).is_file() for t in study.get_trials())
