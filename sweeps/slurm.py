"""`cvae sweep run --launcher slurm`: the sweep's workers as the tasks of one Slurm job array, submitted with
submitit (the library Hydra's Slurm launcher uses), then watched from here until the array ends.

Each array task is one ``cvae sweep worker`` of the spec's study (:class:`ArrayTask`: the command's function with
the worker's arguments, in the submitting folder, with the venv's Python): it claims queued trials one at a time until
none is left, so the array's size is the number of workers at once, not the number of trials. The task gets
``SIGTERM`` ``slurm.signal_delay`` seconds before its time limit (``--signal=TERM@120``), on ``scancel`` and on
preemption: its worker fails the running trial with the reason and re-queues it, and any other worker resumes it
from its last epoch checkpoint (``docs/reliability.md``).

The submitted job ids are kept in the study (user attribute ``cvae:slurm_jobs``), so ``cvae sweep status`` shows
them and their tasks' states (``squeue``, else ``sacct``) from any machine that reaches the study and the
cluster. Logs: ``<output_dir>/logs/slurm/<job>_<task>_0_log.out`` (one worker: a single job, ``<job>_0_log.out``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvae.sweeps.launcher import LaunchError, final_report, keep_spec
from cvae.sweeps.spec import SweepSpec
from cvae.sweeps.spec_types import SlurmSpec, problems
from cvae.sweeps.storage import StorageError, mask_url, split_password
from pydantic import ValidationError

from cvae.console import EXIT_BAD_INPUT, EXIT_FAILED
from cvae.secrets import PASSWORD_ENV

log = logging.getLogger("cvae")

JOBS_ATTR = "cvae:slurm_jobs"
"""The study's user attribute listing the job arrays submitted for it: ``{"id", "tasks", "submitted", "logs"}``."""

FLAGS = {"partition": "--partition", "time": "--time", "gpus": "--gpus", "cpus": "--cpus", "mem": "--mem"}
"""``cvae sweep run``'s flags that override the spec's ``slurm`` section, by key."""

TERMINAL = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
            "PREEMPTED", "REVOKED", "SPECIAL_EXIT"}
"""Task states after which a task runs no more (every other state: pending, running, completing, ...)."""
FAULTS = {"FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}
"""Terminal states that say a worker stopped on a fault (not its time limit, scancel or preemption)."""

POLL_S = 5.0
"""How often the watch asks squeue."""


# -- options ---------------------------------------------------------------------------------------------------
def resolve(spec: SweepSpec, *, launcher: str | None = None, detach: bool = False,
            **flags: Any) -> SlurmSpec | None:
    """The ``slurm`` section ``cvae sweep run`` submits with (the spec's, the flags given over it), or None for
    the local launcher. Checked before anything is created.

    Raises:
        LaunchError: a flag's value is not valid (naming the flag), Slurm flags without the Slurm launcher, or
            no ``sbatch`` on PATH.
    """
    given = {key: value for key, value in flags.items() if value is not None}
    if (launcher or spec.launcher) != "slurm":
        extra = [FLAGS[k] for k in given] + (["--detach"] if detach else [])
        if extra:
            raise LaunchError(f"{', '.join(extra)} appl{'ies' if len(extra) == 1 else 'y'} to the Slurm launcher only: "
                              "add --launcher slurm (or launcher: slurm in the spec)")
        return None
    if unknown := set(given) - set(FLAGS):
        raise ValueError(f"unknown Slurm option(s) {', '.join(sorted(unknown))}")
    errors = []
    for key, value in given.items():
        try:
            SlurmSpec.model_validate({key: value})
        except ValidationError as err:  # its lines, with the flag for the key
            errors += [f"{FLAGS[key]}{line[len(key):]}" for line in problems(err)]
    if errors:
        raise LaunchError("\n".join(errors))
    slurm = SlurmSpec.model_validate({**spec.slurm.model_dump(), **given}) if given else spec.slurm
    if shutil.which("sbatch") is None:
        raise LaunchError("--launcher slurm: no sbatch on PATH: run `cvae sweep run` on a Slurm login node (or "
                          "submit examples/slurm/sweep-workers.sbatch there), or use --launcher local")
    return slurm


# -- one array task: a worker ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArrayTask:
    """What each task of the array runs (pickled by submitit, by reference to the modules): ``cvae sweep
    worker SPEC --storage URL --threads N`` in the submitting folder, the command's own function (``worker``,
    given by the CLI, which this module does not import) with those arguments. The storage password, if any,
    is not here but in the task's environment (sbatch passes the submitting environment on)."""

    worker: Callable[[argparse.Namespace], int]
    spec_path: str
    storage_url: str
    cwd: str
    threads: int

    def __call__(self, index: int) -> dict[str, Any]:
        os.chdir(self.cwd)
        job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID", "local")
        os.environ["CVAE_WORKER"] = f"{job}_{os.environ.get('SLURM_ARRAY_TASK_ID', index)}"
        os.environ.setdefault("MPLBACKEND", "Agg")
        signal.signal(signal.SIGCONT, signal.SIG_DFL)  # Slurm sends it with SIGTERM; submitit would log each one
        logging.raiseExceptions = False  # as `cvae` does: a log handler that cannot write drops the record
        threads = int(os.environ.get("SLURM_CPUS_PER_TASK") or 0) or self.threads
        try:
            code = int(self.worker(argparse.Namespace(spec=self.spec_path, storage=self.storage_url, threads=threads,
                                                      max_trials=None)) or 0)
        except KeyboardInterrupt:  # a signal outside the trial loop
            code = 130
        if code not in (0, 130):  # 130: stopped by SIGTERM (time limit, scancel, preemption): its trial re-queued
            sys.stdout.flush()
            sys.stderr.flush()
            sys.exit(code)  # the task ends FAILED with the worker's exit code; its log ends with the one line
        return {"worker": os.environ["CVAE_WORKER"], "exit": code}


# -- submission ------------------------------------------------------------------------------------------------
def log_dir(spec: SweepSpec) -> Path:
    return spec.output_dir / "logs" / "slurm"


def task_log(spec: SweepSpec, task: str) -> Path:
    """The log file of one task, named as squeue names it: ``<job>_<index>`` in an array, ``<job>`` for one worker
    (submitit submits a single job then): submitit's ``<job>_<index>_0_log.out`` or ``<job>_0_log.out``."""
    return log_dir(spec) / f"{task}_0_log.out"


def submit(spec: SweepSpec, spec_path: Path, study, slurm: SlurmSpec, worker: Callable[[argparse.Namespace], int],
           ) -> str:
    """Submit ``spec.workers`` array tasks with submitit, each running ``worker`` (``cvae sweep worker``'s
    function); record the job in the study; returns the array's id.

    Raises:
        LaunchError: sbatch refused the array (its message).
    """
    import submitit
    from submitit.core.utils import UncompletedJobError

    keep_spec(spec, spec_path)
    folder = log_dir(spec)
    folder.mkdir(parents=True, exist_ok=True)
    storage_url, password = split_password(spec.storage)
    if password:  # to the tasks through their environment, never a file or a command line
        os.environ[PASSWORD_ENV] = password
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=0, python=shlex.quote(sys.executable))
    params: dict[str, Any] = {
        "job_name": f"cvae-{spec.name}"[:64], "time": slurm.time, "cpus_per_task": slurm.cpus,
        "array_parallelism": slurm.parallel or spec.workers, "stderr_to_stdout": True,
        # SIGTERM, as scancel and preemption send it: the worker re-queues its trial (submitit's default is
        # USR2, for its own checkpointing).
        "additional_parameters": {"signal": f"TERM@{slurm.signal_delay}", **slurm.sbatch},
    }
    for key, value in (("partition", slurm.partition), ("account", slurm.account), ("qos", slurm.qos),
                       ("mem", slurm.mem), ("gres", f"gpu:{slurm.gpus}" if slurm.gpus else None),
                       ("setup", list(slurm.setup) or None)):
        if value is not None:
            params[key] = value
    executor.update_parameters(**params)
    task = ArrayTask(worker=worker, spec_path=str(Path(spec_path).resolve()), storage_url=storage_url, cwd=os.getcwd(),
                     threads=slurm.cpus)
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # submitit prints sbatch's refusal; it is our one line
            jobs = executor.map_array(task, list(range(spec.workers)))
    except (UncompletedJobError, OSError, subprocess.SubprocessError) as err:
        text = " ".join(str(err).split()) or type(err).__name__
        raise LaunchError(f"sbatch refused the job array: {text}") from None
    array_id = str(jobs[0].job_id).split("_")[0]  # one worker: a single job, no array
    record = {"id": array_id, "tasks": spec.workers, "logs": str(folder),
              "submitted": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    study.set_user_attr(JOBS_ATTR, [*study.user_attrs.get(JOBS_ATTR, []), record])
    return array_id


# -- states ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskState:
    task: str
    """``<array>_<index>`` (or ``<array>_[0-3]`` for tasks not started yet)."""
    state: str
    elapsed: str = ""
    reason: str = ""

    @property
    def active(self) -> bool:
        return self.state not in TERMINAL


def _run(*cmd: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None


def task_states(job_id: str) -> tuple[list[TaskState], str]:
    """The states of a job array's tasks: ``squeue`` (pending and running ones, and finished ones the controller
    still holds), else ``sacct`` (the accounting database). Returns (states, a note when neither knows the job:
    why, else "")."""
    done = _run("squeue", "-h", "-r", "-t", "all", "-j", job_id, "-o", "%i|%T|%M|%r")
    if done is not None and done.returncode == 0 and done.stdout.strip():
        return [TaskState(*(line.split("|") + ["", "", ""])[:4]) for line in done.stdout.strip().splitlines()], ""
    if done is None:
        note = "no squeue on PATH" if shutil.which("squeue") is None else "squeue did not answer"
    elif done.returncode != 0 and "Invalid job id" not in done.stderr:
        note = f"squeue: {' '.join(done.stderr.split())[:200]}"
    else:
        note = "no longer in squeue"
    acct = _run("sacct", "-X", "-n", "-P", "-j", job_id, "-o", "JobID,State,Elapsed")
    if acct is not None and acct.returncode == 0 and acct.stdout.strip():
        states = []
        for line in acct.stdout.strip().splitlines():
            task, state, elapsed = (line.split("|") + ["", ""])[:3]
            states.append(TaskState(task, state.split()[0] if state else "UNKNOWN", elapsed))
        return states, ""
    if acct is not None and acct.returncode != 0:
        note += f"; sacct: {' '.join(acct.stderr.split())[:200]}"
    return [], note


def jobs_text(study) -> str:
    """``cvae sweep status``'s lines about the study's Slurm job arrays (empty when it has none)."""
    lines = []
    for job in study.user_attrs.get(JOBS_ATTR, []):
        states, note = task_states(str(job["id"]))
        where = f"logs {job.get('logs')}"
        head = f"Slurm job {job['id']} ({job.get('tasks')} worker(s), submitted {job.get('submitted')}, {where})"
        lines.append(f"{head}: " + (", ".join(_state_text(s) for s in states) if states else f"state unknown ({note})"))
    return "\n".join(lines)


def _state_text(s: TaskState) -> str:
    extra = s.elapsed if s.state == "RUNNING" else s.reason if s.state == "PENDING" and s.reason not in ("", "None") else ""
    return f"{s.task} {s.state}" + (f" ({extra})" if extra else "")


# -- the run --------------------------------------------------------------------------------------------------------
def launch(spec: SweepSpec, spec_path: Path, study, slurm: SlurmSpec, *, worker: Callable[[argparse.Namespace], int],
           live: bool, detach: bool = False) -> int:
    """Submit the array (each task runs ``worker``: see :class:`ArrayTask`), then (unless ``detach``) watch it until every task has ended and write the sweep's closing
    records (the trials table, ``trials.csv``, the W&B summary run). Ctrl-C or SIGTERM while watching cancels the
    array: its workers re-queue their trials. Returns 0, or 130 when interrupted.

    Raises:
        LaunchError: sbatch refused the array, a worker stopped on a fault, or the array ended with trials left.
    """
    earlier = [str(job["id"]) for job in study.user_attrs.get(JOBS_ATTR, [])
               if any(s.active for s in task_states(str(job["id"]))[0])]
    if earlier:
        print(f"cvae sweep run: note: Slurm job(s) {', '.join(earlier)} of this sweep still run or wait: this array "
              f"adds {spec.workers} worker(s) to theirs", file=sys.stderr, flush=True)
    array_id = submit(spec, spec_path, study, slurm, worker)
    gpus = f"{slurm.gpus} GPU(s)" if slurm.gpus else "no GPU"
    print(f"sweep {spec.name}: Slurm job array {array_id} submitted: {spec.workers} worker(s), each {gpus}, "
          f"{slurm.cpus} CPU(s), {slurm.mem or 'default'} memory, time limit {slurm.time} min; storage "
          f"{mask_url(spec.storage)}; logs in {log_dir(spec)}", flush=True)
    if detach:
        print(f"follow it with `cvae sweep status {spec_path}` (or squeue -j {array_id}); stop it with "
              f"`scancel {array_id}` (running trials are re-queued)", flush=True)
        return 0

    def on_term(signum, frame):  # noqa: ARG001 - the signal module's signature
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    interrupted = False
    try:
        try:
            states = _watch(spec, study, array_id, live=live and sys.stdout.isatty())
        except KeyboardInterrupt:
            interrupted = True
            print(f"\ninterrupted: cancelling Slurm job {array_id} (its workers re-queue their running trials)...",
                  file=sys.stderr, flush=True)
            _run("scancel", array_id)
            states = _wait_ended(array_id, 120)
    finally:
        signal.signal(signal.SIGTERM, previous)
    try:
        final_report(spec, study)
    except StorageError as err:
        raise LaunchError(f"{err}; the job array has ended and every trial's records are kept") from None
    return 130 if interrupted else _outcome(spec, study, array_id, states)


def _wait_ended(array_id: str, timeout_s: float) -> list[TaskState]:
    deadline = time.monotonic() + timeout_s
    states: list[TaskState] = []
    with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: stop waiting
        while time.monotonic() < deadline:
            states, note = task_states(array_id)
            if (not states and note) or (states and not any(s.active for s in states)):
                break
            time.sleep(1)
    return states


def _watch(spec: SweepSpec, study, array_id: str, *, live: bool) -> list[TaskState]:
    """Poll until no task of the array is active; returns the tasks' last states."""
    from cvae.sweeps.report import summary_line, trials_table

    last_print, last_states, warned = 0.0, "", False
    view = None
    if live:
        from rich.live import Live

        view = Live(refresh_per_second=1, transient=True)
        view.start()
    try:
        while True:
            states, note = task_states(array_id)
            ended = (states and not any(s.active for s in states)) or (not states and note.startswith("no longer"))
            if not states and not ended and not warned:
                print(f"cvae sweep run: warning: cannot see Slurm job {array_id} ({note}); still watching",
                      file=sys.stderr, flush=True)
                warned = True
            text = ", ".join(_state_text(s) for s in states)
            try:
                if view is not None:
                    from rich.console import Group

                    view.update(Group(trials_table(spec, study), summary_line(spec, study, spec.workers),
                                      f"Slurm job {array_id}: {text}"))
                elif time.monotonic() - last_print > 30 or text != last_states:
                    print(f"{summary_line(spec, study, spec.workers)} | Slurm {text}", flush=True)
                    last_print, last_states = time.monotonic(), text
            except StorageError as err:  # this process only watches: the workers wait for the server themselves
                print(f"cvae sweep run: warning: {err}; watching the job array", file=sys.stderr, flush=True)
            if ended:
                return states
            time.sleep(POLL_S)
    finally:
        if view is not None:
            view.stop()


def _outcome(spec: SweepSpec, study, array_id: str, states: list[TaskState]) -> int:
    """0 when the array's workers ran the sweep to its end; else the fault, as a LaunchError."""
    from cvae.sweeps.queue import orphaned
    from optuna.trial import TrialState

    faults = []
    for s in states:
        if s.state in FAULTS:
            path = task_log(spec, s.task)
            tail = _last_line(path)
            ends = f"its log ({path}) ends: {tail[0]}" if tail else f"its log ({path}) is empty"
            faults.append((s, ends, bool(tail) and "error:" in tail[0]))
    if faults:
        faults.sort(key=lambda f: f[0].task)
        code = EXIT_BAD_INPUT if all(bad_input for *_, bad_input in faults) else EXIT_FAILED
        raise LaunchError("; ".join(f"array task {s.task} ended {s.state}; {ends}" for s, ends, _ in faults), code)
    trials = study.get_trials(deepcopy=False)
    if spec.until_stopped or spec.metric.reached_by(trials) is not None:
        return 0
    stale = {o.number for o in orphaned(study, spec)}
    left = [t for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING) and t.number not in stale]
    if left:
        ended = ", ".join(f"{s.task} {s.state}" for s in states) or "no state known"
        raise LaunchError(f"Slurm job {array_id} ended ({ended}) with {len(left)} trial(s) not finished: run "
                          "`cvae sweep run --launcher slurm` again; each resumes from its last checkpoint",
                          EXIT_FAILED)
    return 0


def _last_line(path: Path) -> list[str]:
    """The line that says why a task's worker stopped: its last ``cvae ...: error:`` line, else the log's last
    line that is not Slurm's own (``srun: error: ... Exited with exit code 2``); [] for an empty log."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return []
    ours = [line for line in lines if line.startswith("cvae ") and ": error: " in line]
    if ours:
        return ours[-1:]
    return [line for line in lines if not line.startswith(("srun:", "slurmstepd"))][-1:] or lines[-1:]


def options_of(args: Any) -> Mapping[str, Any]:
    """The Slurm flags of ``cvae sweep run``'s parsed arguments, by ``slurm`` key."""
    return {key: getattr(args, f"slurm_{key}", None) for key in FLAGS}


__all__ = ["ArrayTask", "JOBS_ATTR", "TaskState", "jobs_text", "launch", "options_of", "resolve", "submit",
           "task_states"]
