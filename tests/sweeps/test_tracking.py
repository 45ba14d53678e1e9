"""The sweep's summary run in W&B (:func:`cvae.sweeps.tracking.log_sweep_summary`): a real offline run
written by wandb, read back from disk with no login.

Each trial's own run is :class:`cvae.tracking.WandbRun`: tests/test_wandb_run.py; the offline reader's edges
are tests/test_wandb_offline.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from cvae.sweeps.tracking import _table_columns, log_sweep_summary

from cvae.wandb_offline import find_offline_runs, read_offline_runs_merged


# -- the sweep summary run ------------------------------------------------------------------------------------
def test_sweep_summary_run(wandb_dir: Path) -> None:
    trials = [
        {"number": 0, "state": "complete", "value": 21.5, "params": {"lr": 1e-3}, "duration_s": 12},
        {"number": 1, "state": "failed", "value": None, "reason": "diverged", "duration_s": 3.5},
        {"number": 2, "state": "pruned", "value": float("nan"), "params": {"lr": 1e-2}, "epochs": "3"},
        {"number": 3, "state": "complete", "value": 22.0, "epochs": 5, "path": wandb_dir},
    ]
    spec_text = "name: study-a\nmethod: tpe\nmetric: {name: val/psnr, goal: maximize}\n"
    from cvae.analysis.importance import Importances

    log_sweep_summary(project="cvae-test", entity=None, group="study-a", name="study-a-summary",
                      run_id="study-a-summary", mode="offline", trials=trials,
                      importances=Importances({"lr": 0.75, "beta": 0.25}, n_runs=6), spec_text=spec_text,
                      best={"value": 22.0})
    log_sweep_summary(project="cvae-test", entity=None, group="study-b", name="study-b-summary",
                      run_id="study-b-summary", mode="offline", trials=trials[:1], importances={},
                      spec_text="name: study-b\n")
    runs = read_offline_runs_merged(wandb_dir)
    run = runs["study-a-summary"]
    assert run.job_type == "sweep-summary" and run.group == "study-a" and run.exit_code == 0
    assert run.config == {"spec": spec_text}
    assert run.summary["n_trials"] == 4
    assert run.summary["importance/lr"] == 0.75 and run.summary["best/value"] == 22.0
    assert run.summary["importance_note"].startswith("from only 6 complete trials (fewer than 10): rough")
    (row,) = run.history
    assert row["sweep/trials"]["_type"] == "table-file"
    assert "sweep/param_importance_table" in row
    table = json.loads((run.path / "files" / row["sweep/trials"]["path"]).read_text())
    assert table["columns"] == ["number", "state", "value", "params", "duration_s", "reason", "epochs", "path"]
    by_number = {r[0]: dict(zip(table["columns"], r, strict=True)) for r in table["data"]}
    assert by_number[0]["value"] == 21.5 and by_number[0]["params"] == '{"lr": 0.001}'
    assert by_number[3]["epochs"] == "5"  # a column of numbers and strings becomes strings
    assert by_number[3]["path"] == str(wandb_dir)

    other = runs["study-b-summary"]
    assert other.summary["n_trials"] == 1
    assert not any(k.startswith("importance/") for k in other.summary)
    assert "sweep/param_importance_table" not in other.history[0]


def test_sweep_summary_disabled_writes_nothing(wandb_dir: Path) -> None:
    log_sweep_summary(project="cvae-test", entity=None, group="g", name="n", run_id="r", mode="disabled",
                      trials=[{"number": 0}], importances={}, spec_text="")
    assert find_offline_runs(wandb_dir) == []


def test_table_columns_keep_one_type_per_column() -> None:
    columns, rows = _table_columns([{"a": 1, "b": "x", "c": {"k": 1}, "d": True},
                                    {"a": 2.5, "b": 3, "e": None, "d": False}])
    assert columns == ["a", "b", "c", "d", "e"]
    assert rows == [[1, "x", '{"k": 1}', True, None], [2.5, "3", None, False, None]]


def test_a_small_sweeps_summary_run_has_no_importances_and_no_optuna_warning(
    wandb_dir: Path, tiny_dataset: Path, tmp_path: Path, capfd
) -> None:
    import warnings

    import optuna
    from cvae.sweeps.launcher import _summary_run
    from cvae.sweeps.report import rows
    from cvae.sweeps.spec import load_spec
    from optuna.distributions import CategoricalDistribution
    from test_runner import write_spec

    spec = load_spec(write_spec(tmp_path, tiny_dataset, wandb={"project": "test", "mode": "offline"}))
    study = optuna.create_study(study_name=spec.name, direction="maximize")
    dists = {"kl_anneal_type": CategoricalDistribution(["cyclical", "none"]), "N_dim": CategoricalDistribution([4, 8])}
    for value, kl, n in ((20.0, "cyclical", 4), (21.0, "none", 8)):  # 2 trials: importances would be noise
        study.add_trial(optuna.trial.create_trial(params={"kl_anneal_type": kl, "N_dim": n}, distributions=dists,
                                                  value=value))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _summary_run(spec, study, rows(study))
    assert [str(w.message) for w in caught] == []
    assert "Warning" not in capfd.readouterr().err
    (run,) = [r for r in read_offline_runs_merged(wandb_dir).values() if r.job_type == "sweep-summary"]
    assert run.summary["n_trials"] == 2 and not any(k.startswith("importance/") for k in run.summary)
    # Why there are none is beside them in the run, not only in a log line.
    assert run.summary["importance_note"] == ("importances need at least 4 complete trials with a val/psnr value, "
                                              "this sweep has 2")
