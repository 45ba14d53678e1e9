"""Every YAML file shipped in the repository loads and validates."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from core.config import resolve_config
from sweeps.space import suggest_all
from sweeps.spec import load_spec

ROOT = Path(__file__).parents[2]
SWEEP_SPECS = sorted(p for p in (ROOT / "sweeps" / "configs").glob("*.yaml") if p.name != "lab_full.yaml")
TRAIN_CONFIGS = sorted((ROOT / "configs").glob("*.yaml")) + [ROOT / "sweeps" / "configs" / "lab_full.yaml"]


def test_the_shipped_files_are_found():
    names = {p.name for p in SWEEP_SPECS}
    assert {"quickstart.yaml", "teacher_forcing.yaml", "kl_annealing.yaml", "ndim.yaml", "search.yaml"} <= names


@pytest.mark.parametrize("path", SWEEP_SPECS, ids=lambda p: p.name)
def test_sweep_spec_loads(path):
    spec = load_spec(path)
    assert spec.n_configs() >= 1
    if spec.method == "grid":
        trials = spec.grid()
    else:  # sampled trials of the real search space must be valid training configs
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        trials = [suggest_all(study.ask(), spec) for _ in range(20)]
    for params in trials:
        spec.trial_config(params, save_root="x")


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_train_config_loads(path):
    assert resolve_config(path).data.DR


def test_reports_experiments_are_what_the_reports_ran():
    tf = load_spec(ROOT / "sweeps" / "configs" / "teacher_forcing.yaml")
    cfgs = {p["tf_schedule"]: tf.trial_config(p, save_root="x").schedule for p in tf.grid()}
    assert (cfgs["TF1"].tfr, cfgs["TF1"].tfr_sde, cfgs["TF1"].tfr_d_step) == (1.0, 0, 0.1)
    assert (cfgs["TF2"].tfr, cfgs["TF2"].tfr_sde, cfgs["TF2"].tfr_d_step) == (0.5, 10, 0.05)
    assert cfgs["TF3"].tfr == 0.0
    kl = load_spec(ROOT / "sweeps" / "configs" / "kl_annealing.yaml")
    kinds = {p["kl_schedule"]: kl.trial_config(p, save_root="x").schedule for p in kl.grid()}
    assert [kinds[k].kl_anneal_type for k in ("KL1", "KL2", "KL3", "KL4", "KL5")] == [
        "cyclical", "monotonic", "none", "cyclical", "hybrid"]
    assert kinds["KL4"].kl_anneal_ratio == 0.5 and kinds["KL1"].kl_anneal_cycle == 10
    full = kl.trial_config(kl.grid()[0], save_root="x").model
    assert (full.F_dim, full.L_dim, full.N_dim, full.D_out_dim) == (128, 32, 12, 192)
    nd = load_spec(ROOT / "sweeps" / "configs" / "ndim.yaml")
    assert sorted(p["N_dim"] for p in nd.grid()) == [12, 32]
