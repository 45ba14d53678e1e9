"""``cvae sweep run | worker | init | dashboard | proxy | retry | status | best | plan | schema``."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from cvae.console import EXIT_FAILED, fail, setup_logging
from cvae.schema import CONFIG_YAML, RUN_DIR, run_name
from cvae.secrets import mask_secrets

log = logging.getLogger("cvae")


def register(sub: argparse._SubParsersAction) -> None:
    sweep = sub.add_parser("sweep", help="run a sweep from a YAML spec: an Optuna study of tracked trials")
    ssub = sweep.add_subparsers(dest="sweep_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("spec", help="sweep spec (YAML)")
        p.add_argument("--storage", help="study storage URL (overrides the spec's)")

    run = ssub.add_parser("run", help="create/continue the study and run its workers with a live view")
    common(run)
    run.add_argument("--workers", type=int, help="workers: local processes, or Slurm array tasks (overrides the spec's)")
    run.add_argument("--no-live", dest="live", action="store_false", help="plain log lines, no live table")
    slurm = run.add_argument_group("Slurm (docs/scale-out.md#4-slurm); each overrides the spec's slurm section")
    slurm.add_argument("--launcher", choices=("local", "slurm"),
                       help="local worker processes, or a Slurm job array of workers submitted with submitit "
                       "(overrides the spec's launcher; default local)")
    slurm.add_argument("--partition", dest="slurm_partition", metavar="NAME", help="the Slurm partition")
    slurm.add_argument("--time", dest="slurm_time", metavar="TIME", help="each worker's time limit: minutes or [D-]HH:MM:SS")
    slurm.add_argument("--gpus", dest="slurm_gpus", type=int, metavar="N", help="GPUs per worker (0: none)")
    slurm.add_argument("--cpus", dest="slurm_cpus", type=int, metavar="N", help="CPUs per worker (and its threads)")
    slurm.add_argument("--mem", dest="slurm_mem", metavar="SIZE", help="memory per worker (32G)")
    slurm.add_argument("--detach", action="store_true",
                       help="submit the job array and return (follow it with `cvae sweep status`)")
    run.set_defaults(func=_cmd_run)

    worker = ssub.add_parser("worker", help="join a study from another shell or machine and run trials")
    common(worker)
    worker.add_argument("--threads", type=int,
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

    proxy = ssub.add_parser("proxy", help="serve a study database to many workers through Optuna's gRPC storage "
                            "proxy (the workers: --storage grpc://HOST:PORT); Ctrl-C stops it")
    proxy.add_argument("--storage", required=True,
                       help="the database to serve: postgresql+psycopg2://USER@HOST:PORT/DB (password from "
                       "$CVAE_DB_PASSWORD, $CVAE_DB_PASSWORD_FILE or libpq), or sqlite:///PATH")
    proxy.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: the proxy has no authentication and no "
                       "encryption; give another only inside a private network)")
    proxy.add_argument("--port", type=int, default=13000, help="port (default 13000)")
    proxy.add_argument("--threads", type=int, default=10,
                       help="requests served at once, and the most database connections the proxy opens "
                       "(default 10, Optuna's)")
    proxy.set_defaults(func=_cmd_proxy)

    retry = ssub.add_parser("retry", help="re-queue failed (or pruned) trials with the same parameters; each "
                            "resumes from its last checkpoint in the same run folder and W&B run")
    common(retry)
    retry.add_argument("--state", action="append", choices=("failed", "pruned"),
                       help="which finished trials to re-queue (repeatable; default failed)")
    retry.add_argument("--trial", type=int, nargs="+", action="extend", default=[], metavar="N",
                       help="re-queue only these trials' retry chains (--trial 3 5, or repeated)")
    retry.set_defaults(func=_cmd_retry)

    schema = ssub.add_parser("schema", help="print the JSON Schema of a spec file (for editors: docs/spec.md)")
    schema.set_defaults(func=_cmd_schema)
    for name, text, func in (("status", "a table of the study's trials", _cmd_status),
                             ("best", "the best trial and its configuration", _cmd_best),
                             ("plan", "dry run: the trials, branches, epochs and an estimated time", _cmd_plan)):
        p = ssub.add_parser(name, help=text)
        common(p)
        p.set_defaults(func=func)


def _load(args: argparse.Namespace, workers: int | None = None, *, warn: str | None = None):
    """The validated spec; with ``warn`` (the command's name), print what `cvae train` would warn about once."""
    import optuna
    from cvae.sweeps.spec import load_spec

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the commands print their own lines about trials
    spec = load_spec(args.spec, storage=args.storage, workers=workers)
    for message in spec.warnings if warn else ():
        print(f"cvae sweep {warn}: warning: {args.spec}: {message}", file=sys.stderr, flush=True)
    return spec


def _one_line(name: str):
    """``cvae sweep NAME``: bad input and the machine's faults (spec, storage, study, W&B, the dataset: its
    ``DatasetError`` is a ``ValueError``, caught without importing ``cvae.core.data`` and torch) end it in one
    line."""
    def wrap(cmd):
        @functools.wraps(cmd)
        def run(args: argparse.Namespace) -> int:
            from cvae.sweeps.queue import SweepError
            from cvae.sweeps.spec import SpecError
            from cvae.sweeps.storage import StorageError

            from cvae.tracking import TrackingError

            errors: tuple[type[Exception], ...] = (SpecError, StorageError, SweepError, TrackingError, ValueError)
            try:
                return cmd(args)
            except errors as err:
                return fail(f"sweep {name}", str(err))
        return run
    return wrap


@_one_line("run")
def _cmd_run(args: argparse.Namespace) -> int:
    from cvae.sweeps import slurm
    from cvae.sweeps.launcher import LaunchError, launch, prepare, threads_from_env

    setup_logging()
    spec = _load(args, args.workers, warn="run")
    threads_from_env()  # a bad $CVAE_THREADS is said before anything is created
    try:
        on_slurm = slurm.resolve(spec, launcher=args.launcher, detach=args.detach, **slurm.options_of(args))
        study = prepare(spec)
        if on_slurm is not None:
            return slurm.launch(spec, Path(args.spec), study, on_slurm, worker=_cmd_worker, live=args.live,
                                detach=args.detach)
        return launch(spec, Path(args.spec), study, live=args.live)
    except LaunchError as err:
        return fail("sweep run", str(err), err.code)


@_one_line("worker")
def _cmd_worker(args: argparse.Namespace) -> int:
    from cvae.sweeps.launcher import threads_from_env
    from cvae.sweeps.runner import install_stop_handlers, run_worker

    threads = args.threads or threads_from_env()
    worker = os.environ.get("CVAE_WORKER")
    setup_logging(f"[worker {worker}] " if worker else "")
    # Ctrl-C and a scheduler's SIGTERM (docker stop, Slurm preemption) stop the same way: the trial is re-queued.
    install_stop_handlers()
    try:
        stats = run_worker(_load(args), storage_url=args.storage, num_threads=threads, max_trials=args.max_trials)
    except KeyboardInterrupt:
        print("worker interrupted: its running trial was re-queued", file=sys.stderr)
        return 130
    log.info("worker done: %d trial(s): %d complete, %d pruned, %d failed%s", stats.trials, stats.complete,
             stats.pruned, stats.failed, f", {stats.fenced} lost to other workers (fenced)" if stats.fenced else "")
    return 0


@_one_line("init")
def _cmd_init(args: argparse.Namespace) -> int:
    import optuna
    from cvae.sweeps.launcher import keep_spec, prepare
    from cvae.sweeps.storage import mask_url

    setup_logging()
    spec = _load(args, warn="init")
    study = prepare(spec, data_only=args.data_only)
    if study is None:
        print(f"sweep {spec.name}: dataset ready in {spec.data_root}", flush=True)
        return 0
    keep_spec(spec, Path(args.spec))
    queued = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
    print(f"sweep {spec.name}: study ready in {mask_url(spec.storage)}, {queued} trial(s) queued; start workers "
          f"with `cvae sweep worker {args.spec} --storage URL`", flush=True)
    return 0


@_one_line("dashboard")
def _cmd_dashboard(args: argparse.Namespace) -> int:
    from cvae.sweeps.dashboard import serve_dashboard

    with _serving():
        try:
            serve_dashboard(_load(args), storage_url=args.storage, host=args.host, port=args.port)
        except OSError as err:
            return fail("sweep dashboard", f"cannot listen on {args.host}:{args.port}: {err.strerror or err}")
    return 0


@contextlib.contextmanager
def _serving() -> Iterator[None]:
    """A command that serves until stopped: Ctrl-C, and SIGTERM (`docker stop`, `kill`) alike, end it with exit 0,
    not a traceback."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def _cmd_proxy(args: argparse.Namespace) -> int:
    import optuna
    from cvae.sweeps.proxy import serve_proxy
    from cvae.sweeps.storage import StorageError

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # it prints its own line
    with _serving():
        try:
            serve_proxy(args.storage, host=args.host, port=args.port, threads=args.threads)
        except (StorageError, ValueError) as err:
            return fail("sweep proxy", str(err))
        except (OSError, RuntimeError) as err:  # the address is taken or unknown (RuntimeError: gRPC's own bind)
            return fail("sweep proxy", f"cannot listen on {args.host}:{args.port}: {err}")
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


@_one_line("retry")
def _cmd_retry(args: argparse.Namespace) -> int:
    from cvae.sweeps.queue import retry_trials

    spec, study = _open_existing(args)
    done = retry_trials(study, states=tuple(args.state or ("failed",)), numbers=tuple(args.trial))
    for number, key in done:
        print(f"trial {number} re-queued (run folder {spec.output_dir / run_name(key)})")
    if not done:
        print(f"sweep {spec.name}: nothing to re-queue (a trial is retried only when its chain has no complete, "
              "waiting or running trial)")
    else:
        print(f"run them with `cvae sweep run {args.spec}` (or start workers)")
    return 0


@_one_line("status")
def _cmd_status(args: argparse.Namespace) -> int:
    from cvae.sweeps.report import summary_line, trials_table
    from rich.console import Console

    spec, study = _open_existing(args)
    Console(width=None if sys.stdout.isatty() else 200).print(trials_table(spec, study))
    print(summary_line(spec, study, spec.workers))
    from cvae.sweeps.slurm import jobs_text

    if jobs := jobs_text(study):  # the Slurm job arrays of `cvae sweep run --launcher slurm`, and their states
        print(jobs)
    return 0


@_one_line("best")
def _cmd_best(args: argparse.Namespace) -> int:
    from cvae.sweeps.report import best_config_text, best_trial

    spec, study = _open_existing(args)
    print(best_config_text(spec, study))
    best = best_trial(study)
    if best is not None and best.user_attrs.get(RUN_DIR):
        cfg = Path(best.user_attrs[RUN_DIR]) / CONFIG_YAML
        if cfg.exists():
            print(f"\nfull config ({cfg}):\n{cfg.read_text()}")
    return 0 if best is not None else EXIT_FAILED


@_one_line("plan")
def _cmd_plan(args: argparse.Namespace) -> int:
    from cvae.sweeps.plan import plan_text

    print(plan_text(_load(args, warn="plan")))
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from cvae.sweeps.spec import schema

    print(json.dumps(schema(), indent=2))
    return 0


__all__ = ["register"]
