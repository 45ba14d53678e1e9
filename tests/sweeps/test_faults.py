"""Fault injection: each scenario of ``docs/reliability.md``, reproduced and its guarantee asserted.

Guarantees checked throughout: nothing is left RUNNING; every epoch is in the records, W&B and Optuna
exactly once; a fault is one line and exit 2; no secret lands in any file under ``output_dir``,
``WANDB_DIR`` or the logs. Tiny models on the session's tiny dataset, heartbeat ``{interval: 1, grace: 4}``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from cvae.core.records import read_csv
from cvae.sweeps.queue import SweepError, claim, open_study, reap_stale, retry_trials
from cvae.sweeps.runner import STOP_REQUESTED, install_stop_handlers, run_worker
from cvae.sweeps.spec import load_spec
from cvae.sweeps.storage import ResilientStorage, open_storage
from optuna.trial import TrialState
from test_runner import BASE, _wait_for, cvae, load, write_spec

from cvae.schema import REASON
from cvae.secrets import mask_secrets, split_password
from cvae.wandb_offline import read_offline_runs_merged

SECRET = "Hunter2-Secret"


def one_error_line(proc: subprocess.CompletedProcess, command: str) -> str:
    """The failure is one line on stderr, no traceback, exit 2; returns the line."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if f"cvae {command}: error:" in line]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def states(study: optuna.Study) -> list[TrialState]:
    return [t.state for t in study.get_trials()]


def assert_every_epoch_once(spec, study, epochs: int, wandb_dir: Path | None) -> None:
    """For every grid point: the run folder, Optuna (the final trial) and W&B hold epochs 0..epochs-1 once."""
    trials = study.get_trials()
    assert TrialState.RUNNING not in states(study)
    for t in trials:
        if t.state != TrialState.COMPLETE:
            continue
        rows = read_csv(Path(t.user_attrs["cvae:run_dir"]) / "metrics.csv")
        assert [int(r["epoch"]) for r in rows] == list(range(epochs)), t.number
        assert sorted(t.intermediate_values) == list(range(epochs)), (t.number, t.intermediate_values)
        if wandb_dir is not None:
            run = read_offline_runs_merged(wandb_dir)[t.user_attrs["cvae:wandb_run_id"]]
            logged = [h["epoch"] for h in run.history if "val/psnr" in h]
            assert sorted(logged) == list(range(epochs)), (t.number, logged)


def files_holding(root: Path, text: str) -> list[Path]:
    bad = []
    for path in root.rglob("*"):
        if path.is_file():
            with contextlib.suppress(OSError):
                if text.encode() in path.read_bytes():
                    bad.append(path)
    return bad


# -- 1. a claimed trial always has a heartbeat -------------------------------------------------------------
def test_a_worker_killed_right_after_its_claim_leaves_a_trial_the_reaper_requeues(tiny_dataset, tmp_path):
    spec = load_spec(write_spec(tmp_path, tiny_dataset, parameters={"N_dim": {"values": [4]}},
                                wandb={"mode": "disabled"}, heartbeat={"interval": 1, "grace": 2}))
    study = open_study(spec, open_storage(spec), fill_queue=True)
    assert claim(study, spec) is not None  # ... and the worker dies here, before any trial code runs
    assert states(study) == [TrialState.RUNNING]
    time.sleep(spec.heartbeat.grace + 1.5)
    assert reap_stale(study, spec) == [0]
    assert states(study) == [TrialState.FAIL, TrialState.WAITING]
    assert "no heartbeat" in study.get_trials()[0].user_attrs["cvae:fail_reason"]  # a reaped trial says why
    assert "cvae:fail_reason" not in study.get_trials()[1].user_attrs  # the retry does not inherit it


@pytest.mark.slow
def test_w_and_b_that_cannot_start_fails_the_trial_requeues_it_and_the_next_run_completes(
        tiny_dataset, tmp_path, env):
    spec_path = write_spec(tmp_path, tiny_dataset, parameters={"N_dim": {"values": [4]}},
                           base={"DR": str(tiny_dataset), **BASE, "num_epoch": 1}, wandb={"project": "t", "mode": "online"})
    online = {k: v for k, v in env.items() if not k.startswith("WANDB_") or k in ("WANDB_DIR", "WANDB_CONFIG_DIR")}
    online.update(HOME=str(tmp_path / "home"), WANDB_SILENT="true")  # no API key, no ~/.netrc: online cannot start
    first = cvae("sweep", "run", str(spec_path), "--no-live", env=online, timeout=180)
    assert first.returncode == 2, first.stderr[-2000:]
    assert "W&B online was requested but could not start" in first.stderr
    spec, study = load(spec_path)
    assert states(study) == [TrialState.FAIL, TrialState.WAITING]  # not RUNNING: the next run does not hang
    assert "could not start" in study.get_trials()[0].user_attrs["cvae:fail_reason"]
    write_spec(tmp_path, tiny_dataset, parameters={"N_dim": {"values": [4]}},
               base={"DR": str(tiny_dataset), **BASE, "num_epoch": 1}, wandb={"project": "t", "mode": "offline"})
    assert run_worker(load_spec(spec_path)).complete == 1  # the next run (in-process: the CLI path is tested above)
    assert states(study) == [TrialState.FAIL, TrialState.COMPLETE]
    assert study.get_trials()[1].user_attrs["cvae:run_dir"] == str(tmp_path / "out" / "t0000")  # the same folder


# -- 2. secrets --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "hidden"), [
    ("postgresql+psycopg2://cvae:PASSWORD@127.0.0.1:5477/cvae", "PASSWORD"),
    ("postgresql://cvae:p@ss@db:5432/sweeps", "p@ss"),                 # an unencoded '@' in the password
    ("postgresql://:topsecret@db/sweeps", "topsecret"),                # an empty user
    ("postgresql://cvae@db/sweeps?sslmode=require&password=topsecret", "topsecret"),
    ("postgresql://cvae@db/sweeps?password=topsecret", "topsecret"),
])
def test_masking_hides_every_form_of_password(url, hidden):
    masked = mask_secrets(f"cannot open study storage {url}: refused")
    assert hidden not in masked and "***" in masked
    without, password = split_password(url)
    assert password == hidden and hidden not in without and "password=" not in without


def test_status_of_a_missing_study_prints_no_password(tiny_dataset, tmp_path, env, postgres_url):
    spec_path = write_spec(tmp_path, tiny_dataset)
    head, tail = postgres_url.split("postgres@", 1)
    for url in (f"{head}postgres:{SECRET}@{tail}", f"{postgres_url}?password={SECRET}"):
        done = cvae("sweep", "status", str(spec_path), "--storage", url, env=env, timeout=120)
        line = one_error_line(done, "sweep status")
        assert "no study 't'" in line and SECRET not in done.stderr + done.stdout


@pytest.mark.slow
def test_no_secret_in_any_file_of_a_sweep_on_postgresql(tiny_dataset, tmp_path, env, postgres_url):
    head, tail = postgres_url.split("postgres@", 1)
    url = f"{head}postgres:{SECRET}@{tail}"  # the test server trusts 127.0.0.1: any password is accepted
    spec_path = write_spec(tmp_path, tiny_dataset, parameters={"N_dim": {"values": [4]}},
                           base={"DR": str(tiny_dataset), **BASE, "num_epoch": 1})
    done = cvae("sweep", "run", str(spec_path), "--storage", url, "--no-live", env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert SECRET not in done.stdout + done.stderr
    runs = read_offline_runs_merged(tmp_path / "wandb")
    assert any(r.config.get("study") == "t" for r in runs.values())  # the trial's run and the summary run exist
    assert len(runs) == 2
    (summary,) = [r for r in runs.values() if "spec" in r.config]  # the spec as written: distributions kept
    assert yaml.safe_load(summary.config["spec"])["parameters"] == {"N_dim": {"values": [4]}}
    assert files_holding(tmp_path, SECRET) == []  # output_dir (logs, records), WANDB_DIR (.wandb, metadata)


def _command_lines_holding(secret: str) -> list[str]:
    """The command line of every process on the machine (what `ps -eo args` shows) that holds ``secret``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if secret in args:
                found.append(args)
    return found


@pytest.mark.slow
def test_no_process_of_a_sweep_shows_the_password_in_its_command_line(tiny_dataset, tmp_path, env, postgres_url):
    head, tail = postgres_url.split("postgres@", 1)
    url = f"{head}postgres:{SECRET}@{tail}"  # the test server trusts 127.0.0.1: any password is accepted
    spec_path = write_spec(tmp_path, tiny_dataset, parameters={"N_dim": {"values": [4, 8]}}, workers=2,
                           base={"DR": str(tiny_dataset), **BASE, "num_epoch": 2})
    proc = subprocess.Popen([sys.executable, "-m", "cvae", "sweep", "run", str(spec_path), "--storage", url,
                             "--no-live"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # From the moment the run has re-executed itself without the password (it opens the storage, then makes
    # its log folder) to its end, no process of it shows the password: not the run, not its workers.
    _wait_for(lambda: (tmp_path / "out" / "logs").exists() or proc.poll() is not None, 60, "the sweep's log folder")
    seen, polls = [], 0
    while proc.poll() is None:
        seen += _command_lines_holding(SECRET)
        polls += 1
        time.sleep(0.05)
    out, err = proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert polls > 20 and seen == []
    assert len([t for t in load(spec_path, storage=url)[1].get_trials() if t.state == TrialState.COMPLETE]) == 2

    dashboard = subprocess.Popen([sys.executable, "-m", "cvae", "sweep", "dashboard", str(spec_path), "--storage",
                                  url, "--port", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(3)
        assert dashboard.poll() is None and _command_lines_holding(SECRET) == []
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)


@pytest.mark.slow
def test_unicode_and_spaces_in_every_path(tiny_dataset, tmp_path, env, monkeypatch):
    root = tmp_path / "Ünïcode and spaces — 数据"
    dataset = Path(shutil.copytree(tiny_dataset, root / "my data set"))
    wandb_dir = root / "w and b"
    monkeypatch.setenv("WANDB_DIR", str(wandb_dir))
    env = {**env, "WANDB_DIR": str(wandb_dir), "CVAE_CACHE_DIR": str(root / "cache dir")}
    out = root / "sweep records ü"
    spec_dir = root / "spec folder é"
    spec_dir.mkdir()
    spec_path = write_spec(spec_dir, dataset, parameters={"N_dim": {"values": [4]}}, output_dir=str(out),
                           base={"DR": str(dataset), **BASE, "num_epoch": 1})
    done = cvae("sweep", "run", str(spec_path), "--no-live", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    (trial,) = load(spec_path)[1].get_trials()
    assert trial.state == TrialState.COMPLETE and Path(trial.user_attrs["cvae:run_dir"]) == out / "t0000"
    assert [r["epoch"] for r in read_csv(out / "t0000" / "metrics.csv")] == ["0"]
    assert (out / "t0000" / "sample.gif").is_file() and (out / "trials.csv").is_file()
    assert [r.job_type for r in read_offline_runs_merged(wandb_dir).values()].count("trial") == 1
    report = cvae("analysis", "report", "--runs", str(out), "--out", str(root / "the report.html"), env=env)
    assert report.returncode == 0, report.stderr[-2000:]
    assert (root / "the report.html").stat().st_size > 0
    trained = cvae("train", "--DR", str(dataset), "--save_root", str(root / "a training ü"), "--device", "cpu",
                   "--no-progress", "--F_dim", "16", "--L_dim", "8", "--N_dim", "4", "--D_out_dim", "16",
                   "--train_vi_len", "4", "--val_vi_len", "24", "--batch_size", "4", "--num_epoch", "1",
                   "--tfr_sde", "0", "--wandb", "false", env=env)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert (root / "a training ü" / "last.ckpt").is_file()


_CLAIMER = """
import json, sys
from cvae.sweeps.queue import claim, open_study
from cvae.sweeps.spec import load_spec
from cvae.sweeps.storage import open_storage
spec = load_spec(sys.argv[1], storage=sys.argv[2])
study = open_study(spec, open_storage(spec), fill_queue=False)
taken = []
while (trial := claim(study, spec)) is not None:
    taken.append(trial.number)
print(json.dumps(taken))
"""


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_workers_claiming_at_once_never_take_the_same_trial(tiny_dataset, tmp_path, env, engine, request):
    # SQLite's driver begins a transaction at the first write, so Optuna's claim (read WAITING, set RUNNING)
    # let two workers take one trial: 8 to 13 of 60 were taken twice by 4 processes before the fix.
    url = (request.getfixturevalue("postgres_url") if engine == "postgresql"
           else f"sqlite:///{tmp_path / 'study.db'}")
    spec_path = write_spec(tmp_path, tiny_dataset, parameters={"N_dim": {"values": list(range(4, 64))}},
                           wandb={"mode": "disabled"})
    spec = load_spec(spec_path, storage=url)
    open_study(spec, open_storage(spec), fill_queue=True)
    procs = [subprocess.Popen([sys.executable, "-c", _CLAIMER, str(spec_path), url], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    taken = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-2000:]
        taken += json.loads(out.strip().splitlines()[-1])
    assert sorted(taken) == list(range(60))  # every trial taken, each by one worker


@pytest.mark.slow
# -- 3. editing the grid between runs ------------------------------------------------------------------------
def test_a_grid_edited_between_runs_queues_new_points_and_leaves_removed_ones(tiny_dataset, tmp_path, env):
    def spec_with(values):
        return load_spec(write_spec(tmp_path, tiny_dataset, parameters={"N_dim": {"values": values}},
                                    wandb={"mode": "disabled"}, base={"DR": str(tiny_dataset), **BASE, "num_epoch": 1}))

    spec = spec_with([4, 8])
    study = open_study(spec, open_storage(spec), fill_queue=True)
    assert run_worker(spec).complete == 2
    grown = spec_with([4, 8, 12])  # a value added: one new point, the finished ones are not run again
    open_study(grown, open_storage(grown), fill_queue=True)
    assert run_worker(grown).complete == 1
    assert sorted(t.params["N_dim"] for t in study.get_trials()) == [4, 8, 12]
    bigger = spec_with([4, 8, 12, 16])
    open_study(bigger, open_storage(bigger), fill_queue=True)  # queued, then the edit is reverted before a run
    reverted = spec_with([4, 8])
    open_study(reverted, open_storage(reverted), fill_queue=True)
    assert run_worker(reverted).trials == 0  # the removed point is not claimed, and the worker does not hang
    assert states(study) == [TrialState.COMPLETE] * 3 + [TrialState.WAITING]
    status = cvae("sweep", "status", str(tmp_path / "spec.yaml"), env=env)
    assert status.returncode == 0, status.stderr
    assert "+1 queued for grid points no longer in the spec" in status.stdout


def test_a_new_choice_for_a_categorical_grid_parameter_is_one_clear_line(tiny_dataset, tmp_path, env):
    spec = load_spec(write_spec(tmp_path, tiny_dataset, wandb={"mode": "disabled"},
                                parameters={"kl_anneal_type": {"values": ["cyclical", "none"]}},
                                base={"DR": str(tiny_dataset), **BASE, "num_epoch": 1}))
    open_study(spec, open_storage(spec), fill_queue=True)
    run_worker(spec, max_trials=1)  # the study now records kl_anneal_type's choices
    path = write_spec(tmp_path, tiny_dataset, wandb={"mode": "disabled"},
                      parameters={"kl_anneal_type": {"values": ["cyclical", "none", "monotonic"]}},
                      base={"DR": str(tiny_dataset), **BASE, "num_epoch": 1})
    line = one_error_line(cvae("sweep", "run", str(path), "--no-live", env=env), "sweep run")
    assert "kl_anneal_type" in line and "'monotonic'" in line and "new study" in line
    assert TrialState.RUNNING not in states(load(path)[1])


@pytest.mark.slow
# -- 4. no epoch lost to an interrupt ---------------------------------------------------------------------------
def test_a_signal_during_the_checkpoint_write_loses_no_epoch(tiny_dataset, tmp_path, env, monkeypatch):
    import cvae.core.trainer as trainer_mod

    spec = load_spec(write_spec(tmp_path, tiny_dataset, parameters={"N_dim": {"values": [4]}},
                                base={"DR": str(tiny_dataset), **BASE, "num_epoch": 4}))
    study = open_study(spec, open_storage(spec), fill_queue=True)
    real_save = trainer_mod.ckpt_io.atomic_save

    def save_with_a_signal(state, path):
        if Path(path).name == "last.ckpt" and state["last_epoch"] == 1 and not STOP_REQUESTED.is_set():
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while epoch 1's checkpoint is written
        real_save(state, path)

    monkeypatch.setattr(trainer_mod.ckpt_io, "atomic_save", save_with_a_signal)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        install_stop_handlers()
        with pytest.raises(KeyboardInterrupt):
            run_worker(spec)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        STOP_REQUESTED.clear()
    first = study.get_trials()[0]
    assert first.state == TrialState.FAIL and sorted(first.intermediate_values) == [0, 1]  # epoch 1 reported
    run_worker(spec)
    assert states(study) == [TrialState.FAIL, TrialState.COMPLETE]
    assert_every_epoch_once(spec, study, 4, tmp_path / "wandb")


@pytest.mark.slow
def test_a_fault_fixed_mid_training_resumes_from_the_last_good_checkpoint(tiny_dataset, tmp_path, env, monkeypatch):
    import errno

    import cvae.core.trainer as trainer_mod

    spec = load_spec(write_spec(tmp_path, tiny_dataset, parameters={"N_dim": {"values": [4]}},
                                base={"DR": str(tiny_dataset), **BASE, "num_epoch": 4}))
    study = open_study(spec, open_storage(spec), fill_queue=True)
    real_save = trainer_mod.ckpt_io.atomic_save
    disk = {"full": True}

    def save_on_a_disk_that_fills(state, path):
        if disk["full"] and state["last_epoch"] == 2:  # epochs 0 and 1 are saved; epoch 2's save fails
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_save(state, path)

    monkeypatch.setattr(trainer_mod.ckpt_io, "atomic_save", save_on_a_disk_that_fills)
    with pytest.raises(SweepError, match="No space left on device"):
        run_worker(spec)
    assert states(study) == [TrialState.FAIL, TrialState.WAITING]  # failed with the reason and re-queued
    folder = tmp_path / "out" / "t0000"
    before = read_csv(folder / "metrics.csv")[:2]  # epochs 0 and 1, checkpointed
    disk["full"] = False  # the fix
    assert run_worker(spec).complete == 1  # resumes at epoch 2 from epoch 1's checkpoint
    assert read_csv(folder / "metrics.csv")[:2] == before  # kept, not trained again
    assert states(study) == [TrialState.FAIL, TrialState.COMPLETE]
    assert json.loads((folder / "trial.json").read_text())["state"] == "complete"
    assert_every_epoch_once(spec, study, 4, tmp_path / "wandb")


@pytest.mark.slow
def test_a_worker_killed_between_checkpoint_and_report_loses_no_epoch_in_optuna_or_w_and_b(tiny_dataset, tmp_path, env,
                                                                                           monkeypatch):
    import cvae.sweeps.runner as runner_mod

    spec = load_spec(write_spec(tmp_path, tiny_dataset, parameters={"N_dim": {"values": [4]}},
                                base={"DR": str(tiny_dataset), **BASE, "num_epoch": 4}, heartbeat={"interval": 1, "grace": 2}))
    study = open_study(spec, open_storage(spec), fill_queue=True)
    real = runner_mod.TrialCallback.on_epoch_end

    class Killed(BaseException):
        """Stands for SIGKILL: nothing after it runs in the worker."""

    def die_at_epoch_1(self, result):
        if result.epoch == 1:
            raise Killed  # epoch 1 is in metrics.csv and last.ckpt, not yet reported to Optuna nor logged to W&B
        real(self, result)

    with monkeypatch.context() as mp:
        mp.setattr(runner_mod.TrialCallback, "on_epoch_end", die_at_epoch_1)
        with pytest.raises(Killed):
            run_worker(spec)
    time.sleep(spec.heartbeat.grace + 1.5)
    assert reap_stale(study, spec) == [0]
    run_worker(spec)  # the retry resumes at epoch 2 and reports and logs epoch 1 from the run's records
    assert states(study) == [TrialState.FAIL, TrialState.COMPLETE]
    assert_every_epoch_once(spec, study, 4, tmp_path / "wandb")
    run = read_offline_runs_merged(tmp_path / "wandb")[study.get_trials()[1].user_attrs["cvae:wandb_run_id"]]
    assert len(run.paths) == 2  # the killed attempt's segment and the retry's, one W&B run
    rows = {int(r["epoch"]): r for r in read_csv(tmp_path / "out" / "t0000" / "metrics.csv")}
    (epoch_1,) = [h for h in run.history if h.get("epoch") == 1 and "val/psnr" in h]
    assert epoch_1["val/psnr"] == pytest.approx(float(rows[1]["val_psnr"]))  # the records' values, re-logged


# -- 5. SIGTERM to `cvae sweep run` --------------------------------------------------------------------------------
def _a_sweep_past_its_first_checkpoint(tiny_dataset, tmp_path, env) -> tuple[Path, subprocess.Popen, int]:
    """`cvae sweep run` of one 5-epoch trial, once its first checkpoint is written: (spec, the run, its worker's
    pid)."""
    spec_path = write_spec(tmp_path, tiny_dataset, parameters={"N_dim": {"values": [4]}},
                           base={"DR": str(tiny_dataset), **BASE, "num_epoch": 5})
    proc = subprocess.Popen([sys.executable, "-m", "cvae", "sweep", "run", str(spec_path), "--no-live"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "out" / "t0000"
    log = tmp_path / "out" / "logs" / "worker-0.log"
    _wait_for(lambda: (run / "last.ckpt").exists() and log.exists() and "epoch 0 (" in log.read_text(), 180,
              "the first checkpoint and its log line")
    return spec_path, proc, json.loads((run / "trial.json").read_text())["worker"]["pid"]


@pytest.mark.slow
def test_sigterm_to_sweep_run_stops_its_worker_and_requeues_the_trial(tiny_dataset, tmp_path, env):
    spec_path, proc, worker_pid = _a_sweep_past_its_first_checkpoint(tiny_dataset, tmp_path, env)
    proc.send_signal(signal.SIGTERM)  # what `docker stop` and Slurm preemption send
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted (SIGTERM): stopping workers" in err
    assert not Path(f"/proc/{worker_pid}").exists() or "zombie" in Path(f"/proc/{worker_pid}/status").read_text().lower()
    study = load(spec_path)[1]
    assert states(study) == [TrialState.FAIL, TrialState.WAITING]
    assert study.get_trials()[0].user_attrs[REASON] == "interrupted (SIGTERM): re-queued"  # not "Ctrl-C"
    trials_csv = (tmp_path / "out" / "trials.csv").read_text()
    assert "running" not in trials_csv
    assert run_worker(load_spec(spec_path)).complete == 1  # the next run resumes it
    assert states(study) == [TrialState.FAIL, TrialState.COMPLETE]
    assert_every_epoch_once(load_spec(spec_path), study, 5, tmp_path / "wandb")


@pytest.mark.slow
def test_a_killed_worker_is_reported_with_the_signal_that_killed_it(tiny_dataset, tmp_path, env):
    _, proc, worker_pid = _a_sweep_past_its_first_checkpoint(tiny_dataset, tmp_path, env)
    os.kill(worker_pid, signal.SIGKILL)  # the OOM killer's way
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err[-2000:]
    lines = [line for line in err.splitlines() if "cvae sweep run: error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    line = lines[0]
    assert "cvae sweep run: error: worker 0 was killed by SIGKILL (its running trial is re-queued once its " \
           f"heartbeat is stale); its log ({tmp_path / 'out' / 'logs' / 'worker-0.log'}) ends: " in line, line


# -- 6. a storage outage ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_postgresql_restart_mid_sweep_costs_a_retry_not_the_sweep(tiny_dataset, tmp_path, env, postgres_url,
                                                                      postgres_server):
    spec_path = write_spec(tmp_path, tiny_dataset, parameters={"N_dim": {"values": [4]}},
                           heartbeat={"interval": 1, "grace": 30}, base={"DR": str(tiny_dataset), **BASE, "num_epoch": 4})
    proc = subprocess.Popen([sys.executable, "-m", "cvae", "sweep", "run", str(spec_path), "--storage", postgres_url,
                             "--no-live"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (tmp_path / "out" / "t0000" / "last.ckpt").exists(), 180, "the first checkpoint")
        postgres_server.pause()
        time.sleep(5)  # epochs end meanwhile: their reports wait for the server
        postgres_server.resume()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    log = (tmp_path / "out" / "logs" / "worker-0.log").read_text()
    assert "retrying for up to" in log and "back after" in log
    assert "Traceback" not in log + err
    spec, study = load(spec_path, postgres_url)
    assert states(study) == [TrialState.COMPLETE]
    assert_every_epoch_once(spec, study, 4, tmp_path / "wandb")


@pytest.mark.slow
def test_postgresql_stopped_outright_ends_the_run_in_one_line_and_the_next_run_resumes(
        tiny_dataset, tmp_path, env, postgres_url, postgres_server):
    spec_path = write_spec(tmp_path, tiny_dataset, parameters={"N_dim": {"values": [4]}},
                           heartbeat={"interval": 1, "grace": 4}, base={"DR": str(tiny_dataset), **BASE, "num_epoch": 4})
    env = {**env, "CVAE_STORAGE_RETRY_S": "8"}  # how long a lost server is waited for (default 180 s)
    proc = subprocess.Popen([sys.executable, "-m", "cvae", "sweep", "run", str(spec_path), "--storage", postgres_url,
                             "--no-live"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (tmp_path / "out" / "t0000" / "last.ckpt").exists(), 180, "the first checkpoint")
        postgres_server.pause()  # stopped, and not back before the run gives up
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=240)
        waited = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
        if not (postgres_server.datadir / "postmaster.pid").exists():
            postgres_server.resume()  # the fix (and the next tests' server)
    assert proc.returncode == 2, err[-3000:]
    assert "Traceback" not in err + (tmp_path / "out" / "logs" / "worker-0.log").read_text()
    lines = [line for line in err.splitlines() if "cvae sweep run: error:" in line]
    assert len(lines) == 1 and "127.0.0.1" in lines[0] and waited < 120, (waited, err[-3000:])
    kept = read_csv(tmp_path / "out" / "t0000" / "metrics.csv")
    assert kept and [int(r["epoch"]) for r in kept] == list(range(len(kept)))  # nothing recorded is lost
    time.sleep(5)  # the dead run's heartbeat goes stale
    done = cvae("sweep", "run", str(spec_path), "--storage", postgres_url, "--no-live", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    spec, study = load(spec_path, postgres_url)
    assert states(study)[-1] == TrialState.COMPLETE and TrialState.RUNNING not in states(study)
    assert_every_epoch_once(spec, study, 4, tmp_path / "wandb")


def test_a_database_out_of_connections_is_one_line_saying_what_to_do(tiny_dataset, tmp_path, postgres_url):
    """PostgreSQL's max_connections reached (too many workers on one database: docs/scale-out.md's ceiling) is a
    refusal, not an outage: one line at once, naming the remedy."""
    import psycopg2
    from cvae.sweeps.storage import StorageError

    spec = load_spec(write_spec(tmp_path, tiny_dataset), storage=postgres_url)
    held = []
    try:
        with contextlib.suppress(psycopg2.OperationalError):
            for _ in range(200):  # every connection the server has left
                held.append(psycopg2.connect(postgres_url.replace("postgresql+psycopg2", "postgresql")))
        assert 50 < len(held) < 200
        t0 = time.monotonic()
        with pytest.raises(StorageError) as err:
            open_storage(spec)
        assert time.monotonic() - t0 < 10
    finally:
        for conn in held:
            conn.close()
    assert "too many clients" in str(err.value) and "\n" not in str(err.value)
    assert "max_connections is reached: each worker holds two connections" in str(err.value)
    assert "cvae sweep proxy" in str(err.value)


def test_a_storage_that_stays_down_is_one_line_naming_it(monkeypatch):
    import sqlalchemy.exc

    class Down:
        calls = 0

        def get_all_studies(self):
            Down.calls += 1
            raise optuna.exceptions.StorageInternalError("An exception ... e.g. exceeding max length.") from (
                sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection refused")))

    storage = ResilientStorage(Down(), "postgresql://u:***@db/x", budget_s=1.0)
    t0 = time.monotonic()
    with pytest.raises(Exception) as caught:
        storage.get_all_studies()
    assert 1.0 <= time.monotonic() - t0 < 3 and Down.calls >= 2
    text = str(caught.value)
    assert "postgresql://u:***@db/x unreachable" in text and "connection refused" in text
    assert "max length" not in text


# -- 7. faults a user fixes: the trial resumes -----------------------------------------------------------------
def test_a_dataset_typo_is_one_line_before_anything_is_created(tiny_dataset, tmp_path, env):
    spec_path = write_spec(tmp_path, tiny_dataset, base={"DR": str(tmp_path / "no-such-data"), **BASE})
    line = one_error_line(cvae("sweep", "run", str(spec_path), "--no-live", env=env), "sweep run")
    assert str(tmp_path / "no-such-data") in line
    assert not (tmp_path / "out").exists()  # no study, no run folder


@pytest.mark.parametrize("fault", ["truncated checkpoint", "corrupt png"])
def test_a_broken_file_stops_the_worker_and_the_fixed_trial_resumes(tiny_dataset, tmp_path, fault):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    if fault == "truncated checkpoint":
        broken = tmp_path / "out" / "t0000" / "last.ckpt"
        broken.parent.mkdir(parents=True)
        broken.write_bytes(b"PK\x03\x04 cut off")  # a checkpoint cut off by a copy
        good = None  # the fix: delete it
    else:
        broken = data / "train" / "train_img" / "frame5.png"
        good = broken.read_bytes()
        broken.write_bytes(good[: len(good) // 3])  # cut off by a copy
    spec = load_spec(write_spec(tmp_path, data, parameters={"N_dim": {"values": [4]}}, wandb={"mode": "disabled"},
                                base={"DR": str(data), **BASE, "num_epoch": 1}))
    study = open_study(spec, open_storage(spec), fill_queue=True)
    with pytest.raises(SweepError) as caught:  # `cvae sweep run` prints it as its one line, exit 2
        run_worker(spec)
    assert broken.name in str(caught.value) and "\n" not in str(caught.value)
    assert states(study) == [TrialState.FAIL, TrialState.WAITING]
    assert broken.name in study.get_trials()[0].user_attrs["cvae:fail_reason"]
    if good is None:
        broken.unlink()
    else:
        broken.write_bytes(good)
    assert run_worker(spec).complete == 1  # the next run resumes the trial
    assert states(study) == [TrialState.FAIL, TrialState.COMPLETE]


def _mount_tmpfs(path: Path, size: str) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "4m")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.slow
def test_a_full_disk_names_enospc_and_the_path_and_the_trial_resumes_after_the_fix(tiny_dataset, tmp_path, env,
                                                                                     small_disk):
    spec_path = write_spec(tmp_path, tiny_dataset, parameters={"N_dim": {"values": [4]}}, wandb={"mode": "disabled"},
                           base={"DR": str(tiny_dataset), **BASE, "num_epoch": 2}, output_dir=str(small_disk / "out"),
                           storage=f"sqlite:///{tmp_path / 'study.db'}")
    filler = small_disk / "filler"
    # Leave 160 kB: the records (a dozen files, a 4 KiB tmpfs page each at least) and the failed trial's plot
    # and trial.json fit, the tiny model's 555 kB checkpoint does not.
    with open(filler, "wb") as fh:
        with contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 65536)
    os.truncate(filler, filler.stat().st_size - 160_000)
    first = cvae("sweep", "run", str(spec_path), "--no-live", env=env)
    assert first.returncode == 2, first.stderr[-2000:]
    last = first.stderr.strip().splitlines()[-1]
    assert "No space left on device" in last or "ENOSPC" in last, last
    study = load(spec_path)[1]
    assert states(study) == [TrialState.FAIL, TrialState.WAITING]
    reason = study.get_trials()[0].user_attrs["cvae:fail_reason"]
    assert "ENOSPC" in reason or "No space left" in reason
    assert "inline_container" not in reason
    filler.unlink()  # the fix
    assert run_worker(load_spec(spec_path)).complete == 1
    assert states(study) == [TrialState.FAIL, TrialState.COMPLETE]


@pytest.mark.slow
def test_a_full_disk_under_wandb_dir_keeps_the_trial_and_says_so_in_one_line(tiny_dataset, tmp_path, env, small_disk):
    spec_path = write_spec(tmp_path, tiny_dataset, parameters={"N_dim": {"values": [4, 8]}},
                           base={"DR": str(tiny_dataset), **BASE, "num_epoch": 2})
    filler = small_disk / "filler"
    with open(filler, "wb") as fh:
        with contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 65536)
    os.truncate(filler, filler.stat().st_size - 100_000)  # W&B's run starts, its files do not fit
    done = cvae("sweep", "run", str(spec_path), "--no-live", env={**env, "WANDB_DIR": str(small_disk)})
    assert done.returncode == 2, done.stderr[-2000:]
    worker_log = (tmp_path / "out" / "logs" / "worker-0.log").read_text()
    assert "Traceback" not in done.stderr + worker_log and "Logging error" not in done.stderr + worker_log
    assert len(done.stderr.splitlines()) < 40 and len(worker_log.splitlines()) < 40  # no flood
    (line,) = [line for line in done.stderr.splitlines() if "cvae sweep run: error:" in line]
    assert "trial 0 is complete in its records and Optuna, but W&B could not write its run: [Errno 28] No space " \
           "left on device" in line and str(small_disk) in line, line
    study = load(spec_path)[1]
    assert states(study) == [TrialState.COMPLETE, TrialState.WAITING]  # kept; the worker stopped after it
    assert [r["epoch"] for r in read_csv(tmp_path / "out" / "t0000" / "metrics.csv")] == ["0", "1"]
    filler.unlink()  # the fix: the sweep goes on with the other trial
    again = cvae("sweep", "run", str(spec_path), "--no-live", env={**env, "WANDB_DIR": str(small_disk)})
    assert again.returncode == 0, again.stderr[-2000:]
    assert states(load(spec_path)[1]) == [TrialState.COMPLETE, TrialState.COMPLETE]


def test_failed_trials_are_retried_by_command_and_complete_in_their_folder(tiny_dataset, tmp_path, env, monkeypatch):
    import math

    import cvae.core.trainer as trainer_mod

    real = trainer_mod.forward_clip

    def nan_for_n_dim_8(model, frames, poses, teacher_forcing, eps=None, time_chunk=None):
        preds, mse_t, kl_t = real(model, frames, poses, teacher_forcing, eps, time_chunk)
        return preds, (mse_t * math.nan if model.dims.N_dim == 8 else mse_t), kl_t

    spec_path = write_spec(tmp_path, tiny_dataset, wandb={"mode": "disabled"}, parameters={"N_dim": {"values": [4, 8]}},
                           base={"DR": str(tiny_dataset), **BASE, "num_epoch": 1})
    spec = load_spec(spec_path)
    study = open_study(spec, open_storage(spec), fill_queue=True)
    with monkeypatch.context() as mp:
        mp.setattr(trainer_mod, "forward_clip", nan_for_n_dim_8)
        run_worker(spec)
    assert states(study) == [TrialState.COMPLETE, TrialState.FAIL]
    done = cvae("sweep", "retry", str(spec_path), env=env)
    assert done.returncode == 0 and "trial 1 re-queued" in done.stdout, done.stderr
    assert retry_trials(study) == []  # already queued: not twice
    run_worker(spec)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[2].params == trials[1].params and trials[2].user_attrs["cvae:run_dir"] == trials[1].user_attrs["cvae:run_dir"]
    assert trials[0].datetime_complete < trials[1].datetime_complete  # the complete trial was not run again
    assert retry_trials(study) == []  # a chain with a complete trial is done
    bad = cvae("sweep", "retry", str(spec_path), "--trial", "7", env=env)
    assert "no trial 7" in one_error_line(bad, "sweep retry")


# -- 8. one line and exit 2 instead of a traceback ---------------------------------------------------------------
@pytest.mark.parametrize("storage", ["sqlite:////proc/nope/x.db", "journal:/proc/nope/journal.log"])
def test_an_unusable_storage_path_is_one_line(tiny_dataset, tmp_path, env, storage):
    spec_path = write_spec(tmp_path, tiny_dataset)
    line = one_error_line(cvae("sweep", "init", str(spec_path), "--storage", storage, env=env), "sweep init")
    assert "/proc/nope" in line


@pytest.mark.parametrize("storage", ["sqlite://relative.db", "sqlite:relative.db"])
def test_a_mistyped_sqlite_url_is_one_line_and_creates_nothing(tiny_dataset, tmp_path, env, monkeypatch, storage):
    spec_path = write_spec(tmp_path, tiny_dataset)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # where a folder named after the URL would appear
    for command in ("init", "run"):
        line = one_error_line(cvae("sweep", command, str(spec_path), "--storage", storage, env=env), f"sweep {command}")
        assert storage in line and "sqlite:///relative/path.db" in line, line
    assert list(work.iterdir()) == [] and not (tmp_path / "out").exists()


def test_a_read_only_sqlite_file_is_one_line_naming_it(tiny_dataset, tmp_path, env):
    disk = tmp_path / "ro"
    _mount_tmpfs(disk, "8m")
    try:
        spec_path = write_spec(tmp_path, tiny_dataset, storage=f"sqlite:///{disk / 'study.db'}")
        assert cvae("sweep", "init", str(spec_path), env=env).returncode == 0
        remount = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True, text=True)
        if remount.returncode != 0:
            pytest.skip(f"cannot remount a tmpfs read-only here: {remount.stderr.strip()}")
        line = one_error_line(cvae("sweep", "run", str(spec_path), "--no-live", env=env), "sweep run")
        assert "readonly database" in line and str(disk / "study.db") in line
        assert "max length" not in line
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_very_long_name_is_refused_by_the_spec(tiny_dataset, tmp_path, env):
    spec_path = write_spec(tmp_path, tiny_dataset, name="x" * 600)
    line = one_error_line(cvae("sweep", "init", str(spec_path), env=env), "sweep init")
    assert "600 characters" in line and not (tmp_path / "out").exists()


@pytest.mark.slow
# -- 9. unbounded inputs -------------------------------------------------------------------------------------------------
def test_a_spec_that_is_not_utf8_or_not_a_file_is_one_line_naming_it(tiny_dataset, tmp_path, env):
    spec_path = write_spec(tmp_path, tiny_dataset)
    spec_path.write_bytes(spec_path.read_bytes().replace(b"name: t\n", b"name: t\ndescription: caf\xe9\n", 1))
    line = one_error_line(cvae("sweep", "plan", str(spec_path), env=env), "sweep plan")
    assert line == f"cvae sweep plan: error: {spec_path}: line 2: not UTF-8 text (byte 0xe9); save the sweep spec " \
                   "as UTF-8"
    folder = tmp_path / "specs"
    folder.mkdir()
    for command in ("plan", "init", "run"):
        line = one_error_line(cvae("sweep", command, str(folder), env=env), f"sweep {command}")
        assert line == f"cvae sweep {command}: error: {folder}: cannot read sweep spec (Is a directory)"
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("where", ["file", "inside-a-file"])
def test_an_output_dir_that_is_a_file_is_one_line_and_nothing_is_created(tiny_dataset, tmp_path, env, where):
    blocker = tmp_path / "records"
    blocker.write_text("a file, not a folder\n")
    output_dir = blocker if where == "file" else blocker / "sweep"
    spec_path = write_spec(tmp_path, tiny_dataset, output_dir=str(output_dir))
    said = "is a file" if where == "file" else f"is inside {blocker}, a file"
    for command in ("plan", "init", "run"):
        line = one_error_line(cvae("sweep", command, str(spec_path), env=env), f"sweep {command}")
        assert line == f"cvae sweep {command}: error: {spec_path}: output_dir={str(output_dir)!r} {said}, not a " \
                       "folder (the sweep's records go in it)"
    assert blocker.read_text() == "a file, not a folder\n"


def test_a_yaml_alias_bomb_is_refused_quickly(tiny_dataset, tmp_path, env):
    spec_path = write_spec(tmp_path, tiny_dataset)
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]")
    bomb = "description: &bomb\n" + "\n".join("  " + line for line in lines) + "\n"
    spec_path.write_text(bomb + spec_path.read_text())
    assert len(bomb) < 1000
    t0 = time.monotonic()
    line = one_error_line(cvae("sweep", "plan", str(spec_path), env=env, timeout=60), "sweep plan")
    assert time.monotonic() - t0 < 30 and "alias" in line and str(spec_path) in line


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"method": "random", "run_cap": 10**11, "parameters": {"lr": {"min": 1e-4, "max": 1e-3}}}, "run_cap=100000000000 is over"),
    ({"parameters": {"N_dim": {"distribution": "int_uniform", "min": 1, "max": 10**9}}}, "the grid has up to"),
    ({"replicates": 5001}, "trials: at most 10000"),
])
def test_huge_queues_are_refused_before_anything_is_queued(tiny_dataset, tmp_path, env, overrides, expected):
    spec_path = write_spec(tmp_path, tiny_dataset, **overrides)
    t0 = time.monotonic()
    for command in ("plan", "init") if "run_cap" in overrides else ("plan",):  # both load the spec alike
        line = one_error_line(cvae("sweep", command, str(spec_path), env=env, timeout=60), f"sweep {command}")
        assert expected in line
    assert time.monotonic() - t0 < 60 and not (tmp_path / "out").exists()


@pytest.mark.slow
# -- 10. smaller ones ---------------------------------------------------------------------------------------------------------
def test_a_second_sweep_run_on_this_machine_shares_the_cores_and_logs_apart(tiny_dataset, tmp_path, env):
    spec_path = write_spec(tmp_path, tiny_dataset, parameters={"N_dim": {"values": [4]}}, wandb={"mode": "disabled"},
                           base={"DR": str(tiny_dataset), **BASE, "num_epoch": 1})
    out = tmp_path / "out"
    out.mkdir()
    import socket

    holder = open(out / ".run.lock", "w")  # noqa: SIM115 - a first `cvae sweep run` holding the lock
    holder.write(json.dumps({"pid": 4242, "workers": 1, "host": socket.gethostname()}))
    holder.flush()
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    # Without the suite's OMP_NUM_THREADS cap, so that the split shows: this machine's cores over 2 workers.
    env = {k: v for k, v in env.items() if k not in ("OMP_NUM_THREADS", "CVAE_THREADS")}
    try:
        done = cvae("sweep", "run", str(spec_path), "--no-live", env=env)
    finally:
        holder.close()
    assert done.returncode == 0, done.stderr[-2000:]
    assert "another `cvae sweep run` of this sweep runs on this machine (pid 4242" in done.stderr
    logs = sorted(p.name for p in (out / "logs").iterdir())
    assert logs == [f"worker-0.{n}.log" for n in [logs[0].split(".")[1]]] and "worker-0.log" not in logs
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    assert f"1 worker(s) x {threads} thread(s)" in done.stdout


@pytest.mark.parametrize("environ, threads", [
    ({}, 4),  # the 8 cores this process may use, over 2 workers
    ({"OMP_NUM_THREADS": "2"}, 2),  # a cap the user (or the site) set
    ({"OMP_NUM_THREADS": "16"}, 4),  # a cap above the share changes nothing
    ({"CVAE_THREADS": "3", "OMP_NUM_THREADS": "1"}, 3),  # the workers' own setting wins
    ({"CVAE_THREADS": ""}, 4),  # set but empty (compose passes it through) is unset
])
def test_workers_share_the_cores_this_process_may_use(monkeypatch, environ, threads):
    from cvae.sweeps.launcher import worker_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))  # e.g. a Slurm allocation of 8 of 64
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    for name in ("OMP_NUM_THREADS", "CVAE_THREADS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert worker_threads(2) == threads


def test_a_bad_cvae_threads_is_one_line_naming_it(tiny_dataset, tmp_path, env):
    spec_path = write_spec(tmp_path, tiny_dataset, parameters={"N_dim": {"values": [4]}}, wandb={"mode": "disabled"})
    for command in ("run", "worker"):
        done = cvae("sweep", command, str(spec_path), env={**env, "CVAE_THREADS": "four"})
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert done.stderr.strip().splitlines()[-1] == (f"cvae sweep {command}: error: CVAE_THREADS='four': the torch "
                                                        "threads of each worker must be a positive integer")
    assert not (tmp_path / "out").exists()  # said before any folder or study was created
