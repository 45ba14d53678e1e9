"""Every YAML file shipped in the repository loads and validates."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from cvae.core.config import resolve_config
from cvae.sweeps.space import suggest_all
from cvae.sweeps.spec import load_spec

ROOT = Path(__file__).parents[2]
REPORTS = ROOT / "benchmarks" / "configs" / "reports"
SWEEP_SPECS = sorted(
    [p for p in (ROOT / "sweeps" / "configs").glob("*.yaml") if p.name != "lab_full.yaml"]
    + list((ROOT / "benchmarks" / "configs").glob("*.yaml"))
    + [p for p in REPORTS.glob("*.yaml") if p.name != "reduced.yaml"]
)
TRAIN_CONFIGS = sorted((ROOT / "configs").glob("*.yaml")) + [ROOT / "sweeps" / "configs" / "lab_full.yaml",
                                                              REPORTS / "reduced.yaml"]


def test_the_shipped_files_are_found():
    names = [p.relative_to(ROOT).as_posix() for p in SWEEP_SPECS]
    assert {"sweeps/configs/quickstart.yaml", "sweeps/configs/teacher_forcing.yaml", "sweeps/configs/ndim.yaml",
            "sweeps/configs/kl_annealing.yaml", "sweeps/configs/search.yaml", "benchmarks/configs/pruning.yaml",
            "benchmarks/configs/reports/teacher_forcing.yaml", "benchmarks/configs/reports/kl_annealing.yaml",
            "benchmarks/configs/reports/ndim.yaml"} <= set(names)


@pytest.mark.parametrize("path", [ROOT / "sweeps" / "configs" / "quickstart.yaml", ROOT / "benchmarks" / "configs" /
                                  "pruning.yaml", *sorted(p for p in REPORTS.glob("*.yaml") if p.name != "reduced.yaml")],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_grids_that_must_learn_cross_the_reports_knobs_without_a_warning(path):
    """Trials that learn: no stage narrower than RGB, no decay that never starts; the main job and the pruning
    grid cross annealing type, teacher forcing and N_dim."""
    spec = load_spec(path)
    assert spec.warnings == ()
    if "reports" not in path.parts:
        swept = {p.name: len(p.values) for p in spec.params}
        assert swept["kl_anneal_type"] >= 2 and swept["tfr"] >= 2 and swept["N_dim"] >= 2
        assert spec.synth.dancers == 1


def test_the_reduced_reports_scale_the_reports_schedules_to_their_run():
    """The reports' 70-epoch schedules at the same share of a 12-epoch run (benchmarks/configs/reports)."""
    from cvae.core.schedules import kl_beta, teacher_forcing_ratio

    tf = load_spec(REPORTS / "teacher_forcing.yaml")
    cfgs = {p["tf_schedule"]: tf.trial_config(p, save_root="x") for p in tf.grid()}
    assert {c.run.num_epoch for c in cfgs.values()} == {12} and tf.replicates == 5
    ratios = {k: [teacher_forcing_ratio(c.schedule, e) for e in range(5)] for k, c in cfgs.items()}
    assert ratios == {"TF1": [1.0, 0.5, 0.0, 0.0, 0.0], "TF2": [0.5, 0.5, 0.25, 0.0, 0.0], "TF3": [0.0] * 5}
    assert {c.schedule.kl_anneal_type for c in cfgs.values()} == {"none"}
    kl = load_spec(REPORTS / "kl_annealing.yaml")
    kcfgs = {p["kl_schedule"]: kl.trial_config(p, save_root="x") for p in kl.grid()}
    betas = {k: [round(kl_beta(c.schedule, 12, e), 3) for e in range(12)] for k, c in kcfgs.items()}
    assert betas["KL1"] == [0, 0.167, 0.333, 0.5, 0.667, 0.833] * 2  # 2 cycles of 6 epochs (the reports: 7)
    assert betas["KL4"] == [0, 0.333, 0.667, 1, 1, 1] * 2
    assert betas["KL2"] == [round(e / 12, 3) for e in range(12)]
    assert betas["KL3"] == [1.0] * 12
    assert betas["KL5"] == [0, 0.167, 0.333, 0.5, 0.667, 0.833] + [1.0] * 6
    nd = load_spec(REPORTS / "ndim.yaml")
    assert sorted(p["N_dim"] for p in nd.grid()) == [12, 32]


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


# -- the JSON Schema (`cvae sweep schema`): what an editor validates a spec with while it is typed ------------
SCHEMA_FILE = ROOT / "sweeps" / "configs" / "spec.schema.json"
WANDB_FILES = sorted((ROOT / "tests" / "fixtures" / "wandb_sweeps").glob("*.yaml"))


def _validator():
    import json

    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_committed_schema_is_the_one_cvae_sweep_schema_prints():
    import json
    import subprocess
    import sys

    from cvae.sweeps.spec import schema

    printed = subprocess.run([sys.executable, "-m", "cvae", "sweep", "schema"], capture_output=True, text=True,
                             check=True).stdout
    assert json.loads(printed) == schema() == json.loads(SCHEMA_FILE.read_text()), (
        "regenerate it: cvae sweep schema > sweeps/configs/spec.schema.json")


@pytest.mark.parametrize("path", SWEEP_SPECS + WANDB_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_schema_accepts_every_shipped_spec_and_they_point_an_editor_at_it(path):
    import yaml

    assert not list(_validator().iter_errors(yaml.safe_load(path.read_text())))
    if path not in WANDB_FILES:  # W&B's own files stay as W&B writes them
        first = path.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema=")
        assert (path.parent / first.split("=", 1)[1]).resolve() == SCHEMA_FILE.resolve()


@pytest.mark.parametrize(("change", "where"), [
    ({"colour": "blue"}, ""),
    ({"method": "bohb"}, "method"),
    ({"wandb": {"mode": "cloud"}}, "wandb/mode"),
    ({"heartbeat": {"interval": 0}}, "heartbeat/interval"),
    ({"parameters": {"lr": {"distribution": "normal", "mu": 0, "sigma": 1}}}, "parameters/lr/distribution"),
    ({"parameters": {"N_dim": {"values": [4], "vals": [8]}}}, "parameters/N_dim"),
    ({"synth": {"size": "64 by 128"}}, "synth/size"),
], ids=["unknown-key", "method", "wandb-mode", "heartbeat", "normal", "parameter-key", "synth-size"])
def test_the_schema_rejects_a_broken_spec_where_it_is_broken(change, where):
    import yaml

    raw = {**yaml.safe_load((ROOT / "sweeps" / "configs" / "quickstart.yaml").read_text()), **change}
    errors = list(_validator().iter_errors(raw))
    assert errors and {"/".join(map(str, e.absolute_path)) for e in errors} == {where}, [e.message for e in errors]
