"""Slurm for real: the shipped sbatch array and `cvae sweep run --launcher slurm` (submitit) on a one-node cluster
of Debian's slurmctld, slurmd and munged started by the ``slurm_cluster`` fixture (``tests/sweeps/slurm.py``).

What is proved: every trial of a sweep run by an array of workers is COMPLETE once, every epoch is recorded once
in ``metrics.csv``, Optuna and the offline W&B run; an array task that gets SIGTERM (``scancel``, or its time limit
through ``--signal=TERM@...``) re-queues its trial, and the other task resumes it from its last epoch checkpoint
(not from epoch 0); ``cvae sweep status`` lists the job array and its tasks' states. Tiny models on the session's
tiny dataset, one thread per worker; a SQLite study (one host: a shared filesystem).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from cvae.core.records import read_csv
from optuna.trial import TrialState
from test_faults import assert_every_epoch_once
from test_runner import BASE, _wait_for, cvae, load, write_spec

from cvae.schema import REASON

ROOT = Path(__file__).resolve().parents[2]
SBATCH = ROOT / "examples" / "slurm" / "sweep-workers.sbatch"

FAST = {**BASE, "partial": 0.25}
"""The tiny trials of test_runner, a quarter of the training clips per epoch and a short validation: about
0.35 s an epoch on one thread."""
WANDB = {"project": "test", "mode": "offline", "log_model": False}
HEARTBEAT = {"interval": 1, "grace": 10}
"""A 10 s grace: a busy 2-core machine must not make a live worker's trial look stale."""


@pytest.fixture
def cluster(slurm_cluster):
    """The session's cluster, with no job of this test left behind (a failed test's array is cancelled)."""
    yield slurm_cluster
    slurm_cluster.cancel_all()


def squeue(cluster, *args: str) -> str:
    done = subprocess.run(["squeue", "-h", *args], capture_output=True, text=True, timeout=30,
                          env={**os.environ, **cluster.env})
    return done.stdout.strip()


def wait_until_ended(cluster, job_id: str, timeout: float) -> dict[str, str]:
    """Wait until no task of the job is pending or running; returns each task's final state (squeue -t all)."""
    _wait_for(lambda: squeue(cluster, "-j", job_id, "-o", "%i") == "", timeout, f"Slurm job {job_id} to end")
    lines = squeue(cluster, "-r", "-t", "all", "-j", job_id, "-o", "%i %T").splitlines()
    return dict(line.split() for line in lines)


def running_trial_with_a_checkpoint(study: optuna.Study, **params) -> optuna.trial.FrozenTrial | None:
    """A RUNNING trial (of these ``params``) past its first epoch checkpoint, else None."""
    for t in study.get_trials(states=(TrialState.RUNNING,)):
        run_dir = t.user_attrs.get("cvae:run_dir")
        if any(t.params.get(k) != v for k, v in params.items()):
            continue
        if run_dir and (Path(run_dir) / "last.ckpt").exists() and (Path(run_dir) / "trial.json").exists():
            return t
    return None


def array_task_of(trial: optuna.trial.FrozenTrial) -> str:
    """``<job>_<task>`` of the Slurm array task whose worker runs ``trial`` (from the worker's environment)."""
    import json

    pid = json.loads((Path(trial.user_attrs["cvae:run_dir"]) / "trial.json").read_text())["worker"]["pid"]
    environ = dict(item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_bytes().decode(
        errors="replace").split("\0") if "=" in item)
    return f"{environ['SLURM_ARRAY_JOB_ID']}_{environ['SLURM_ARRAY_TASK_ID']}"


def assert_resumed_from_a_checkpoint(study: optuna.Study, victim: optuna.trial.FrozenTrial, rows_before: list,
                                     resumer_log: str) -> None:
    """The victim's trial failed with SIGTERM's reason, and its retry, in the same run folder, completed from the
    victim's last checkpoint: the resuming worker says so, and the epochs the victim recorded are kept as they
    were (not trained again)."""
    trials = study.get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [victim.number], [(t.number, t.state, t.user_attrs.get(REASON)) for t in trials]
    assert failed[0].user_attrs[REASON] == "interrupted (SIGTERM): re-queued"
    run_dir = victim.user_attrs["cvae:run_dir"]
    (retry,) = [t for t in trials if t.number > victim.number and t.user_attrs.get("cvae:run_dir") == run_dir]
    assert retry.state == TrialState.COMPLETE
    resumed = re.findall(rf"resumed {re.escape(run_dir)}/last\.ckpt at epoch (\d+)", resumer_log)
    assert len(resumed) == 1 and int(resumed[0]) >= 1, resumer_log[-3000:]
    assert len(rows_before) >= int(resumed[0])
    after = read_csv(Path(run_dir) / "metrics.csv")
    assert after[:int(resumed[0])] == rows_before[:int(resumed[0])]  # the victim's epochs, not trained again


@pytest.mark.slow
def test_the_shipped_sbatch_array_runs_a_sweep_and_a_scancelled_task_s_trial_resumes_on_the_other(
        cluster, tiny_dataset, tmp_path, env):
    epochs = 12
    spec_path = write_spec(tmp_path, tiny_dataset, parameters={"N_dim": {"values": [4, 8]}}, wandb=WANDB,
                           heartbeat=HEARTBEAT, base={"DR": str(tiny_dataset), **FAST, "num_epoch": epochs})
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    env = {**env, **cluster.env, "CVAE_STORAGE": storage, "SPEC": str(spec_path), "CVAE_VENV": sys.prefix}
    init = cvae("sweep", "init", str(spec_path), "--storage", storage, env=env)  # once, on the login node
    assert init.returncode == 0, init.stderr[-2000:]
    # The file's GPU, CPU and memory lines overridden on the command line: this node has 2 CPUs and no GPU.
    submitted = subprocess.run(["sbatch", "--parsable", "--array=0-1", "--gres=none", "--cpus-per-task=1",
                                "--mem=1G", str(SBATCH)], cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=30)
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().split(";")[0]
    spec, study = load(spec_path, storage)

    holder: list = []
    _wait_for(lambda: holder.append(running_trial_with_a_checkpoint(study)) or holder[-1] is not None, 180,
              "a running trial with a checkpoint")
    victim = holder[-1]
    task = array_task_of(victim)
    cancelled = subprocess.run(["scancel", task], env=env, capture_output=True, text=True, timeout=30)
    assert cancelled.returncode == 0, cancelled.stderr
    _wait_for(lambda: study.get_trials()[victim.number].state != TrialState.RUNNING, 60, "the trial's re-queue")
    rows_before = read_csv(Path(victim.user_attrs["cvae:run_dir"]) / "metrics.csv")

    states = wait_until_ended(cluster, job, 240)
    other = next(t for t in states if t != task)
    assert states == {task: "CANCELLED", other: "COMPLETED"}, states
    victim_log = (tmp_path / f"cvae-sweep-{task}.out").read_text()
    other_log = (tmp_path / f"cvae-sweep-{other}.out").read_text()
    assert f"[worker {task}]" in victim_log and "interrupted (SIGTERM): re-queued" in victim_log, victim_log[-3000:]
    assert_resumed_from_a_checkpoint(study, victim, rows_before, other_log)
    complete = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert sorted(t.params["N_dim"] for t in complete) == [4, 8]  # each grid point complete once
    assert {t.state for t in study.get_trials()} == {TrialState.COMPLETE, TrialState.FAIL}  # nothing left
    assert_every_epoch_once(spec, study, epochs, tmp_path / "wandb")


class _Trials:
    """The trials of a study that ran ``epochs`` epochs, as assert_every_epoch_once reads a study."""

    def __init__(self, study: optuna.Study, epochs: int) -> None:
        self.trials = [t for t in study.get_trials() if t.params["num_epoch"] == epochs]

    def get_trials(self) -> list[optuna.trial.FrozenTrial]:
        return self.trials


@pytest.mark.slow
def test_sweep_run_on_slurm_completes_the_grid_and_a_task_at_its_time_limit_hands_its_trial_over(
        cluster, tiny_dataset, tmp_path, env):
    # Trial 0 is short; trial 1 is long enough that the time limit's signal, which slurmctld sends at its next
    # time-limit check (every 30 s), comes while it trains.
    short, long = 3, 100
    spec_path = write_spec(tmp_path, tiny_dataset, parameters={"num_epoch": {"values": [short, long]}}, workers=2,
                           wandb=WANDB, heartbeat=HEARTBEAT, base={"DR": str(tiny_dataset), **FAST},
                           launcher="slurm", slurm={"signal_delay": 60, "cpus": 4})
    env = {**env, **cluster.env}
    # The flags win over the spec's slurm section (and its defaults: one GPU, 32G).
    run = subprocess.Popen([sys.executable, "-m", "cvae", "sweep", "run", str(spec_path), "--no-live", "--partition",
                            "debug", "--time", "0:10:00", "--gpus", "0", "--cpus", "1", "--mem", "1G"],
                           env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        spec, study, holder = None, None, []

        def started() -> bool:
            nonlocal spec, study
            if study is None and (tmp_path / "out" / "logs" / "slurm").exists():  # the study is ready, the array submitted
                spec, study = load(spec_path)
            holder.append(study and running_trial_with_a_checkpoint(study, num_epoch=long))
            return holder[-1] is not None

        _wait_for(lambda: started() or run.poll() is not None, 180, "the long trial's first checkpoint")
        assert run.poll() is None, run.communicate()[1][-3000:]
        victim = holder[-1]
        task = array_task_of(victim)
        # Its time limit cut to one minute: with --signal=TERM@60, the signal is due at once.
        updated = subprocess.run(["scontrol", "update", f"JobId={task}", "TimeLimit=1"], env=env, capture_output=True,
                                 text=True, timeout=30)
        assert updated.returncode == 0, updated.stderr
        _wait_for(lambda: study.get_trials()[victim.number].state != TrialState.RUNNING, 90, "the trial's re-queue")
        rows_before = read_csv(Path(victim.user_attrs["cvae:run_dir"]) / "metrics.csv")
        out, err = run.communicate(timeout=240)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, err[-3000:]
    job = re.search(r"Slurm job array (\d+) submitted: 2 worker\(s\), each no GPU, 1 CPU\(s\), 1G memory, time "
                    r"limit 10 min", out)
    assert job, out[-3000:]
    job = job.group(1)
    script = (tmp_path / "out" / "logs" / "slurm" / f"{job}_submission.sh").read_text()
    for line in ("--array=0-1%2", "--cpus-per-task=1", "--mem=1G", "--time=10", "--partition=debug",
                 "--signal=TERM@60", "--job-name=cvae-t"):
        assert f"#SBATCH {line}\n" in script, script
    assert "--gres" not in script and sys.executable in script  # no GPU; the venv's Python runs each task
    other = f"{job}_{1 - int(task.split('_')[1])}"
    logs = tmp_path / "out" / "logs" / "slurm"
    victim_log = (logs / f"{task}_0_log.out").read_text()
    assert f"[worker {task}]" in victim_log and "interrupted (SIGTERM): re-queued" in victim_log, victim_log[-3000:]
    assert_resumed_from_a_checkpoint(study, victim, rows_before, (logs / f"{other}_0_log.out").read_text())
    assert sorted(t.params["num_epoch"] for t in study.get_trials() if t.state == TrialState.COMPLETE) == [short, long]
    assert {t.state for t in study.get_trials()} == {TrialState.COMPLETE, TrialState.FAIL}
    for epochs in (short, long):
        assert_every_epoch_once(spec, _Trials(study, epochs), epochs, tmp_path / "wandb")
    assert "2 complete, 0 pruned, 1 failed, 0 running, 0 waiting" in out and (tmp_path / "out" / "trials.csv").exists()

    status = cvae("sweep", "status", str(spec_path), env=env)
    assert status.returncode == 0, status.stderr[-2000:]
    (line,) = [line for line in status.stdout.splitlines() if line.startswith(f"Slurm job {job} ")]
    assert f"Slurm job {job} (2 worker(s), submitted " in line and f"{other} COMPLETED" in line, line
    # The signalled worker ends its task before the limit; on a machine so busy that the limit had passed when
    # it was cut, slurmctld times the task out instead, with the same SIGTERM.
    assert re.search(rf"\b{task} (COMPLETED|TIMEOUT)\b", line), line


@pytest.mark.parametrize(("args", "no_sbatch", "expected"), [
    (["--launcher", "slurm"], True, "cvae sweep run: error: --launcher slurm: no sbatch on PATH"),
    (["--gpus", "0", "--detach"], False, "cvae sweep run: error: --gpus, --detach apply to the Slurm launcher only"),
    (["--launcher", "slurm", "--time", "soon", "--mem", "lots"], False,
     "cvae sweep run: error: --time='soon' must be a Slurm time limit: minutes, MM:SS, HH:MM:SS or D-HH:MM:SS"),
], ids=["no-sbatch", "slurm-flags-without-slurm", "bad-flag-values"])
def test_bad_slurm_input_is_one_line_and_creates_nothing(tiny_dataset, tmp_path, env, args, no_sbatch, expected):
    spec_path = write_spec(tmp_path, tiny_dataset, wandb={"mode": "disabled"})
    if no_sbatch:  # no Slurm client on this PATH
        env = {**env, "PATH": str(Path(sys.executable).parent)}
    done = cvae("sweep", "run", str(spec_path), "--no-live", *args, env=env, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if "error:" in line]
    assert lines and lines[0].startswith(expected), done.stderr
    if "--mem" in args:
        assert lines == [lines[0], "cvae sweep run: error: --mem='lots' must be a Slurm memory size: megabytes, or a "
                                   "number with K, M, G or T (32G)"]
    assert not (tmp_path / "out").exists()


def test_a_bad_slurm_section_is_refused_by_the_spec(tiny_dataset, tmp_path, env):
    spec_path = write_spec(tmp_path, tiny_dataset, launcher="sge", slurm={"gpus": -1, "sbatch": {"array": "0-9"}})
    done = cvae("sweep", "plan", str(spec_path), env=env, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    for line in ("launcher='sge' is not local or slurm", "slurm.gpus=-1 must be an integer >= 0",
                 "slurm.sbatch={'array': '0-9'}: array is set by workers (or --workers)"):
        assert line in done.stderr, done.stderr


def test_an_array_sbatch_refuses_is_one_line_with_its_reason(cluster, tiny_dataset, tmp_path, env):
    spec_path = write_spec(tmp_path, tiny_dataset, wandb={"mode": "disabled"}, slurm={"gpus": 0, "cpus": 1, "mem": "1G"})
    done = cvae("sweep", "run", str(spec_path), "--no-live", "--launcher", "slurm", "--partition", "nope",
                env={**env, **cluster.env}, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and lines[0].startswith("cvae sweep run: error: sbatch refused the job array: "), lines
    assert "Invalid partition name specified" in lines[0]


@pytest.mark.slow
def test_a_worker_that_stops_on_a_fault_ends_sweep_run_on_slurm_with_its_line(cluster, tiny_dataset, tmp_path, env):
    spec_path = write_spec(tmp_path, tiny_dataset, parameters={"N_dim": {"values": [4]}},
                           wandb={"project": "t", "mode": "online"}, launcher="slurm",
                           slurm={"gpus": 0, "cpus": 1, "mem": "1G", "time": 10})
    # W&B online without an API key or ~/.netrc: each trial fails to start, and the worker stops (exit 2).
    online = {k: v for k, v in env.items() if not k.startswith("WANDB_") or k in ("WANDB_DIR", "WANDB_CONFIG_DIR")}
    done = cvae("sweep", "run", str(spec_path), "--no-live", env={**online, **cluster.env, "HOME": str(tmp_path)},
                timeout=240)
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = [line for line in done.stderr.splitlines() if "cvae sweep run: error:" in line]
    job = re.search(r"Slurm job array (\d+) submitted", done.stdout).group(1)
    log = tmp_path / "out" / "logs" / "slurm" / f"{job}_0_log.out"  # one worker: submitit submits one job, no array
    assert line.startswith(f"cvae sweep run: error: array task {job} ended FAILED; its log ({log}) ends: cvae sweep "
                           "worker: error: trial 0 could not start: W&B online was requested but could not start"), line
    spec, study = load(spec_path)
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.WAITING]  # re-queued, not RUNNING
