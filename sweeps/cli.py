"""``cvae sweep run | worker | init | dashboard | status | best | plan``."""

from __future__ import annotations

import argparse
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

from cvae.core.cli import EXIT_BAD_INPUT, EXIT_FAILED
from cvae.core.cli import fail as _plain_fail

from cvae.schema import CONFIG_YAML, RUN_DIR, SPEC_YAML, TRIALS_CSV, run_name
from cvae.secrets import mask_secrets

log = logging.getLogger("cvae")


def fail(command: str, message: str, code: int = EXIT_BAD_INPUT) -> int:
    """One error line, every storage password in it masked, and the exit code."""
    return _plain_fail(command, mask_secrets(message), code)


def register(sub: argparse._SubParsersAction) -> None:
    sweep = sub.add_parser("sweep", help="run a sweep from a YAML spec: an Optuna study of tracked trials")
    ssub = sweep.add_subparsers(dest="sweep_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("spec", help="sweep spec (YAML)")
        p.add_argument("--storage", help="study storage URL (overrides the spec's)")

    run = ssub.add_parser("run", help="create/continue the study and run its workers with a live view")
    common(run)
    run.add_argument("--workers", type=int, help="local worker processes (overrides the spec's)")
    run.add_argument("--no-live", dest="live", action="store_false", help="plain log lines, no live table")
    run.set_defaults(func=_cmd_run)

    worker = ssub.add_parser("worker", help="join a study from another shell or machine and run trials")
    common(worker)
    worker.add_argument("--threads", type=int, default=int(os.environ.get("CVAE_THREADS") or 0) or None,
                        help="torch CPU threads for this worker's trials (default $CVAE_THREADS, else all cores); "
                        "with N workers on one machine give cores/N: oversubscribed OpenMP threads are ~10x slower")
    worker.add_argument("--max-trials", type=int, help="stop after this many trials")
    worker.set_defaults(func=_cmd_worker)

    init = ssub.add_parser("init", help="generate the spec's dataset, create the study and queue its trials; "
                           "start no worker (then start workers anywhere)")
    common(init)
    init.add_argument("--data-only", action="store_true",
                      help="only generate the spec's dataset (synth:): on each machine without a shared filesystem")
    init.set_defaults(func=_cmd_init)

    dashboard = ssub.add_parser("dashboard", help="serve optuna-dashboard for the study's storage (127.0.0.1)")
    common(dashboard)
    dashboard.add_argument("--host", default="127.0.0.1",
                           help="address to listen on (default 127.0.0.1: the dashboard has no authentication; "
                           "from elsewhere use an SSH tunnel)")
    dashboard.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    dashboard.set_defaults(func=_cmd_dashboard)

    retry = ssub.add_parser("retry", help="re-queue failed (or pruned) trials with the same parameters; each "
                            "resumes from its last checkpoint in the same run folder and W&B run")
    common(retry)
    retry.add_argument("--state", action="append", choices=("failed", "pruned"),
                       help="which finished trials to re-queue (repeatable; default failed)")
    retry.add_argument("--trial", type=int, nargs="+", action="extend", default=[], metavar="N",
                       help="re-queue only these trials' retry chains (--trial 3 5, or repeated)")
    retry.set_defaults(func=_cmd_retry)

    for name, text, func in (("status", "a table of the study's trials", _cmd_status),
                             ("best", "the best trial and its configuration", _cmd_best),
                             ("plan", "dry run: the trials, branches, epochs and an estimated time", _cmd_plan)):
        p = ssub.add_parser(name, help=text)
        common(p)
        p.set_defaults(func=func)


class _MaskSecrets(logging.Filter):
    """Mask storage passwords in every log line (a library's error text can carry the URL)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def _setup_logging(prefix: str = "") -> None:
    logging.basicConfig(level=logging.INFO, format=f"{prefix}%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr, force=True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_MaskSecrets())


def _load(args: argparse.Namespace, workers: int | None = None, *, warn: str | None = None):
    """The validated spec; with ``warn`` (the command's name), print what `cvae train` would warn about once."""
    from cvae.sweeps.spec import load_spec

    spec = load_spec(args.spec, storage=args.storage, workers=workers)
    for message in spec.warnings if warn else ():
        print(f"cvae sweep {warn}: warning: {args.spec}: {message}", file=sys.stderr, flush=True)
    return spec


def _prepare_data(spec) -> None:
    """Generate the spec's dataset (``synth:``) into base.DR when asked for; the manifest makes it a no-op after."""
    if not spec.synth:
        return
    from cvae.core.synth import generate_dataset

    root = spec.data_root
    if not root:
        raise ValueError(f"{spec.source}: synth needs base.DR (or a constant DR parameter), the folder to generate into")
    options = dict(spec.synth)
    if "size" in options and isinstance(options["size"], str):
        options["size"] = tuple(int(v) for v in options["size"].lower().split("x"))
    summary = generate_dataset(root, **options)
    if not summary.get("cached"):
        log.info("generated dataset %s in %.1f s", root, summary["seconds"])


def _check_data(spec) -> None:
    """The dataset every trial reads exists in the lab's layout: checked before a study or folder is created.

    Raises:
        DatasetError: naming the folder or file that is missing.
    """
    from cvae.core.data import paired_frames
    from cvae.sweeps.spec import representative_params

    roots = {p.get("DR", spec.data_root) for p in representative_params(spec) or [{}]}
    for root in roots:
        if not root:
            raise ValueError(f"{spec.source}: base.DR (or a constant DR parameter) is required: the dataset root "
                             "(`cvae data synth` makes one)")
        for split in ("train", "val"):
            folder = Path(root) / split
            paired_frames(folder / f"{split}_img", folder / f"{split}_label")


def _errors(*, data: bool = False):
    """The errors a command turns into one line; the dataset's only where asked for (``cvae.core.data``
    imports torch, which ``status``, ``best`` and ``retry`` do without)."""
    from cvae.sweeps.queue import SweepError
    from cvae.sweeps.spec import SpecError
    from cvae.sweeps.storage import StorageError

    if data:
        from cvae.core.data import DatasetError

        return SpecError, StorageError, SweepError, DatasetError
    return SpecError, StorageError, SweepError


def _cmd_run(args: argparse.Namespace) -> int:
    # `docker stop`, Slurm preemption and `kill` send SIGTERM: stop like Ctrl-C (workers told, trials re-queued);
    # the workers get the signal this run got, so that their trials' reasons say which it was.
    def on_term(signum, frame):  # noqa: ARG001 - the signal module's signature
        _RECEIVED[0] = signal.SIGTERM
        raise KeyboardInterrupt

    _RECEIVED[0] = signal.SIGINT
    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        return _run(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


_RECEIVED = [signal.SIGINT]
"""The signal that interrupted `cvae sweep run` (SIGINT: Ctrl-C), passed on to its workers."""


def _run(args: argparse.Namespace) -> int:
    from cvae.sweeps.queue import open_study
    from cvae.sweeps.storage import mask_url, open_storage, split_password

    SpecError, StorageError, SweepError, DatasetError = _errors(data=True)
    _setup_logging()
    try:
        spec = _load(args, args.workers, warn="run")
        _prepare_data(spec)
        _check_data(spec)
        storage = open_storage(spec)
        study = open_study(spec, storage, fill_queue=True)
    except (SpecError, StorageError, SweepError, DatasetError, ValueError) as err:
        return fail("sweep run", str(err))
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.spec, spec.output_dir / SPEC_YAML)
    logs = spec.output_dir / "logs"
    logs.mkdir(exist_ok=True)
    lock, others = _run_lock(spec)
    threads = max(1, (os.cpu_count() or 1) // (spec.workers + others.get("workers", 0)))
    suffix = "" if not others else f".{os.getpid()}"
    if others:
        print(f"cvae sweep run: warning: another `cvae sweep run` of this sweep runs on this machine (pid "
              f"{others.get('pid')}, {others.get('workers')} worker(s)): this run's {spec.workers} worker(s) get "
              f"{threads} thread(s) each and log to worker-<i>{suffix}.log", file=sys.stderr, flush=True)
    print(f"sweep {spec.name}: {spec.method}, {spec.n_configs()} parameter set(s) x {spec.replicates} replicate(s), "
          f"{spec.workers} worker(s) x {threads} thread(s), storage {mask_url(spec.storage)}, logs in {logs}",
          flush=True)
    # A password given with --storage goes to the workers through their environment, not their command
    # lines (which `ps` shows to every user).
    storage_url, password = split_password(spec.storage)
    cmd = [sys.executable, "-m", "cvae", "sweep", "worker", str(args.spec), "--storage", storage_url,
           "--threads", str(threads)]
    gpus = _local_gpus()
    procs = []
    interrupted = False
    try:
        for i in range(spec.workers):
            fh = open(logs / f"worker-{i}{suffix}.log", "a")  # noqa: SIM115 - kept open for the child's lifetime
            env = {**os.environ, "CVAE_WORKER": str(i), **({"CVAE_DB_PASSWORD": password} if password else {})}
            if gpus:  # one GPU per worker, dealt round-robin when there are more workers than GPUs
                env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
            procs.append((subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                           preexec_fn=_die_with_parent), fh))
        try:
            _watch(spec, study, [p for p, _ in procs], live=args.live and sys.stdout.isatty())
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
        _final_report(spec, study)
        reached = spec.target_reached_in(study.get_trials(deepcopy=False))
        if reached is not None:
            print(f"sweep {spec.name}: trial {reached} reached metric.target {spec.objective.target:g}: the sweep "
                  "stopped there (queued trials were left queued)", flush=True)
    except StorageError as err:  # the server is gone: what the trials recorded is on disk, nothing to report
        lost = str(err)
    lock.close()
    if interrupted:
        return 130
    if lost is not None:
        return fail("sweep run", f"{lost}; every trial's records are kept: run again once the storage is back "
                                 "(a trial that was running resumes from its last checkpoint)")
    if any(c not in (0,) for c in codes):
        tails = []
        for i, c in enumerate(codes):
            if c:
                tails.append(_worker_exit(i, c, logs / f"worker-{i}{suffix}.log"))
        # A worker that stopped on bad input (a dataset, a disk, W&B) exits 2: so does the run.
        code = EXIT_BAD_INPUT if all(c in (0, EXIT_BAD_INPUT) for c in codes) else EXIT_FAILED
        return fail("sweep run", "; ".join(tails), code)
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


def _final_report(spec, study) -> None:
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
    from cvae.sweeps.spec import dump_spec_summary
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
                          mode=mode, trials=table, importances=importances, spec_text=dump_spec_summary(spec))
    except Exception as err:  # noqa: BLE001 - the trials are recorded; a failed summary run is only reported
        log.warning("W&B summary run failed: %s", err)


def _cmd_worker(args: argparse.Namespace) -> int:
    from cvae.sweeps.runner import run_worker

    from cvae.tracking import TrackingError

    SpecError, StorageError, SweepError, DatasetError = _errors(data=True)
    worker = os.environ.get("CVAE_WORKER")
    _setup_logging(f"[worker {worker}] " if worker else "")
    # Ctrl-C and a scheduler's SIGTERM (docker stop, Slurm preemption) stop the same way: the trial is re-queued.
    from cvae.sweeps.runner import install_stop_handlers

    install_stop_handlers()
    try:
        spec = _load(args)
        stats = run_worker(spec, storage_url=args.storage, num_threads=args.threads, max_trials=args.max_trials)
    except (SpecError, StorageError, SweepError, DatasetError, TrackingError) as err:
        # Bad input or a fault of the machine (dataset, disk, W&B, storage): fix it and run again.
        return fail("sweep worker", str(err))
    except KeyboardInterrupt:
        print("worker interrupted: its running trial was re-queued", file=sys.stderr)
        return 130
    log.info("worker done: %d trial(s): %d complete, %d pruned, %d failed", stats.trials, stats.complete,
             stats.pruned, stats.failed)
    return 0


def _cmd_init(args: argparse.Namespace) -> int:
    import optuna
    from cvae.sweeps.queue import open_study
    from cvae.sweeps.storage import mask_url, open_storage

    SpecError, StorageError, SweepError, DatasetError = _errors(data=True)
    _setup_logging()
    try:
        spec = _load(args, warn="init")
        _prepare_data(spec)
        _check_data(spec)
        if args.data_only:
            print(f"sweep {spec.name}: dataset ready in {spec.data_root}", flush=True)
            return 0
        study = open_study(spec, open_storage(spec), fill_queue=True)
    except (SpecError, StorageError, SweepError, DatasetError, ValueError) as err:
        return fail("sweep init", str(err))
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.spec, spec.output_dir / SPEC_YAML)
    queued = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
    print(f"sweep {spec.name}: study ready in {mask_url(spec.storage)}, {queued} trial(s) queued; start workers "
          f"with `cvae sweep worker {args.spec} --storage URL`", flush=True)
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from cvae.sweeps.dashboard import serve_dashboard

    SpecError, StorageError, SweepError = _errors()
    # `docker stop`, `kill`: stop serving like Ctrl-C (exit 0), not with a traceback.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        spec = _load(args)
        serve_dashboard(spec, storage_url=args.storage, host=args.host, port=args.port)
    except (SpecError, StorageError) as err:
        return fail("sweep dashboard", str(err))
    except OSError as err:
        return fail("sweep dashboard", f"cannot listen on {args.host}:{args.port}: {err.strerror or err}")
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _open_existing(args: argparse.Namespace):
    import optuna
    from cvae.sweeps.storage import open_storage

    spec = _load(args)
    storage = open_storage(spec)
    try:
        return spec, optuna.load_study(study_name=spec.name, storage=storage)
    except KeyError:
        raise ValueError(f"no study {spec.name!r} in {mask_secrets(spec.storage)}: start it with "
                         f"`cvae sweep run {args.spec}`") from None


def _cmd_retry(args: argparse.Namespace) -> int:
    from cvae.sweeps.queue import retry_trials

    SpecError, StorageError, SweepError = _errors()
    try:
        spec, study = _open_existing(args)
        done = retry_trials(study, states=tuple(args.state or ("failed",)), numbers=tuple(args.trial))
    except (SpecError, StorageError, ValueError) as err:
        return fail("sweep retry", str(err))
    for number, key in done:
        print(f"trial {number} re-queued (run folder {spec.output_dir / run_name(key)})")
    if not done:
        print(f"sweep {spec.name}: nothing to re-queue (a trial is retried only when its chain has no complete, "
              "waiting or running trial)")
    else:
        print(f"run them with `cvae sweep run {args.spec}` (or start workers)")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from cvae.sweeps.report import summary_line, trials_table
    from rich.console import Console

    SpecError, StorageError, SweepError = _errors()
    try:
        spec, study = _open_existing(args)
    except (SpecError, StorageError, ValueError) as err:
        return fail("sweep status", str(err))
    Console(width=None if sys.stdout.isatty() else 200).print(trials_table(spec, study))
    print(summary_line(spec, study, spec.workers))
    return 0


def _cmd_best(args: argparse.Namespace) -> int:
    from cvae.sweeps.report import best_config_text, best_trial

    SpecError, StorageError, SweepError = _errors()
    try:
        spec, study = _open_existing(args)
    except (SpecError, StorageError, ValueError) as err:
        return fail("sweep best", str(err))
    print(best_config_text(spec, study))
    best = best_trial(study)
    if best is not None and best.user_attrs.get(RUN_DIR):
        cfg = Path(best.user_attrs[RUN_DIR]) / CONFIG_YAML
        if cfg.exists():
            print(f"\nfull config ({cfg}):\n{cfg.read_text()}")
    return 0 if best is not None else EXIT_FAILED


def _cmd_plan(args: argparse.Namespace) -> int:
    from cvae.sweeps.plan import plan_text

    SpecError, StorageError, SweepError = _errors()
    try:
        spec = _load(args, warn="plan")
        print(plan_text(spec))
    except (SpecError, ValueError) as err:
        return fail("sweep plan", str(err))
    return 0


__all__ = ["register", "EXIT_BAD_INPUT"]
