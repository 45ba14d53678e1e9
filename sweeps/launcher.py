"""`cvae sweep run`'s process supervision on this machine: the worker processes (the cores and GPUs dealt
out, the storage password in their environment, a worker that outlives its parent), the run lock shared with
another run of the same sweep, Ctrl-C and SIGTERM passed on, the live view, and the sweep's closing records
(the trials table, ``trials.csv``, the W&B summary run).

:func:`launch` returns the run's exit code, or raises :class:`LaunchError` with the one line to print.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from cvae.sweeps.spec import SweepSpec
from cvae.sweeps.storage import StorageError, mask_url, split_password

from cvae.console import EXIT_BAD_INPUT, EXIT_FAILED
from cvae.schema import SPEC_YAML, TRIALS_CSV
from cvae.secrets import PASSWORD_ENV

log = logging.getLogger("cvae")


class LaunchError(RuntimeError):
    """The run ended on a fault: ``str()`` is the line to print, ``code`` the exit code."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


_RECEIVED = [signal.SIGINT]
"""The signal that interrupted the run (SIGINT: Ctrl-C), passed on to its workers."""


def keep_spec(spec: SweepSpec, spec_path: Path | None = None) -> None:
    """Make the sweep's ``output_dir`` and keep a copy of its spec there (``spec.yaml``): the records say what
    made them. Without ``spec_path`` (a spec made in Python), the spec as :attr:`SweepSpec.written`."""
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    if spec_path is None:
        import yaml

        (spec.output_dir / SPEC_YAML).write_text(yaml.safe_dump(dict(spec.written), sort_keys=False))
    else:
        shutil.copyfile(spec_path, spec.output_dir / SPEC_YAML)


def prepare(spec: SweepSpec, *, data_only: bool = False):
    """What a run needs before it starts, checked before any folder or study is created: the spec's dataset
    generated (``synth:``) and in the lab's layout, then the study opened and its queue filled. Returns the
    study (None with ``data_only``).

    Raises:
        DatasetError, ValueError: the dataset is missing or not in the lab's layout (naming the folder).
        StorageError, SweepError: the storage cannot be opened, or the study is not this spec's.
    """
    from cvae.sweeps.queue import open_study
    from cvae.sweeps.storage import open_storage

    _prepare_data(spec)
    _check_data(spec)
    return None if data_only else open_study(spec, open_storage(spec), fill_queue=True)


def launch(spec: SweepSpec, spec_path: Path, study, *, live: bool) -> int:
    """Run ``spec``'s workers on this machine until the study is done, a worker stops on a fault, or the run is
    interrupted (Ctrl-C, or SIGTERM from `docker stop`, `kill` or a Slurm preemption: the workers get the same
    signal and re-queue their trials). Returns 0, or 130 when interrupted.

    Raises:
        LaunchError: a worker stopped on a fault, or the study storage was lost.
    """
    def on_term(signum, frame):  # noqa: ARG001 - the signal module's signature
        _RECEIVED[0] = signal.SIGTERM
        raise KeyboardInterrupt

    _RECEIVED[0] = signal.SIGINT
    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        return _supervise(spec, spec_path, study, live=live)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _supervise(spec: SweepSpec, spec_path: Path, study, *, live: bool) -> int:
    keep_spec(spec, spec_path)
    logs = spec.output_dir / "logs"
    logs.mkdir(exist_ok=True)
    lock, others = _run_lock(spec)
    threads = worker_threads(spec.workers + others.get("workers", 0))
    suffix = "" if not others else f".{os.getpid()}"
    if others:
        print(f"cvae sweep run: warning: another `cvae sweep run` of this sweep runs on this machine (pid "
              f"{others.get('pid')}, {others.get('workers')} worker(s)): this run's {spec.workers} worker(s) get "
              f"{threads} thread(s) each and log to worker-<i>{suffix}.log", file=sys.stderr, flush=True)
    sets = "parameter sets until stopped (Ctrl-C)" if spec.until_stopped else f"{spec.n_configs()} parameter set(s)"
    print(f"sweep {spec.name}: {spec.method}, {sets} x {spec.replicates} replicate(s), "
          f"{spec.workers} worker(s) x {threads} thread(s), storage {mask_url(spec.storage)}, logs in {logs}",
          flush=True)
    # A password given with --storage goes to the workers through their environment, not their command
    # lines (which `ps` shows to every user).
    storage_url, password = split_password(spec.storage)
    cmd = [sys.executable, "-m", "cvae", "sweep", "worker", str(spec_path), "--storage", storage_url,
           "--threads", str(threads)]
    gpus = _local_gpus()
    procs = []
    interrupted = False
    try:
        for i in range(spec.workers):
            fh = open(logs / f"worker-{i}{suffix}.log", "a")  # noqa: SIM115 - kept open for the child's lifetime
            env = {**os.environ, "CVAE_WORKER": str(i), **({PASSWORD_ENV: password} if password else {})}
            if gpus:  # one GPU per worker, dealt round-robin when there are more workers than GPUs
                env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
            procs.append((subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                           preexec_fn=_die_with_parent), fh))
        try:
            _watch(spec, study, [p for p, _ in procs], live=live and sys.stdout.isatty())
        except StorageError as err:  # this process only watches: the workers wait for the server themselves
            print(f"cvae sweep run: warning: {err}; waiting for the workers", file=sys.stderr, flush=True)
            for p, _ in procs:
                p.wait()
    except KeyboardInterrupt:
        interrupted = True
        cause = "Ctrl-C" if _RECEIVED[0] == signal.SIGINT else signal.Signals(_RECEIVED[0]).name
        print(f"\ninterrupted ({cause}): stopping workers (their running trials are re-queued)...", file=sys.stderr)
        _stop_workers([p for p, _ in procs], _RECEIVED[0])
    for _, fh in procs:
        fh.close()
    codes = [p.wait() for p, _ in procs]
    lost = None
    try:
        final_report(spec, study)
        reached = spec.metric.reached_by(study.get_trials(deepcopy=False))
        if reached is not None:
            print(f"sweep {spec.name}: trial {reached} reached metric.target {spec.metric.target:g}: the sweep "
                  "stopped there (queued trials were left queued)", flush=True)
    except StorageError as err:  # the server is gone: what the trials recorded is on disk, nothing to report
        lost = str(err)
    lock.close()
    if interrupted:
        return 130
    if lost is not None:
        raise LaunchError(f"{lost}; every trial's records are kept: run again once the storage is back (a trial "
                          "that was running resumes from its last checkpoint)")
    if any(c not in (0,) for c in codes):
        tails = []
        for i, c in enumerate(codes):
            if c:
                tails.append(_worker_exit(i, c, logs / f"worker-{i}{suffix}.log"))
        # A worker that stopped on bad input (a dataset, a disk, W&B) exits 2: so does the run.
        code = EXIT_BAD_INPUT if all(c in (0, EXIT_BAD_INPUT) for c in codes) else EXIT_FAILED
        raise LaunchError("; ".join(tails), code)
    return 0


def _worker_exit(i: int, code: int, log_file: Path) -> str:
    """What a worker's exit says: the signal that killed it, or its code and the last line of its log."""
    try:
        last = log_file.read_text(errors="replace").strip().splitlines()[-1:]
    except OSError:
        last = []
    ends = f"its log ({log_file}) ends: {last[0]}" if last else f"its log ({log_file}) is empty"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return (f"worker {i} was killed by {name} (its running trial is re-queued once its heartbeat is stale); "
                f"{ends}")
    return f"worker {i} exited {code}; {ends}"


def _stop_workers(procs: list[subprocess.Popen], sig: int = signal.SIGINT, grace_s: float = 60) -> None:
    """Send ``sig`` (SIGINT or SIGTERM) to each live worker (its trial is failed and re-queued), wait up to
    ``grace_s``, then SIGKILL.

    A second Ctrl-C / SIGTERM while waiting kills them at once: their trials are re-queued when stale.
    """
    for p in procs:
        if p.poll() is None:
            p.send_signal(sig)
    deadline = time.monotonic() + grace_s
    try:
        for p in procs:
            try:
                p.wait(timeout=max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.kill()


def threads_from_env() -> int | None:
    """``$CVAE_THREADS``, the torch CPU threads of each worker; None when it is unset or empty (compose passes it
    through empty).

    Raises:
        ValueError: it is set to something other than a positive integer.
    """
    value = os.environ.get("CVAE_THREADS", "").strip()
    if value and (not value.isdigit() or int(value) < 1):
        raise ValueError(f"CVAE_THREADS={value!r}: the torch threads of each worker must be a positive integer")
    return int(value) if value else None


def worker_threads(workers: int) -> int:
    """torch CPU threads for each of ``workers`` workers on this machine: ``$CVAE_THREADS`` when set; else the
    cores this process may use (its CPU affinity: a Slurm allocation, a container's cpuset, ``taskset``; not
    every core of the machine) shared out, at most ``$OMP_NUM_THREADS`` when that is set. Oversubscribed OpenMP
    threads are far slower than the same work on fewer threads (docs/benchmarks.md#sweep-efficiency).

    Raises:
        ValueError: ``$CVAE_THREADS`` is set to something other than a positive integer.
    """
    explicit = threads_from_env()
    if explicit:
        return explicit
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // max(1, workers))
    omp = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return min(threads, int(omp)) if omp.isdigit() and int(omp) > 0 else threads


def _die_with_parent() -> None:
    """In a worker before exec (Linux): get SIGTERM when `cvae sweep run` dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _run_lock(spec) -> tuple[object, dict]:
    """Hold ``<output_dir>/.run.lock`` while this run lives; returns (its file, the holder's info when another
    `cvae sweep run` of this sweep already holds it on this machine, else {})."""
    import fcntl
    import json
    import socket

    path = spec.output_dir / ".run.lock"
    fh = open(path, "a+")  # noqa: SIM115 - held until the run ends
    me = {"pid": os.getpid(), "workers": spec.workers, "host": socket.gethostname()}
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        try:
            holder = json.loads(path.read_text() or "{}")
        except ValueError:
            holder = {}
        return fh, holder if holder.get("host") == me["host"] else {}
    fh.seek(0)
    fh.truncate()
    fh.write(json.dumps(me))
    fh.flush()
    return fh, {}


def _local_gpus() -> list[str]:
    """The GPUs this process may use (``CUDA_VISIBLE_DEVICES`` when set), without initialising CUDA here."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def _watch(spec, study, procs, *, live: bool) -> None:
    from cvae.sweeps.report import summary_line, trials_table

    if live:
        from rich.console import Group
        from rich.live import Live

        # Transient: the final report below prints the finished table once.
        with Live(refresh_per_second=1, transient=True) as view:
            while any(p.poll() is None for p in procs):
                view.update(Group(trials_table(spec, study), summary_line(spec, study, spec.workers)))
                time.sleep(2)
            view.update(Group(trials_table(spec, study), summary_line(spec, study, spec.workers)))
        return
    last = 0.0
    while any(p.poll() is None for p in procs):
        if time.monotonic() - last > 30:
            print(summary_line(spec, study, spec.workers), flush=True)
            last = time.monotonic()
        time.sleep(1)


def final_report(spec, study) -> None:
    from cvae.sweeps.report import best_config_text, rows, summary_line, trials_table
    from rich.console import Console

    # Off a terminal (a log file, CI) rich would wrap at 80 columns; a log can be wide.
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(trials_table(spec, study, title=f"sweep {spec.name}: trials"))
    console.print(summary_line(spec, study, spec.workers))
    console.print(best_config_text(spec, study))
    table = rows(study)
    if table:
        columns = list(dict.fromkeys(k for r in table for k in r))
        with (spec.output_dir / TRIALS_CSV).open("w", newline="") as fh:
            writer = csv.DictWriter(fh, columns)
            writer.writeheader()
            writer.writerows(table)
    _summary_run(spec, study, table)


def _summary_run(spec, study, table) -> None:
    import yaml
    from cvae.sweeps.tracking import log_sweep_summary

    from cvae.tracking import resolve_wandb_mode

    mode = resolve_wandb_mode(spec.wandb.mode)
    if mode == "disabled" or not table:
        return
    from cvae.analysis.importance import param_importances
    from cvae.analysis.load import from_study

    # The analysis's importances: none (and why) where they would be noise, Optuna's warnings kept quiet.
    importances = param_importances(from_study(study))
    if not importances:
        log.info("no parameter importances in the W&B summary run: %s", importances.reason)
    try:
        log_sweep_summary(project=spec.wandb.project, entity=spec.wandb.entity, group=spec.name,
                          name=f"{spec.name}-summary", run_id=f"{spec.name}-{study.user_attrs.get('cvae:uid')}-summary",
                          mode=mode, trials=table, importances=importances, spec_text=yaml.safe_dump(dict(spec.written), sort_keys=False))
    except Exception as err:  # noqa: BLE001 - the trials are recorded; a failed summary run is only reported
        log.warning("W&B summary run failed: %s", err)


def _prepare_data(spec) -> None:
    """Generate the spec's dataset (``synth:``) into base.DR when asked for; the manifest makes it a no-op after."""
    if not spec.synth:
        return
    from cvae.core.synth import generate_dataset

    root = spec.data_root
    if not root:
        raise ValueError(f"{spec.source}: synth needs base.DR (or a constant DR parameter), the folder to generate into")
    summary = generate_dataset(root, **dict(spec.synth))  # SynthSpec has checked and typed every option
    if not summary.get("cached"):
        log.info("generated dataset %s in %.1f s", root, summary["seconds"])


def _check_data(spec) -> None:
    """The dataset every trial reads exists in the lab's layout: checked before a study or folder is created.

    Raises:
        DatasetError: naming the folder or file that is missing.
    """
    from cvae.core.layout import paired_frames
    from cvae.sweeps.space import representative_params

    roots = {p.get("DR", spec.data_root) for p in representative_params(spec) or [{}]}
    for root in roots:
        if not root:
            raise ValueError(f"{spec.source}: base.DR (or a constant DR parameter) is required: the dataset root "
                             "(`cvae data synth` makes one)")
        for split in ("train", "val"):
            folder = Path(root) / split
            paired_frames(folder / f"{split}_img", folder / f"{split}_label")
