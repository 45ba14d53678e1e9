"""The PostgreSQL fixture is a real server, and the storage behaviour the sweep relies on holds."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import optuna
import pytest
import sqlalchemy.exc
from sqlalchemy.engine import make_url

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_postgres_url_is_a_fresh_psycopg2_database(postgres_url: str) -> None:
    import psycopg2

    url = make_url(postgres_url)
    assert url.drivername == "postgresql+psycopg2"
    assert url.host == "127.0.0.1"
    conn = psycopg2.connect(host=url.host, port=url.port, user=url.username, dbname=url.database,
                            connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_database(), count(*) FROM information_schema.tables "
                        "WHERE table_schema = 'public'")
            assert cur.fetchone() == (url.database, 0)
    finally:
        conn.close()


def test_each_test_gets_its_own_database(postgres_server, postgres_url: str) -> None:
    other = postgres_server.create_database("another_db")
    assert make_url(other).database == "another_db"
    assert make_url(other).database != make_url(postgres_url).database
    assert make_url(other).port == make_url(postgres_url).port == postgres_server.port


def test_a_study_is_shared_with_another_process(postgres_url: str) -> None:
    study = optuna.create_study(storage=postgres_url, study_name="shared", direction="maximize")
    child = textwrap.dedent(f"""
        import optuna
        study = optuna.load_study(study_name="shared", storage={postgres_url!r})
        trial = study.ask()
        study.tell(trial, trial.suggest_float("x", 0.0, 1.0) + 41.0)
        print(study.direction.name)
    """)
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "MAXIMIZE"
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 1
    assert trials[0].state == optuna.trial.TrialState.COMPLETE
    assert 41.0 <= trials[0].value <= 42.0
    assert set(trials[0].params) == {"x"}


def test_an_unreachable_storage_fails_in_seconds() -> None:
    """Port 1 on 127.0.0.1 is closed: the RDB storage must refuse at once, not hang (the sweep's error path)."""
    url = "postgresql+psycopg2://postgres@127.0.0.1:1/x"
    start = time.monotonic()
    with pytest.raises(sqlalchemy.exc.OperationalError) as info:
        optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"connect_timeout": 3}})
    elapsed = time.monotonic() - start
    assert elapsed < 15, f"took {elapsed:.1f}s"
    assert "127.0.0.1" in str(info.value) and "port 1" in str(info.value)
