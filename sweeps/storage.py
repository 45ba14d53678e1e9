"""Study storage: SQLite (default), PostgreSQL (many machines), or an Optuna journal file.

Storage URLs are printed with their password masked. A password never needs to be in the spec: a
PostgreSQL URL without one takes it from ``$CVAE_DB_PASSWORD``, a file named by ``$CVAE_DB_PASSWORD_FILE``
(a Docker/Kubernetes secret), or libpq's own ``$PGPASSWORD`` / ``~/.pgpass``.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage

from sweeps.spec import SweepSpec


class StorageError(RuntimeError):
    """The study storage cannot be reached or opened; the message shows the URL with its password masked."""


_PASSWORD = re.compile(r"(?P<head>://[^:/@]+:)(?P<pw>[^@]*)(?P<tail>@)")


def mask_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    return _PASSWORD.sub(lambda m: f"{m['head']}***{m['tail']}", url)


def split_password(url: str) -> tuple[str, str | None]:
    """``postgresql://u:pw@h/db`` -> (``postgresql://u@h/db``, ``pw`` decoded); URLs without one pass through."""
    from urllib.parse import unquote

    match = _PASSWORD.search(url)
    if not match:
        return url, None
    return _PASSWORD.sub(lambda m: m["head"][:-1] + m["tail"], url, count=1), unquote(match["pw"])


def with_password(url: str) -> str:
    """Insert the password from the environment or a secrets file into a PostgreSQL URL that has none."""
    if not url.startswith("postgresql") or _PASSWORD.search(url):
        return url
    password = os.environ.get("CVAE_DB_PASSWORD")
    secret = os.environ.get("CVAE_DB_PASSWORD_FILE")
    if password is None and secret:
        try:
            password = Path(secret).read_text().strip()
        except OSError as err:
            raise StorageError(f"CVAE_DB_PASSWORD_FILE={secret}: cannot read ({err.strerror})") from None
    if not password:
        return url  # libpq may still find PGPASSWORD or ~/.pgpass
    from urllib.parse import quote

    return re.sub(r"://([^/@:]+)@", lambda m: f"://{m[1]}:{quote(password, safe='')}@", url, count=1)


def open_storage(spec: SweepSpec, url: str | None = None) -> optuna.storages.BaseStorage:
    """Open (and for SQLite create the folder of) the study storage, with heartbeats for stale trials.

    Raises:
        StorageError: unreachable server, bad credentials, unwritable file: within seconds.
    """
    url = url or spec.storage
    retry = RetryHeartbeatStaleTrialCallback(max_retry=spec.max_retry, inherit_intermediate_values=True)
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:").removeprefix("//"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs: dict = {"pool_pre_ping": True}
    if url.startswith("sqlite:"):
        db = url.removeprefix("sqlite:///")
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        # Several worker processes write one SQLite file: wait for its lock rather than fail.
        engine_kwargs["connect_args"] = {"timeout": 120}
    elif url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    full = with_password(url)
    deadline = time.monotonic() + 30
    while True:
        try:
            return RDBStorage(
                full, engine_kwargs=engine_kwargs, heartbeat_interval=spec.heartbeat_interval,
                grace_period=spec.grace_period, heartbeat_stale_trial_callback=retry,
            )
        except Exception as err:  # noqa: BLE001 - SQLAlchemy raises many types; all become one clear error
            text = str(err).splitlines()[0] if str(err) else type(err).__name__
            # Two processes creating the tables at once collide; the loser retries once the winner is done.
            racing = any(s in text.lower() for s in ("already exists", "locked", "duplicate", "unique"))
            if racing and time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            raise StorageError(f"cannot open study storage {mask_url(url)}: {mask_url(text)}") from None
