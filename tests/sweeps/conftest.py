"""Fixtures of the sweep tests.

- ``postgres_server`` (session): one real PostgreSQL server on 127.0.0.1 for the whole session
  (:class:`tests.sweeps.pg.PostgresServer`: initdb into a temp folder, trust auth for 127.0.0.1 only,
  stopped and deleted at the end). Skipped when PostgreSQL is not installed, unless
  ``CVAE_REQUIRE_POSTGRES=1`` (CI sets it), where a missing server is a failure.
- ``slurm_cluster`` (session): a real one-node Slurm cluster (munged, slurmctld, slurmd on 127.0.0.1 from a temp
  folder: :class:`tests.sweeps.slurm.SlurmCluster`), its client environment in ``.env`` (``SLURM_CONF``).
  Skipped when Slurm or munge is not installed, unless ``CVAE_REQUIRE_SLURM=1`` (CI sets it).
- ``env`` (function): offline W&B into ``tmp_path/wandb``, as an environment for subprocesses.
- ``postgres_url`` (function): a fresh, empty database on that server for one test, as a SQLAlchemy URL
  (``postgresql+psycopg2://postgres@127.0.0.1:<port>/<db>``), ready for ``optuna.create_study(storage=...)``.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from pg import PostgresServer, find_bindir  # noqa: E402
from slurm import SlurmCluster, SlurmError, missing_binaries  # noqa: E402

_db_counter = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A running PostgreSQL server (see the module docstring); skip or fail when it is not installed."""
    if find_bindir() is None:
        message = ("PostgreSQL not installed (no initdb/pg_ctl/postgres in /usr/lib/postgresql/*/bin, "
                   "`pg_config --bindir` or PATH); `apt-get install postgresql` to run these tests")
        if os.environ.get("CVAE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"CVAE_REQUIRE_POSTGRES=1 but {message}", pytrace=False)
        pytest.skip(message)
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A running one-node Slurm cluster (see the module docstring); skip or fail when it cannot run here."""
    missing = missing_binaries()
    why = (f"Slurm not installed (no {', '.join(missing)}); `apt-get install slurmctld slurmd munge` to run these "
           "tests" if missing else "a test Slurm cluster needs root (slurmd starts jobs as their user)"
           if os.geteuid() != 0 else "")
    if why:
        if os.environ.get("CVAE_REQUIRE_SLURM") == "1":
            pytest.fail(f"CVAE_REQUIRE_SLURM=1 but {why}", pytrace=False)
        pytest.skip(why)
    try:
        cluster = SlurmCluster().start()
    except SlurmError as err:
        pytest.fail(f"the test Slurm cluster did not start: {err}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> str:
    """A new empty database on the session's server, named after the test."""
    stem = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40]
    return postgres_server.create_database(f"t{next(_db_counter)}_{stem}")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Offline W&B into tmp_path/wandb; subprocesses inherit it."""
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return {**os.environ, "PYTHONUNBUFFERED": "1"}
