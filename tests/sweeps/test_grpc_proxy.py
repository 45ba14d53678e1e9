"""``grpc://`` storages and ``cvae sweep proxy``: Optuna's gRPC storage proxy as a real subprocess in front of a
real PostgreSQL server (``postgres_url``), a real sweep through it, heartbeats and reaping through it, and the
errors of a proxy that is not there or a URL that is wrong."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from cvae.sweeps.optuna_private import has_heartbeat, storage_of
from cvae.sweeps.queue import claim, heartbeat, open_study, reap_stale
from cvae.sweeps.spec import SpecError, load_spec
from cvae.sweeps.storage import StorageError, open_grpc, open_storage
from optuna.trial import TrialState

from cvae.cli import main
from cvae.schema import FAILED_TRIAL, HEARTBEAT, REASON

sys.path.insert(0, str(Path(__file__).parent))
from pg import free_port  # noqa: E402
from test_runner import BASE  # noqa: E402

PASSWORD = "s3cret-pw"


def write_spec(folder: Path, storage: str, dataset: Path | None = None, **overrides) -> Path:
    spec = {
        "name": "proxied", "method": "grid", "metric": {"name": "val/psnr", "goal": "maximize"},
        "parameters": {"kl_anneal_type": {"values": ["cyclical", "none"]}, "N_dim": {"values": [4, 8]}},
        "base": {"DR": str(dataset or folder / "data"), **BASE}, "workers": 2, "storage": storage,
        "output_dir": str(folder / "out"), "wandb": {"mode": "disabled"}, "heartbeat": {"interval": 1, "grace": 4},
        **overrides,
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def cvae(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cvae", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@contextlib.contextmanager
def running_proxy(database: str, log: Path, port: int | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """``cvae sweep proxy --storage DATABASE`` as a subprocess, answering; (its grpc:// URL, the process).
    Stopped with SIGTERM after, which must end it (exit 0) within seconds."""
    port = port or free_port()
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "cvae", "sweep", "proxy", "--storage", database, "--port",
                                 str(port)], stdout=fh, stderr=subprocess.STDOUT)
    url = f"grpc://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"cvae sweep proxy exited {proc.returncode}: {log.read_text()}")
            try:
                open_grpc(url, timeout=1).close()
                break
            except StorageError:
                if time.monotonic() > deadline:
                    pytest.fail(f"cvae sweep proxy never answered: {log.read_text()}")
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                pytest.fail(f"cvae sweep proxy ignored SIGTERM: {log.read_text()}")


@pytest.fixture
def proxy(postgres_url: str, tmp_path: Path) -> Iterator[str]:
    with running_proxy(postgres_url, tmp_path / "proxy.log") as (url, _):
        yield url


@pytest.mark.slow
def test_a_sweep_runs_through_the_proxy_and_every_trial_completes_once(tiny_dataset, tmp_path, postgres_url, proxy):
    spec_path = write_spec(tmp_path, proxy, tiny_dataset)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = cvae("sweep", "run", str(spec_path), "--no-live", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4 complete" in done.stdout

    # Read back from the database itself: the proxy wrote everything there.
    study = optuna.load_study(study_name="proxied", storage=postgres_url)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4  # each grid point once
    for t in trials:
        assert t.intermediate_values.keys() == {0, 1}  # both epochs reported
        assert HEARTBEAT in t.system_attrs  # beaten in a system attribute: the proxy keeps no Optuna heartbeat
    logs = [p.read_text() for p in sorted((tmp_path / "out" / "logs").glob("worker-*.log"))]
    assert len(logs) == 2 and sum(int(text.split("worker done: ")[1].split(" ")[0]) for text in logs) == 4
    assert "Warning" not in done.stderr + "".join(logs)  # none of Optuna's (the proxy's client is experimental)
    status = cvae("sweep", "status", str(spec_path), env=env)
    assert status.returncode == 0 and "4 complete" in status.stdout


def test_heartbeats_and_reaping_work_through_the_proxy(tmp_path, proxy):
    spec = load_spec(write_spec(tmp_path, proxy, heartbeat={"interval": 1, "grace": 2}))
    storage = open_storage(spec)
    assert not has_heartbeat(storage)  # the proxy's client has no Optuna heartbeat: the system-attribute path
    study = open_study(spec, storage, fill_queue=True)
    lost = claim(study, spec)  # its worker "dies": no beat after the claim's own
    alive = claim(study, spec)
    with heartbeat(study, alive, spec.heartbeat.interval, spec.heartbeat.grace):
        time.sleep(3.5)  # past the grace period for `lost`, not for `alive`
        other = optuna.load_study(study_name=spec.name, storage=open_storage(spec))  # another worker
        assert reap_stale(other, spec) == [lost.number]
    trials = {t.number: t for t in study.get_trials()}
    assert trials[lost.number].state == TrialState.FAIL and "no heartbeat" in trials[lost.number].user_attrs[REASON]
    assert trials[alive.number].state == TrialState.RUNNING
    retries = [t for t in trials.values() if t.system_attrs.get(FAILED_TRIAL) == lost.number]
    assert [t.state for t in retries] == [TrialState.WAITING]


def test_a_proxy_restart_is_ridden_out_by_the_workers(tmp_path, postgres_url):
    port = free_port()
    with running_proxy(postgres_url, tmp_path / "first.log", port) as (url, proc):
        spec = load_spec(write_spec(tmp_path, url))
        study = open_study(spec, open_storage(spec), fill_queue=True)
        storage_of(study).budget_s = 60
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=20) == 0
    restarted: list[subprocess.Popen] = []

    def restart() -> None:
        time.sleep(1.5)
        with running_proxy(postgres_url, tmp_path / "second.log", port) as (_, again):
            restarted.append(again)
            done.wait(60)

    done = threading.Event()
    thread = threading.Thread(target=restart)
    thread.start()
    try:
        t0 = time.monotonic()
        trial = claim(study, spec)  # called while no proxy listens: retried until the new one answers
        assert trial is not None and time.monotonic() - t0 > 1
        assert restarted and trial.number == 0
    finally:
        done.set()
        thread.join()


def test_the_proxy_rides_out_an_outage_of_its_database(tmp_path, postgres_server, proxy):
    spec = load_spec(write_spec(tmp_path, proxy))
    study = open_study(spec, open_storage(spec), fill_queue=True)
    postgres_server.pause()  # the session's server: back before this test ends
    back = threading.Timer(2.0, postgres_server.resume)
    back.start()
    try:
        t0 = time.monotonic()
        trial = claim(study, spec)  # waits in the proxy, which retries its database until it is back
        assert trial is not None and trial.number == 0 and time.monotonic() - t0 > 1.5
    finally:
        back.join()
    assert [t.state for t in study.get_trials()][:2] == [TrialState.RUNNING, TrialState.WAITING]


def test_an_unreachable_proxy_fails_within_seconds_in_one_line(tmp_path):
    url = f"grpc://127.0.0.1:{free_port()}"
    spec_path = write_spec(tmp_path, "grpc://127.0.0.1:1")
    t0 = time.monotonic()
    done = cvae("sweep", "status", str(spec_path), "--storage", url, timeout=60)
    assert done.returncode == 2
    assert time.monotonic() - t0 < 20
    assert done.stderr.strip().splitlines() == [
        f"cvae sweep status: error: cannot open study storage {url}: no gRPC storage proxy answered within 5 s "
        "(start one with `cvae sweep proxy --storage DATABASE_URL`)"]


@pytest.mark.parametrize("url", ["grpc://127.0.0.1", "grpc://127.0.0.1:99999", "grpc://:13000", "grpc://h:1/db",
                                 "grpc:127.0.0.1:13000", "grpc://h:0"])
def test_a_bad_grpc_url_is_refused_naming_it(tmp_path, url):
    with pytest.raises(SpecError) as err:
        load_spec(write_spec(tmp_path, "grpc://127.0.0.1:13000"), storage=url)
    assert str(err.value).count("\n") == 0
    assert f"storage={url!r}: a gRPC storage proxy's URL is grpc://HOST:PORT" in str(err.value)
    with pytest.raises(StorageError, match=r"bad study storage .*grpc://HOST:PORT"):
        open_grpc(url)


def test_the_proxy_refuses_what_it_cannot_serve(tmp_path, capsys):
    cases = {
        f"journal:{tmp_path / 'j.log'}": "Optuna's gRPC proxy does not serve a journal file",
        "grpc://127.0.0.1:13000": "that is a proxy's own address",
        "redis://localhost/0": "must be a database URL",
    }
    for url, message in cases.items():
        assert main(["sweep", "proxy", "--storage", url]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"cvae sweep proxy: error: --storage {url}: {message}")
    assert main(["sweep", "proxy", "--storage", "sqlite:///x.db", "--threads", "0"]) == 2
    assert "--threads 0: must be at least 1" in capsys.readouterr().err


def test_the_proxy_masks_the_password_refuses_a_taken_port_and_stops_on_sigterm(tmp_path, postgres_url):
    # The password on the command line: out of the process list, masked in what is printed.
    with_password = postgres_url.replace("postgres@", f"postgres:{PASSWORD}@")
    with running_proxy(with_password, tmp_path / "proxy.log") as (url, proc):
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
        assert PASSWORD not in cmdline and "sweep\0proxy" in cmdline
        port = int(url.rsplit(":", 1)[1])
        taken = cvae("sweep", "proxy", "--storage", postgres_url, "--port", str(port), timeout=60)
        assert taken.returncode == 2
        assert taken.stderr.strip().splitlines() == [
            f"cvae sweep proxy: error: cannot listen on 127.0.0.1:{port}: Address already in use"]
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0 and time.monotonic() - t0 < 10
    printed = (tmp_path / "proxy.log").read_text()
    assert PASSWORD not in printed and "postgres:***@127.0.0.1" in printed
    assert f"start workers with --storage {url}" in printed and "Traceback" not in printed
