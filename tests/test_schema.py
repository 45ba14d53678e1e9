"""The records format (``cvae.schema``): one definition, read back the same way everywhere, torch-free."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import pytest
import yaml
from cvae.core.records import METRIC_COLUMNS as CORE_COLUMNS
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState

from cvae import schema


def test_every_logged_column_is_a_metrics_column_and_the_key_map_inverts() -> None:
    assert set(schema.WANDB_KEYS) <= set(schema.METRIC_COLUMNS)
    assert len(set(schema.WANDB_KEYS.values())) == len(schema.WANDB_KEYS)  # no two columns share a W&B key
    for column, key in schema.WANDB_KEYS.items():
        assert schema.COLUMN_OF_WANDB_KEY[key] == column
        assert schema.metric_column(key) == column
    assert schema.metric_column("val_psnr") == "val_psnr"
    assert CORE_COLUMNS is schema.METRIC_COLUMNS  # the trainer writes the schema's header


def test_state_names_cover_every_optuna_state_the_sweeps_use() -> None:
    for state in TrialState:
        assert schema.state_name(state) in (*schema.STATES, "other") or state.name not in schema.STATE_OF_OPTUNA
    assert schema.state_name(TrialState.FAIL) == "failed"
    assert schema.state_name("PRUNED") == "pruned"


def test_trial_row_of_a_retried_trial() -> None:
    start = datetime(2026, 1, 1, 12, 0, 0)
    trial = optuna.create_trial(
        state=TrialState.COMPLETE, value=27.5, params={"N_dim": 12, "kl_anneal_type": "none"},
        distributions={"N_dim": IntDistribution(4, 12), "kl_anneal_type": CategoricalDistribution(["none", "cyclical"])},
        intermediate_values={0: 20.0, 1: 25.0, 2: 27.5},
        user_attrs={schema.REPLICATE: 1, schema.CONFIG_ID: "abc", schema.RUN_DIR: "/r/t0003",
                    schema.RUN_ID: "q-1-t3", schema.trial_attr("val_psnr_copy_first"): 22.1,
                    schema.trial_attr(schema.MARGIN_COLUMN): 5.4},
        system_attrs={schema.FAILED_TRIAL: 3, schema.RETRY_HISTORY: [3, 5]},
    )
    trial.datetime_start, trial.datetime_complete = start, start + timedelta(seconds=90)
    trial.number = 6
    row = schema.trial_row(trial)
    assert row["trial"] == 6 and row["run"] == "t0003" and schema.run_key(trial) == 3
    assert row["state"] == "complete" and row["value"] == 27.5 and row["epochs"] == 3
    assert row["duration_s"] == 90.0 and row["replicate"] == 1 and row["config_id"] == "abc"
    assert row["retry_of"] == 5 and row["wandb_run_id"] == "q-1-t3" and row["reason"] == ""
    assert row["val_psnr_copy_first"] == 22.1 and row[schema.MARGIN_COLUMN] == 5.4
    assert row["val_psnr_mean_frame"] is None
    assert row["param/N_dim"] == 12 and row["param/kl_anneal_type"] == "none"


def test_trial_record_round_trip_keeps_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / schema.TRIAL_JSON
    record = schema.TrialRecord(study="s", trial_number=4, run_key=2, params={"tfr": 0.5}, started="t0")
    record.update(state="complete", value=25.0, future_key={"x": 1})
    record.write(path)
    raw = json.loads(path.read_text())
    assert raw["state"] == "complete" and raw["future_key"] == {"x": 1} and "extra" not in raw
    back = schema.TrialRecord.read(path)
    assert back == record
    assert not list(tmp_path.glob("*.tmp"))  # written through a temporary file, renamed


def test_trial_record_of_an_older_file_takes_defaults_and_refuses_non_objects(tmp_path: Path) -> None:
    path = tmp_path / schema.TRIAL_JSON
    path.write_text(json.dumps({"trial_number": 1, "state": "failed", "reason": "boom"}))
    record = schema.TrialRecord.read(path)
    assert (record.study, record.state, record.reason, record.replicate, record.retry_of) == ("", "failed", "boom", 0, [])
    path.write_text("[1, 2]")
    with pytest.raises(TypeError, match="a list, not a JSON object"):
        schema.TrialRecord.read(path)


def test_record_readers_import_no_torch() -> None:
    code = ("import sys, cvae.schema, cvae.wandb_offline, cvae.secrets, cvae.sweeps.report, cvae.sweeps.queue, "
            "cvae.sweeps.cli, cvae.analysis.load, cvae.analysis.cli; print(sorted(m for m in ('torch', 'torchvision') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_status_and_best_start_without_torch(tmp_path: Path) -> None:
    from cvae.sweeps.queue import open_study
    from cvae.sweeps.spec import load_spec
    from cvae.sweeps.storage import open_storage

    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "importless", "method": "grid", "metric": {"name": "val/psnr", "goal": "maximize"},
        "parameters": {"N_dim": {"values": [4, 8]}}, "base": {"DR": str(tmp_path / "data"), "num_epoch": 2},
        "output_dir": str(tmp_path / "out"), "wandb": {"mode": "disabled"},
    }))
    spec = load_spec(spec_path)
    study = open_study(spec, open_storage(spec), fill_queue=True)
    trial = study.ask()
    trial.report(24.0, 0)
    study.tell(trial, 24.0)
    for command in ("status", "best"):
        out = subprocess.run([sys.executable, "-X", "importtime", "-m", "cvae", "sweep", command, str(spec_path)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
        assert "optuna" in imported and "torch" not in imported, command
        assert "24" in out.stdout
