"""``cvae sweep dashboard``: optuna-dashboard on a spec's storage, bound to 127.0.0.1, passwords masked."""

from __future__ import annotations

import contextlib
import io
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from cvae.sweeps import dashboard as dash
from cvae.sweeps.spec import load_spec

from cvae.cli import build_parser, main

STUDY = "dash-study"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_spec(folder: Path, storage: str, name: str = STUDY) -> Path:
    spec = {
        "name": name, "method": "grid", "metric": {"name": "val/psnr", "goal": "maximize"},
        "parameters": {"N_dim": {"values": [4, 8]}},
        "base": {"DR": str(folder / "data"), "num_epoch": 2, "tfr_sde": 1},
        "storage": storage, "wandb": {"mode": "disabled"}, "output_dir": str(folder / "runs"),
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _make_study(storage: str, n: int = 3) -> None:
    """A finished study of ``n`` trivial trials (no training), under the spec's name."""
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    study.enqueue_trial({"x": 0.25})
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=n)


@pytest.fixture
def sqlite_spec(tmp_path: Path) -> Path:
    db = tmp_path / "study.db"
    _make_study(f"sqlite:///{db}")
    return _write_spec(tmp_path, f"sqlite:///{db}")


def _get(url: str, timeout: float = 5.0) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - a local test server
        return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()


@contextlib.contextmanager
def _dashboard(spec: Path, port: int, *extra: str) -> Iterator[tuple[subprocess.Popen, Path]]:
    """``cvae sweep dashboard`` as a subprocess, up and answering; stopped (SIGTERM, then kill) after."""
    out = spec.parent / f"dashboard-{port}.log"
    with out.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "cvae", "sweep", "dashboard", str(spec), "--port", str(port),
                                 *extra], stdout=fh, stderr=subprocess.STDOUT, cwd=spec.parent)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"dashboard exited {proc.returncode}: {out.read_text()}")
            try:
                _get(f"http://127.0.0.1:{port}/api/meta", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"dashboard did not answer within 60 s: {out.read_text()}")
                time.sleep(0.2)
        yield proc, out
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp{,6} write them) of the sockets listening on ``port``."""
    found = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        table = Path(name)
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                found.append(address)
    return found


def test_serves_the_study_on_loopback_and_stops(sqlite_spec: Path) -> None:
    port = _free_port()
    with _dashboard(sqlite_spec, port) as (proc, log):
        base = f"http://127.0.0.1:{port}"
        status, ctype, html = _get(f"{base}/")  # redirects to /dashboard: the single-page app
        assert status == 200 and "text/html" in ctype
        assert "<html" in html.lower() and "optuna" in html.lower()

        status, ctype, body = _get(f"{base}/api/studies")
        assert status == 200 and "json" in ctype
        studies = json.loads(body)["study_summaries"]
        assert [s["study_name"] for s in studies] == [STUDY]

        status, _, body = _get(f"{base}/api/studies/{studies[0]['study_id']}")
        assert len(json.loads(body)["trials"]) == 3

        # Bound to 127.0.0.1 only: read the kernel's socket table (no traffic to any other address).
        if Path("/proc/net/tcp").exists():
            assert _listening(port) == ["0100007F"]  # 127.0.0.1, not 0.0.0.0 (00000000) nor IPv6
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    text = log.read_text()
    assert f"http://127.0.0.1:{port}/dashboard" in text
    assert f"sqlite:///{sqlite_spec.parent / 'study.db'}" in text
    assert "no authentication" not in text
    assert "Traceback" not in text


def test_defaults_to_loopback() -> None:
    args = build_parser().parse_args(["sweep", "dashboard", "spec.yaml"])
    assert (args.host, args.port, args.storage) == ("127.0.0.1", 8080, None)
    assert all(dash.bind_warning(h) is None for h in ("127.0.0.1", "localhost", "::1"))
    assert "no authentication" in dash.bind_warning("0.0.0.0")
    assert dash.dashboard_url("::1", 8080) == "http://[::1]:8080/dashboard"


def test_other_addresses_warn(sqlite_spec: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    import optuna_dashboard

    calls = []
    monkeypatch.setattr(optuna_dashboard, "run_server", lambda storage, **kw: calls.append((storage, kw)))
    spec = load_spec(sqlite_spec)
    dash.serve_dashboard(spec, host="0.0.0.0", port=9999)
    storage, kw = calls[0]
    store = kw.pop("artifact_store")
    assert kw == {"host": "0.0.0.0", "port": 9999}
    # The sweep's artifact store (<output_dir>/artifacts), served read-only; nothing is created.
    assert isinstance(store, optuna.artifacts.FileSystemArtifactStore)
    assert store._base_path == spec.output_dir / "artifacts"  # noqa: SLF001
    assert not spec.output_dir.exists()
    assert isinstance(storage, optuna.storages.BaseStorage)
    assert [s.study_name for s in storage.get_all_studies()] == [STUDY]
    err = capsys.readouterr().err
    assert "0.0.0.0" in err and "no authentication" in err

    dash.serve_dashboard(spec, port=9999)
    assert {k: v for k, v in calls[1][1].items() if k != "artifact_store"} == {"host": "127.0.0.1", "port": 9999}
    assert capsys.readouterr().err == ""


def test_unreachable_postgres_fails_fast_with_the_password_masked(tmp_path: Path) -> None:
    spec = _write_spec(tmp_path, f"sqlite:///{tmp_path / 'unused.db'}")
    url = "postgresql+psycopg2://u:secret@127.0.0.1:1/x"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "cvae", "sweep", "dashboard", str(spec), "--storage", url,
                           "--port", str(_free_port())], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert time.monotonic() - t0 < 30
    assert proc.returncode == 2
    assert "secret" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cvae sweep dashboard: error: ")
    assert "postgresql+psycopg2://u:***@127.0.0.1:1/x" in lines[0]


def test_missing_sqlite_file_is_an_error_and_not_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "nowhere" / "study.db"
    spec = _write_spec(tmp_path, f"sqlite:///{db}")
    assert main(["sweep", "dashboard", str(spec), "--port", str(_free_port())]) == 2
    assert "no study storage at" in capsys.readouterr().err
    assert not db.parent.exists()


def test_port_in_use_is_one_line(sqlite_spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["sweep", "dashboard", str(sqlite_spec), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"cvae sweep dashboard: error: cannot listen on 127.0.0.1:{port}")


def test_postgres_storage_password_from_the_environment(postgres_url: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A PostgreSQL study, the password from $CVAE_DB_PASSWORD (or in the URL): served, never printed."""
    import optuna_dashboard

    _make_study(postgres_url, n=2)
    spec = load_spec(_write_spec(tmp_path, postgres_url))  # no password in the spec
    calls = []
    monkeypatch.setattr(optuna_dashboard, "run_server", lambda storage, **kw: calls.append(storage))
    monkeypatch.setenv("CVAE_DB_PASSWORD", "hunter2")  # the test server trusts 127.0.0.1: any password works

    out = io.StringIO()
    dash.serve_dashboard(spec, port=9999, out=out)
    assert [s.study_name for s in calls[0].get_all_studies()] == [STUDY]
    assert "hunter2" not in out.getvalue() and postgres_url in out.getvalue()

    with_pw = postgres_url.replace("://postgres@", "://postgres:hunter2@")
    out = io.StringIO()
    dash.serve_dashboard(spec, storage_url=with_pw, port=9999, out=out)
    assert "hunter2" not in out.getvalue()
    assert "://postgres:***@127.0.0.1" in out.getvalue()


def test_study_not_created_yet_is_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import optuna_dashboard

    db = tmp_path / "empty.db"
    optuna.storages.RDBStorage(f"sqlite:///{db}")  # the tables, no study: workers have not started
    monkeypatch.setattr(optuna_dashboard, "run_server", lambda storage, **kw: None)
    out = io.StringIO()
    dash.serve_dashboard(load_spec(_write_spec(tmp_path, f"sqlite:///{db}")), out=out)
    assert f"study {STUDY!r} is not in this storage yet" in out.getvalue()

