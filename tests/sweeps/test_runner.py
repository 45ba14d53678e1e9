"""Sweeps for real: SQLite and PostgreSQL studies, worker processes, kills, W&B offline files read back."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from cvae.core.records import read_csv
from cvae.sweeps.queue import config_id, open_study, reap_stale
from cvae.sweeps.runner import run_worker
from cvae.sweeps.spec import load_spec
from cvae.sweeps.storage import mask_url, open_storage
from optuna.trial import TrialState

from cvae.schema import EVAL_COLUMNS, WANDB_KEYS
from cvae.wandb_offline import read_offline_runs_merged

BASE = {
    "num_epoch": 2, "train_vi_len": 4, "batch_size": 4, "val_vi_len": 24, "F_dim": 16, "L_dim": 8, "N_dim": 4,
    "D_out_dim": 16, "tfr_sde": 1, "num_workers": 1, "kl_anneal_cycle": 1, "val_samples": 1, "val_diagnostics": False,
    "partial": 0.5,
}
"""The tiny trials of the sweep tests: half the tiny dataset's training clips an epoch (the lab's ``partial``: 3
steps of 4 clips), validated by the lab's one rollout (a third less time an epoch than the full evaluation, which
the tests of the evaluation's records ask for with :data:`FULL_EVALUATION`)."""
FULL_EVALUATION = {"val_samples": 5, "val_diagnostics": True}
"""The full evaluation's defaults: K = 5 samples of z, SSIM, and the input-use and latent diagnostics, which a
sweep runs at the epoch its metric judges (``val_eval_at``)."""


def write_spec(tmp_path: Path, dataset: Path, **overrides) -> Path:
    spec = {
        "name": "t", "method": "grid", "metric": {"name": "val/psnr", "goal": "maximize"},
        "parameters": {"kl_anneal_type": {"values": ["cyclical", "none"]}, "N_dim": {"values": [4, 8]}},
        "base": {"DR": str(dataset), **BASE}, "workers": 1, "output_dir": str(tmp_path / "out"),
        "wandb": {"project": "test", "mode": "offline"}, "heartbeat": {"interval": 1, "grace": 4},
    }
    for key, value in overrides.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def cvae(*args: str, env: dict, timeout: float = 300, columns: int | None = None) -> subprocess.CompletedProcess:
    if columns is not None:
        env = {**env, "COLUMNS": str(columns)}
    return subprocess.run([sys.executable, "-m", "cvae", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def load(spec_path: Path, storage: str | None = None):
    spec = load_spec(spec_path, storage=storage)
    return spec, optuna.load_study(study_name=spec.name, storage=open_storage(spec))


def params_of(trials) -> list[tuple]:
    return sorted(tuple(sorted(t.params.items())) for t in trials)


@pytest.mark.slow
def test_grid_sweep_with_two_workers_runs_each_point_once_and_tracks_it(tiny_dataset, tmp_path, env):
    spec_path = write_spec(tmp_path, tiny_dataset, workers=2, base={"DR": str(tiny_dataset), **BASE, **FULL_EVALUATION})
    done = cvae("sweep", "run", str(spec_path), "--no-live", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    spec, study = load(spec_path)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert study.metric_names == ["val/psnr"]
    assert params_of(trials) == params_of([optuna.trial.create_trial(params=p, distributions={
        k: optuna.distributions.CategoricalDistribution([v]) for k, v in p.items()}, value=0) for p in spec.grid()])
    assert "best trial" in done.stdout and "4 complete" in done.stdout
    logs = "".join(p.read_text() for p in (tmp_path / "out" / "logs").glob("worker-*.log"))
    assert "Warning" not in done.stderr + logs  # no library warning (Optuna's experimental APIs, importances)

    out = tmp_path / "out"
    for t in trials:
        folder = out / f"t{t.number:04d}"
        record = json.loads((folder / "trial.json").read_text())
        assert record["state"] == "complete" and record["params"] == t.params
        assert record["value"] == pytest.approx(t.value)
        rows = read_csv(folder / "metrics.csv")
        assert [r["epoch"] for r in rows] == ["0", "1"]
        assert t.value == pytest.approx(max(float(r["val_psnr"]) for r in rows))
        assert (folder / "sample.gif").exists() and (folder / "last.ckpt").exists()
        # What optuna-dashboard shows: the W&B run's folder (offline) and the GIF and PSNR plot as artifacts.
        assert Path(t.user_attrs["cvae:wandb_run_path"]).name.endswith(t.user_attrs["cvae:wandb_run_id"])
        metas = optuna.artifacts.get_all_artifact_meta(t, storage=study._storage)  # noqa: SLF001
        assert sorted(m.filename for m in metas) == ["psnr_per_frame.png", "sample.gif"]
        for m in metas:
            assert (out / "artifacts" / m.artifact_id).read_bytes() == (folder / m.filename).read_bytes()
        assert t.intermediate_values.keys() == {0, 1}
        # The baselines ride with the value: in the records, the Optuna attributes and (below) W&B.
        best = max(rows, key=lambda r: float(r["val_psnr"]))
        for key in ("val_psnr_copy_first", "val_psnr_mean_frame", "val_psnr_copy_prev", "val_psnr_margin"):
            assert record[key] == pytest.approx(float(best[key])) == pytest.approx(t.user_attrs[f"cvae:{key}"])
        assert record["val_psnr_margin"] == pytest.approx(t.value - record["val_psnr_copy_first"])
        # ... and so does the evaluation (SSIM, K samples, what the model uses), from the same epoch.
        for key in EVAL_COLUMNS:
            assert math.isfinite(record[key]), key
            assert record[key] == pytest.approx(float(best[key])) == pytest.approx(t.user_attrs[f"cvae:{key}"])
        assert record["val_psnr"] == pytest.approx(t.value)
        # Where the trial's time went, and its worker's memory, measured by the runner.
        timing, resources = record["timing"], record["resources"]
        assert timing["train_s"] == pytest.approx(sum(float(r["train_seconds"]) for r in rows), abs=1e-3)
        assert timing["val_s"] == pytest.approx(sum(float(r["val_seconds"]) for r in rows), abs=1e-3)
        assert 0 < timing["startup_s"] < record["duration_s"] and timing["tracking_s"] > 0
        parts = timing["startup_s"] + timing["train_s"] + timing["val_s"] + timing["other_s"]
        assert timing["tracking_s"] < record["duration_s"] and parts <= record["duration_s"] + 1e-3
        assert 0 < resources["rss_mib"] <= resources["peak_rss_mib"] and resources["threads"] >= 1
    assert len(read_csv(out / "trials.csv")) == 4

    runs = read_offline_runs_merged(tmp_path / "wandb")
    trial_runs = {r.run_id: r for r in runs.values() if r.job_type == "trial"}
    assert len(trial_runs) == 4
    for t in trials:
        run = trial_runs[t.user_attrs["cvae:wandb_run_id"]]
        assert run.group == "t" and run.name == f"t-t{t.number}"
        assert run.config["param/N_dim"] == t.params["N_dim"] and run.config["N_dim"] == t.params["N_dim"]
        assert [h["epoch"] for h in run.history if "val/psnr" in h] == [0, 1]
        assert max(h["val/psnr"] for h in run.history if "val/psnr" in h) == pytest.approx(t.value)
        assert run.summary["state"] == "complete"
        assert {"train/loss", "schedule/beta", "schedule/tfr", "lr", "perf/frames_per_s", "val/psnr_copy_first",
                "val/psnr_mean_frame", "val/psnr_copy_prev", "val/psnr_margin"} <= set(run.history[0])
        assert run.summary["val/psnr_margin"] == {"max": pytest.approx(t.user_attrs["cvae:val_psnr_margin"])}
        assert run.summary["val/psnr_copy_first"] == pytest.approx(t.user_attrs["cvae:val_psnr_copy_first"])
        # The evaluation: goal-aware summaries for its scores, the best epoch's value for its diagnostics.
        assert {WANDB_KEYS[c] for c in EVAL_COLUMNS} <= set(run.history[0])
        epochs_ssim = [h["val/ssim"] for h in run.history if "val/ssim" in h]
        assert run.summary["val/ssim"] == {"max": pytest.approx(max(epochs_ssim))}
        for key in ("val_psnr_no_prev", "val_psnr_swapped_frame", "val_active_units", "val_kl"):
            assert run.summary[WANDB_KEYS[key]] == pytest.approx(t.user_attrs[f"cvae:{key}"])
    assert any(r.job_type == "sweep-summary" for r in runs.values())

    again = cvae("sweep", "run", str(spec_path), "--no-live", env=env)
    assert again.returncode == 0
    assert len(load(spec_path)[1].get_trials()) == 4  # a finished study is not redone


@pytest.mark.slow
def test_run_cap_is_exact_with_random_search_and_tops_up(tiny_dataset, tmp_path, env):
    params = {"lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}}
    spec_path = write_spec(tmp_path, tiny_dataset, method="random", run_cap=3, parameters=params,
                           wandb={"mode": "disabled"}, base={"DR": str(tiny_dataset), **BASE, "num_epoch": 1, "tfr_sde": 0,
                                                              "validate": True})
    spec = load_spec(spec_path)
    study = open_study(spec, open_storage(spec), fill_queue=True)
    run_worker(spec)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 3
    assert len({t.params["lr"] for t in study.get_trials()}) == 3
    bigger = load_spec(write_spec(tmp_path, tiny_dataset, method="random", run_cap=4, parameters=params,
                                  wandb={"mode": "disabled"}, base={"DR": str(tiny_dataset), **BASE, "num_epoch": 1, "tfr_sde": 0}))
    open_study(bigger, open_storage(bigger), fill_queue=True)
    run_worker(bigger)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 4


def test_a_shuffled_grid_is_queued_in_its_run_order_and_topped_up_without_repeats(tiny_dataset, tmp_path):
    grid = {"kl_anneal_type": {"values": ["cyclical", "monotonic", "none"]}, "N_dim": {"values": [4, 8]}}
    spec = load_spec(write_spec(tmp_path, tiny_dataset, parameters=grid, grid_order="shuffled", seed=1, run_cap=4,
                                replicates=2))
    study = open_study(spec, open_storage(spec), fill_queue=True)
    queued = [(t.user_attrs["cvae:slot"], t.system_attrs["fixed_params"]) for t in study.get_trials()]  # claim order
    expected = [(f"g{config_id(point)}-r{r}", point) for _, point in spec.grid_points() for r in range(2)]
    assert queued == expected
    assert [i for i, _ in spec.grid_points()] != [0, 1, 2, 3]                      # not the listed order
    bigger = load_spec(write_spec(tmp_path, tiny_dataset, parameters=grid, grid_order="shuffled", seed=1,
                                  replicates=2))
    open_study(bigger, open_storage(bigger), fill_queue=True)
    slots = [t.user_attrs["cvae:slot"] for t in study.get_trials()]
    assert slots[:8] == [slot for slot, _ in expected] and len(slots) == len(set(slots)) == 12
    assert [t.system_attrs["fixed_params"] for t in study.get_trials()][8:] == [p for _, p in bigger.grid_points()[4:] for _ in range(2)]


def test_plan_times_short_clips_and_extrapolates_to_the_trials_lengths(tiny_dataset, tmp_path, monkeypatch):
    # `cvae sweep plan` timed the lab's model on its full clips: over a minute on 2 cores. It now times clips of
    # 2 and 3 frames; with a step whose cost is known (a fixed part plus one per predicted frame), its
    # extrapolation must give that cost at the trial's own lengths.
    from cvae.sweeps import plan

    clock = [0.0]
    lengths = []

    def fake_train_step(model, opt, frames, poses, **kw):
        lengths.append(frames.shape[1])
        clock[0] += 0.5 + 0.25 * frames.shape[0] * (frames.shape[1] - 1)  # an optimizer step + per prediction

    def fake_evaluate(model, frames, poses, **kw):
        lengths.append(frames.shape[1])
        clock[0] += 0.1 * frames.shape[0] * (frames.shape[1] - 1)

    from cvae.core import estimate  # the time estimate is the trainer's (cvae.core.epoch_seconds)

    monkeypatch.setattr(estimate, "train_step", fake_train_step)
    monkeypatch.setattr(estimate, "evaluate", fake_evaluate)
    monkeypatch.setattr(estimate.time, "perf_counter", lambda: clock[0])
    spec = load_spec(write_spec(tmp_path, tiny_dataset, parameters={"N_dim": {"values": [4]}},
                                base={"DR": str(tiny_dataset), **BASE, "train_vi_len": 16, "batch_size": 2,
                                      "val_vi_len": 24, "val_samples": 1, "val_diagnostics": False, "partial": 1.0}))
    train_s, val_s = plan.time_one_epoch(spec, {"N_dim": 4}, threads=1)
    assert max(lengths) <= 3
    batches = 96 // 16 // 2  # the tiny dataset's 96 training frames in clips of 16, 2 a batch
    assert train_s == pytest.approx(batches * (0.5 + 0.25 * 2 * 15))
    assert val_s == pytest.approx(0.1 * 1 * 23)  # one 24-frame validation clip: 23 predictions


def test_plan_prints_the_run_order_and_the_pruner(tiny_dataset, tmp_path, monkeypatch):
    from cvae.sweeps import plan

    monkeypatch.setattr(plan, "time_one_epoch", lambda *a, **k: (0.0, 0.0))  # the order, not the timing
    grid = {"kl_anneal_type": {"values": ["cyclical", "none"]}, "N_dim": {"values": [4, 8]}}
    pruner = {"type": "median", "n_startup_trials": 1}
    listed = plan.plan_text(load_spec(write_spec(tmp_path, tiny_dataset, parameters=grid, pruner=pruner)))
    assert "grid: 4 parameter set(s), in run order" in listed
    assert "pruner: type=median, n_startup_trials=1" in listed and "grid_order: shuffled mixes" in listed
    spec = load_spec(write_spec(tmp_path, tiny_dataset, parameters=grid, pruner=pruner, grid_order="shuffled", seed=1))
    shuffled = plan.plan_text(spec)
    assert "shuffled with seed 1" in shuffled and "grid_order: shuffled mixes" not in shuffled
    rows = [line.split(None, 1) for line in shuffled.splitlines() if line.startswith("    ")]
    assert [(int(i), text) for i, text in rows] == [
        (i, ", ".join(f"{k}={v}" for k, v in p.items())) for i, p in spec.grid_points()]


def test_plan_warns_when_the_pruner_looks_before_the_schedules_settle(tiny_dataset, tmp_path):
    from cvae.sweeps.plan import schedule_note

    grid = {"kl_anneal_type": {"values": ["none", "monotonic"]}, "tfr": {"values": [0.0, 1.0]}}
    base = {"DR": str(tiny_dataset), **BASE, "num_epoch": 8, "tfr_sde": 1, "tfr_d_step": 0.25, "kl_anneal_ratio": 0.5}

    def note(pruner: dict) -> str | None:
        return schedule_note(load_spec(write_spec(tmp_path, tiny_dataset, parameters=grid, base=base, pruner=pruner)))

    # tfr 1.0 reaches 0 in epoch index 4, monotonic beta 1 at index 4: the latest config settles at index 4.
    early = note({"type": "successive_halving", "min_resource": 1})
    assert early is not None and "after epoch 2" in early and "only in epoch 5 of 8" in early
    assert "(with kl_anneal_type=" in early and "n_warmup_steps 4 waits" in early
    assert note({"type": "successive_halving", "min_resource": 4}) is None
    assert note({"type": "median", "n_warmup_steps": 4}) is None
    assert note({"type": "none"}) is None
    assert note({"type": "successive_halving"}) is None  # min_resource auto: unknown before trials run


def test_replicates_share_parameters_and_differ_in_seed(tiny_dataset, tmp_path, env):
    params = {"lr": {"distribution": "uniform", "min": 0.001, "max": 0.002}}
    spec_path = write_spec(tmp_path, tiny_dataset, method="random", run_cap=1, replicates=2, parameters=params,
                           wandb={"mode": "disabled"}, base={"DR": str(tiny_dataset), **BASE, "num_epoch": 1, "tfr_sde": 0})
    spec = load_spec(spec_path)
    study = open_study(spec, open_storage(spec), fill_queue=True)
    run_worker(spec)
    trials = study.get_trials()
    assert len(trials) == 2 and trials[0].params == trials[1].params
    assert {t.user_attrs["cvae:replicate"] for t in trials} == {0, 1}
    assert trials[0].user_attrs["cvae:config_id"] == trials[1].user_attrs["cvae:config_id"]
    seeds = {yaml.safe_load((Path(t.user_attrs["cvae:run_dir"]) / "config.yaml").read_text())["seed"] for t in trials}
    assert seeds == {1, 2}


@pytest.mark.slow
def test_a_search_without_run_cap_draws_trials_until_stopped(tiny_dataset, tmp_path, env):
    # As a W&B sweep: nothing is queued up front, and each worker that finds the queue empty draws one more
    # parameter set (its replicates queued behind it), for as long as it runs (here: 4 trials).
    params = {"lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}}
    spec_path = write_spec(tmp_path, tiny_dataset, method="random", run_cap=None, replicates=2, parameters=params,
                           wandb={"mode": "disabled"}, base={"DR": str(tiny_dataset), **BASE, "num_epoch": 1, "tfr_sde": 0})
    spec = load_spec(spec_path)
    study = open_study(spec, open_storage(spec), fill_queue=True)
    assert spec.until_stopped and study.get_trials() == []
    stats = run_worker(spec, max_trials=4)
    trials = study.get_trials()
    assert stats.complete == 4 and [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert [t.user_attrs["cvae:replicate"] for t in trials] == [0, 1, 0, 1]
    assert trials[0].params == trials[1].params != trials[2].params == trials[3].params


@pytest.mark.slow
def test_diverging_trial_fails_with_its_reason_and_the_sweep_goes_on(tiny_dataset, tmp_path, env, monkeypatch):
    import cvae.core.trainer as trainer_mod

    real = trainer_mod.forward_clip

    def nan_for_n_dim_8(model, frames, poses, teacher_forcing, eps=None, time_chunk=None):
        preds, mse_t, kl_t = real(model, frames, poses, teacher_forcing, eps, time_chunk)
        return preds, (mse_t * math.nan if model.dims.N_dim == 8 else mse_t), kl_t

    monkeypatch.setattr(trainer_mod, "forward_clip", nan_for_n_dim_8)
    spec = load_spec(write_spec(tmp_path, tiny_dataset, wandb={"mode": "disabled"}))
    study = open_study(spec, open_storage(spec), fill_queue=True)
    stats = run_worker(spec)
    assert (stats.complete, stats.failed) == (2, 2)
    for t in study.get_trials():
        if t.params["N_dim"] == 8:
            assert t.state == TrialState.FAIL and "diverged" in t.user_attrs["cvae:fail_reason"]
        else:
            assert t.state == TrialState.COMPLETE
    assert not study.get_trials(states=(TrialState.WAITING, TrialState.RUNNING))  # a NaN is not retried


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _start_worker(spec_path: Path, env: dict, storage: str | None = None, log: Path | None = None) -> subprocess.Popen:
    # One thread each: two workers x two OpenMP threads on 2 cores spin against each other (10x slower).
    args = [sys.executable, "-m", "cvae", "sweep", "worker", str(spec_path), "--threads", "1"] + (
        ["--storage", storage] if storage else [])
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_sigkilled_worker_trial_is_retried_resumed_and_counted_once(tiny_dataset, tmp_path, env):
    spec_path = write_spec(tmp_path, tiny_dataset, base={"DR": str(tiny_dataset), **BASE, "num_epoch": 4},
                           parameters={"N_dim": {"values": [4, 8]}})
    spec = load_spec(spec_path)
    open_study(spec, open_storage(spec), fill_queue=True)
    first_run = tmp_path / "out" / "t0000"
    proc = _start_worker(spec_path, env, log=tmp_path / "killed.log")
    _wait_for(lambda: (first_run / "epoch=0.ckpt").exists() or (first_run / "last.ckpt").exists(), 120,
              "the first epoch checkpoint")
    time.sleep(1.5)  # W&B's writer flushes about once a second: what a SIGKILL cuts is the last second
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    spec_, study = load(spec_path)
    assert [t.state for t in study.get_trials()][:1] == [TrialState.RUNNING]  # left behind by the kill
    from cvae.core.checkpoint import load as load_checkpoint

    # The epochs the kill left done: those its last checkpoint holds (a row written after it, the kill landing
    # between an epoch's records and its checkpoint, is redone on resume).
    killed_at = read_csv(first_run / "metrics.csv")[: load_checkpoint(first_run / "last.ckpt")["next_epoch"]]
    assert 1 <= len(killed_at) < 4

    done = cvae("sweep", "run", str(spec_path), "--no-live", env=env)  # waits out the grace period
    assert done.returncode == 0, done.stderr[-2000:]
    study = load(spec_path)[1]
    trials = study.get_trials()
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == 2 and states.count(TrialState.FAIL) == 1
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 0)
    assert retry.params == trials[0].params and retry.state == TrialState.COMPLETE
    assert retry.user_attrs["cvae:run_dir"] == str(first_run)  # the same record folder
    rows = read_csv(first_run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3"]  # each epoch once
    assert rows[: len(killed_at)] == killed_at  # epochs done before the kill were kept, not redone
    record = json.loads((first_run / "trial.json").read_text())
    assert record["retry_of"] == [0] and record["state"] == "complete"
    runs = read_offline_runs_merged(tmp_path / "wandb")
    run = runs[retry.user_attrs["cvae:wandb_run_id"]]
    assert len(run.paths) == 2  # the killed process's segment and the resumed one, one W&B run id
    logged = sorted(h["epoch"] for h in run.history if "val/psnr" in h)
    assert logged == [0, 1, 2, 3]  # each epoch once: what the kill cut from W&B is re-logged from the records


@pytest.mark.slow
def test_ctrl_c_requeues_the_running_trial_and_leaves_nothing_running(tiny_dataset, tmp_path, env):
    spec_path = write_spec(tmp_path, tiny_dataset, base={"DR": str(tiny_dataset), **BASE, "num_epoch": 6},
                           parameters={"N_dim": {"values": [4]}}, wandb={"mode": "disabled"})
    spec = load_spec(spec_path)
    open_study(spec, open_storage(spec), fill_queue=True)
    proc = _start_worker(spec_path, env)
    _wait_for(lambda: (tmp_path / "out" / "t0000" / "last.ckpt").exists(), 120, "a checkpoint")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    study = load(spec_path)[1]
    if [t.state for t in study.get_trials()] == [TrialState.RUNNING]:
        # The signal broke a storage call in flight, so the interruption could not be recorded: the trial is
        # re-queued once its heartbeat goes stale instead. Either way it is not RUNNING forever.
        time.sleep(spec.heartbeat.grace + 1)
        reap_stale(study, spec)
    else:
        assert "interrupted" in study.get_trials()[0].user_attrs["cvae:fail_reason"]
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.WAITING]
    done = cvae("sweep", "run", str(spec_path), "--no-live", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = read_csv(tmp_path / "out" / "t0000" / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(6))


@pytest.mark.slow
def test_two_workers_on_postgresql_started_before_the_study_exists(tiny_dataset, tmp_path, env, postgres_url):
    spec_path = write_spec(tmp_path, tiny_dataset, storage=postgres_url, wandb={"mode": "disabled"},
                           parameters={"kl_anneal_type": {"values": ["cyclical", "none", "monotonic"]},
                                       "N_dim": {"values": [4, 8]}})
    workers = [_start_worker(spec_path, env, log=tmp_path / f"w{i}.log") for i in range(2)]
    codes = [w.wait(timeout=600) for w in workers]
    logs = [(tmp_path / f"w{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs
    spec, study = load(spec_path)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    assert len(set(params_of(trials))) == 6
    assert all("worker done" in text for text in logs)
    assert sum(int(text.split("worker done: ")[1].split(" ")[0]) for text in logs) == 6  # none twice
    status = cvae("sweep", "status", str(spec_path), env=env)
    assert status.returncode == 0 and "6 complete" in status.stdout


def test_unreachable_storage_fails_fast_with_the_password_masked(tiny_dataset, tmp_path, env):
    url = "postgresql+psycopg2://cvae:s3cret@127.0.0.1:1/sweeps"
    refused = cvae("sweep", "run", str(write_spec(tmp_path, tiny_dataset, storage=url)), env=env)
    assert refused.returncode == 2 and "must not hold a password" in refused.stderr and "s3cret" not in refused.stderr
    spec_path = write_spec(tmp_path, tiny_dataset)  # a password may come on the command line, never in the spec
    t0 = time.monotonic()
    done = cvae("sweep", "run", str(spec_path), "--storage", url, env=env, timeout=120)
    assert done.returncode == 2
    assert time.monotonic() - t0 < 45
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("cvae sweep run: error: cannot open study storage postgresql+psycopg2://cvae:***@127.0.0.1:1")
    assert "s3cret" not in done.stderr + done.stdout


def test_password_from_the_environment_and_masking(monkeypatch, tmp_path):
    from cvae.sweeps.storage import with_password

    assert mask_url("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    monkeypatch.setenv("CVAE_DB_PASSWORD", "p@ss/word")
    assert with_password("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u:p%40ss%2Fword@h/db"
    monkeypatch.delenv("CVAE_DB_PASSWORD")
    secret = tmp_path / "pw"
    secret.write_text("fromfile\n")
    monkeypatch.setenv("CVAE_DB_PASSWORD_FILE", str(secret))
    assert with_password("postgresql://u@h/db") == "postgresql://u:fromfile@h/db"
    assert with_password("postgresql://u:given@h/db") == "postgresql://u:given@h/db"


@pytest.mark.slow
def test_status_best_and_plan_commands(tiny_dataset, tmp_path, env):
    spec_path = write_spec(tmp_path, tiny_dataset, wandb={"mode": "disabled"},
                           parameters={"N_dim": {"values": [4, 8]}}, base={"DR": str(tiny_dataset), **BASE, **FULL_EVALUATION})
    missing = cvae("sweep", "status", str(spec_path), env=env)
    assert missing.returncode == 2 and "cvae sweep run" in missing.stderr
    plan = cvae("sweep", "plan", str(spec_path), env=env)
    assert plan.returncode == 0
    assert "grid: 2 parameter set(s)" in plan.stdout and "epochs in total: 4" in plan.stdout
    assert "estimated time" in plan.stdout
    # BASE's widths (F_dim 16, D_out_dim 16) leave 2-channel stages: warned about once each, never refused.
    warnings = [line for line in plan.stderr.splitlines() if line.startswith("cvae sweep plan: warning:")]
    assert [w.split(": ", 3)[3].split(":")[0] for w in warnings] == ["F_dim=16", "D_out_dim=16"]
    assert all(w.startswith(f"cvae sweep plan: warning: {spec_path}: ") for w in warnings)
    spec = load_spec(spec_path)
    open_study(spec, open_storage(spec), fill_queue=True)
    run_worker(spec)
    best = cvae("sweep", "best", str(spec_path), env=env)
    assert best.returncode == 0 and "best trial" in best.stdout and "N_dim:" in best.stdout
    status = cvae("sweep", "status", str(spec_path), env=env, columns=250)
    assert "2 complete" in status.stdout
    # The evaluation's columns, each trial at its value's epoch, and the caption that explains them.
    header = next(line for line in status.stdout.splitlines() if "SSIM" in line)
    for column in ("best of K", "z spread", "w/o prev frame", "other look", "active z"):
        assert column in header
    assert "active z: latent channels whose posterior varies with the data" in " ".join(status.stdout.split())
    for t in load(spec_path)[1].get_trials():
        drop = t.user_attrs["cvae:val_psnr_no_prev"] - t.user_attrs["cvae:val_psnr"]
        row = next(line for line in status.stdout.splitlines() if line.strip("│ ").startswith(f"{t.number} "))
        assert f"{t.user_attrs['cvae:val_ssim']:.3f}" in row and f"{drop:+.2f} dB" in row
    listed = subprocess.run([str(Path(sys.executable).parent / "optuna"), "trials", "--storage", spec.storage, "--study-name",
                             "t", "-f", "json"], env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 2


def test_journal_storage_runs_a_sweep(tiny_dataset, tmp_path, env):
    spec_path = write_spec(tmp_path, tiny_dataset, storage=f"journal:{tmp_path / 'study.log'}",
                           wandb={"mode": "disabled"}, parameters={"N_dim": {"values": [4]}})
    spec = load_spec(spec_path)
    study = open_study(spec, open_storage(spec), fill_queue=True)
    run_worker(spec)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE]


def test_local_workers_get_one_gpu_each(monkeypatch):
    from cvae.sweeps.launcher import _local_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert _local_gpus() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert _local_gpus() == []


def test_split_password_round_trips_with_with_password(monkeypatch):
    from cvae.sweeps.storage import split_password, with_password

    url, password = split_password("postgresql+psycopg2://cvae:p%40ss@db:5432/sweeps")
    assert (url, password) == ("postgresql+psycopg2://cvae@db:5432/sweeps", "p@ss")
    monkeypatch.setenv("CVAE_DB_PASSWORD", password)
    assert with_password(url) == "postgresql+psycopg2://cvae:p%40ss@db:5432/sweeps"
    assert split_password("sqlite:///x.db") == ("sqlite:///x.db", None)
