"""The storage's ceiling: how many trials per second the study's storage serves to N workers, directly on
PostgreSQL and through Optuna's gRPC storage proxy (``cvae sweep proxy``), and what each costs the database.

Usage:
    .venv/bin/python benchmarks/storage_ceiling.py                       # N = 8, 32, 128; both backends
        [--workers 8 32 128] [--backends postgres proxy] [--trials-per-worker 4] [--min-trials 128]
        [--max-trials 512]
        [--epochs 3] [--proxy-threads 10] [--max-connections 100] [--out benchmarks/results/storage_ceiling.csv]

No training: each worker is a process that does what a sweep worker does to the storage, with the project's
own functions, until the queue is empty: ``reap_stale``, ``claim`` (the atomic WAITING -> RUNNING change,
:mod:`cvae.sweeps.queue`), its ``heartbeat``, ``trial.report`` for ``--epochs`` epochs, ``study.tell``. A
configuration queues ``--trials-per-worker`` x N trials (at least ``--min-trials``, so that a few workers'
window is not over in a second, and at most ``--max-trials``) in a fresh database of a
throwaway PostgreSQL server this script starts (``tests/sweeps/pg.py``, with ``--max-connections``) and, for
``proxy``, a fresh ``cvae sweep proxy --threads --proxy-threads`` in front of it.

Start-up is not timed: the workers import Optuna, open the storage and load the study, say they are ready and
wait; all start at once, and the clock runs from then until the last worker finds the queue empty. Measured:

- ``trials_per_s``: completed trials / that window;
- ``claim_p50_ms``, ``claim_p95_ms``: latency of the successful claims, over all workers;
- ``db_connections_peak``: the most client connections to the study's database at once
  (``pg_stat_activity``, sampled every 50 ms from the workers' start to their end; this script's own not
  counted);
- ``errors``: workers that stopped on an error (opening the storage or during the run), with the first one's
  message in ``first_error``; a worker stops at its first error, as a sweep worker would. PostgreSQL refuses
  connections beyond ``max_connections`` (100 by default): with that many direct workers, expect errors.
- ``complete``, ``not_complete``: the study's trials at the end, read from the database; every trial claimed
  once completes once (``duplicates``: trials that two workers both reported completing, which must be 0).

Writes one row per configuration to ``--out`` (CSV) and prints a table. Everything runs on this machine: the
server, the proxy and the workers share its cores, so the figures are this machine's.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "sweeps"))
from pg import PostgresServer, free_port  # noqa: E402

COLUMNS = ["backend", "workers", "trials", "epochs", "complete", "not_complete", "duplicates", "errors", "wall_s",
           "trials_per_s", "claim_p50_ms", "claim_p95_ms", "claims", "db_connections_peak", "max_connections",
           "proxy_threads", "startup_s", "cpus", "first_error"]
"""The CSV's columns, in order."""

BACKENDS = ("postgres", "proxy")
STUDY = "ceiling"


# -- one worker (a subprocess) -----------------------------------------------------------------------------
def worker_main(spec_path: str, storage: str, epochs: int) -> int:
    """Open the study, say ``ready``, wait for ``go`` on stdin, then claim, beat, report and complete trials
    until the queue is empty; print one JSON line of what happened."""
    out: dict[str, Any] = {"claims_ms": [], "completed": [], "error": None, "start": None, "end": None}
    try:
        import optuna
        from cvae.sweeps.queue import claim, heartbeat, reap_stale
        from cvae.sweeps.spec import load_spec
        from cvae.sweeps.storage import open_storage

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        spec = load_spec(spec_path, storage=storage)
        study = optuna.load_study(study_name=spec.name, storage=open_storage(spec))
    except Exception as err:  # noqa: BLE001 - reported, counted as this worker's error
        out["error"] = _one_line(err)
        print("ready", flush=True)
        sys.stdin.readline()
        print(json.dumps(out), flush=True)
        return 0
    print("ready", flush=True)
    sys.stdin.readline()  # "go": every worker at once
    out["start"] = time.monotonic()
    try:
        while True:
            reap_stale(study, spec)
            t0 = time.perf_counter()
            trial = claim(study, spec)
            if trial is None:
                break
            out["claims_ms"].append((time.perf_counter() - t0) * 1000)
            with heartbeat(study, trial, spec.heartbeat.interval, spec.heartbeat.grace):
                for epoch in range(epochs):
                    trial.report(20.0 + epoch, epoch)
                study.tell(trial, 20.0 + epochs)
            out["completed"].append(trial.number)
    except Exception as err:  # noqa: BLE001 - a sweep worker would stop here too
        out["error"] = _one_line(err)
    out["end"] = time.monotonic()
    print(json.dumps(out), flush=True)
    return 0


def _one_line(err: BaseException) -> str:
    from cvae.secrets import mask_secrets

    text = str(err).strip().splitlines()
    return mask_secrets(f"{type(err).__name__}: {text[0] if text else ''}")[:300]


# -- one configuration ---------------------------------------------------------------------------------------
def write_spec(folder: Path, trials: int) -> Path:
    """A random search of ``trials`` queued trials (their parameters are never drawn: no training)."""
    spec = {
        "name": STUDY, "method": "random", "run_cap": trials, "metric": {"name": "val/psnr", "goal": "maximize"},
        "parameters": {"N_dim": {"values": [4, 8]}}, "base": {"DR": str(folder / "data")},
        "output_dir": str(folder / "out"), "wandb": {"mode": "disabled"},
        "heartbeat": {"interval": 10, "grace": 60}, "seed": 0,
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def setup_main(spec_path: str, storage: str) -> int:
    """Create the study and queue its trials (in a process of its own: its connections are gone before the
    workers start)."""
    import optuna
    from cvae.sweeps.queue import open_study
    from cvae.sweeps.spec import load_spec
    from cvae.sweeps.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_spec(spec_path, storage=storage)
    open_study(spec, open_storage(spec), fill_queue=True)
    return 0


class ConnectionSampler(threading.Thread):
    """The peak number of client connections to database ``dbname``, sampled every ``period`` seconds."""

    def __init__(self, pg: PostgresServer, dbname: str, period: float = 0.05) -> None:
        super().__init__(daemon=True)
        import psycopg2

        self.conn = psycopg2.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname="postgres",
                                     connect_timeout=10)
        self.conn.autocommit = True
        self.dbname, self.period = dbname, period
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with self.conn.cursor() as cur:
            while not self.stop.is_set():
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                            "AND datname = %s AND pid <> pg_backend_pid()", (self.dbname,))
                self.peak = max(self.peak, cur.fetchone()[0])
                self.stop.wait(self.period)

    def finish(self) -> int:
        self.stop.set()
        self.join()
        self.conn.close()
        return self.peak


def start_proxy(database: str, threads: int, log: Path) -> tuple[subprocess.Popen, str]:
    """``cvae sweep proxy`` in front of ``database``, answering; (the process, its grpc:// URL)."""
    from cvae.sweeps.storage import StorageError, open_grpc

    port = free_port()
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "cvae", "sweep", "proxy", "--storage", database, "--port",
                                 str(port), "--threads", str(threads)], stdout=fh, stderr=subprocess.STDOUT)
    url = f"grpc://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"cvae sweep proxy exited {proc.returncode}: {log.read_text()}")
        try:
            open_grpc(url, timeout=1).close()
            return proc, url
        except StorageError:
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"cvae sweep proxy never answered: {log.read_text()}") from None


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between the closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def run_config(pg: PostgresServer, backend: str, workers: int, *, trials: int, epochs: int, proxy_threads: int,
               folder: Path, timeout: float) -> dict[str, Any]:
    """One configuration, from a fresh database to its CSV row."""
    import optuna
    from optuna.trial import TrialState

    dbname = f"ceiling_{backend}_{workers}_{int(time.time() * 1000) % 10**8}"
    database = pg.create_database(dbname)
    folder.mkdir(parents=True, exist_ok=True)
    spec_path = write_spec(folder, trials)
    proxy = None
    url = database
    if backend == "proxy":
        proxy, url = start_proxy(database, proxy_threads, folder / "proxy.log")
    me = [sys.executable, str(Path(__file__).resolve())]
    if subprocess.run([*me, "--_setup", str(spec_path), url], cwd=ROOT).returncode != 0:
        raise SystemExit(f"{backend} x {workers}: could not create the study")
    sampler = ConnectionSampler(pg, dbname)
    sampler.start()
    t_spawn = time.monotonic()
    logs = [(folder / f"worker-{i}.log").open("w") for i in range(workers)]  # their warnings, if any
    procs = [subprocess.Popen([*me, "--_worker", str(spec_path), url, str(epochs)], cwd=ROOT, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log) for log in logs]
    results: list[dict[str, Any]] = []
    try:
        for p in procs:
            line = p.stdout.readline()
            if line.strip() != "ready":
                raise SystemExit(f"{backend} x {workers}: a worker did not start (exit {p.wait()}): {line!r}")
        startup = time.monotonic() - t_spawn
        go = time.monotonic()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        deadline = go + timeout
        for p in procs:
            try:
                out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
                results.append(json.loads(out.strip().splitlines()[-1]))
            except (subprocess.TimeoutExpired, ValueError, IndexError):
                p.kill()
                p.wait()
                results.append({"claims_ms": [], "completed": [], "error": f"no result within {timeout:g} s",
                                "start": None, "end": None})
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        peak = sampler.finish()
        if proxy is not None:
            stop(proxy)
        for log in logs:
            log.close()

    ends = [r["end"] for r in results if r["end"] is not None]
    wall = (max(ends) - go) if ends else float("nan")
    reported = [n for r in results for n in r["completed"]]
    claims = [ms for r in results for ms in r["claims_ms"]]
    errors = [r["error"] for r in results if r["error"]]
    reader = optuna.storages.RDBStorage(database)
    study_trials = optuna.load_study(study_name=STUDY, storage=reader).get_trials(deepcopy=False)
    reader.engine.dispose()  # no connection of ours stays open into the next configuration
    complete = sum(t.state == TrialState.COMPLETE for t in study_trials)
    return {
        "backend": backend, "workers": workers, "trials": len(study_trials), "epochs": epochs, "complete": complete,
        "not_complete": len(study_trials) - complete, "duplicates": len(reported) - len(set(reported)),
        "errors": len(errors), "wall_s": round(wall, 3),
        "trials_per_s": round(len(set(reported)) / wall, 2) if wall == wall and wall > 0 else float("nan"),
        "claim_p50_ms": round(percentile(claims, 50), 2), "claim_p95_ms": round(percentile(claims, 95), 2),
        "claims": len(claims), "db_connections_peak": peak, "max_connections": pg.max_connections,
        "proxy_threads": proxy_threads if backend == "proxy" else "", "startup_s": round(startup, 1),
        "cpus": os.cpu_count(), "first_error": errors[0] if errors else "",
    }


def table(rows: list[dict[str, Any]]) -> str:
    shown = ["backend", "workers", "trials", "complete", "errors", "wall_s", "trials_per_s", "claim_p50_ms",
             "claim_p95_ms", "db_connections_peak"]
    cells = [[str(r[c]) for c in shown] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(shown)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(shown, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    lines += [f"  {r['backend']} x {r['workers']}: first error: {r['first_error']}" for r in rows if r["first_error"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_worker"]:
        return worker_main(argv[1], argv[2], int(argv[3]))
    if argv[:1] == ["--_setup"]:
        return setup_main(argv[1], argv[2])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 32, 128], help="N: worker processes")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--trials-per-worker", type=int, default=4)
    parser.add_argument("--min-trials", type=int, default=128, help="floor on a configuration's trials")
    parser.add_argument("--max-trials", type=int, default=512, help="cap on a configuration's trials")
    parser.add_argument("--epochs", type=int, default=3, help="trial.report calls per trial")
    parser.add_argument("--proxy-threads", type=int, default=10, help="cvae sweep proxy --threads (Optuna's 10)")
    parser.add_argument("--max-connections", type=int, default=100,
                        help="the throwaway PostgreSQL server's max_connections (PostgreSQL's default: 100)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds a configuration's workers may run")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "storage_ceiling.csv")
    args = parser.parse_args(argv)
    if min(args.workers) < 1 or min(args.trials_per_worker, args.min_trials, args.max_trials) < 1 or args.epochs < 0:
        parser.error("--workers, --trials-per-worker, --min-trials and --max-trials must be at least 1, --epochs "
                     "at least 0")

    rows = []
    print(f"storage ceiling on {platform.node()} ({os.cpu_count()} CPUs), PostgreSQL max_connections="
          f"{args.max_connections}", flush=True)
    with tempfile.TemporaryDirectory(prefix="cvae-ceiling-") as tmp, \
            PostgresServer("ceiling", max_connections=args.max_connections) as pg:
        for workers in args.workers:
            for backend in args.backends:
                trials = min(max(args.trials_per_worker * workers, args.min_trials), args.max_trials)
                t0 = time.monotonic()
                try:
                    row = run_config(pg, backend, workers, trials=trials, epochs=args.epochs,
                                     proxy_threads=args.proxy_threads, folder=Path(tmp) / f"{backend}-{workers}",
                                     timeout=args.timeout)
                except Exception:
                    traceback.print_exc()
                    return 1
                rows.append(row)
                print(f"{backend} x {workers}: {row['complete']}/{row['trials']} complete, {row['errors']} error(s), "
                      f"{row['trials_per_s']} trials/s, claim p50 {row['claim_p50_ms']} ms p95 "
                      f"{row['claim_p95_ms']} ms, peak {row['db_connections_peak']} connection(s) "
                      f"({time.monotonic() - t0:.0f} s in all)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"\n{table(rows)}\n\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
