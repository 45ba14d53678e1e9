"""Study storage: SQLite (default), PostgreSQL (many machines), an Optuna journal file, or Optuna's gRPC
storage proxy in front of a database (``grpc://HOST:PORT``, served by ``cvae sweep proxy``: thousands of
workers, a bounded number of database connections).

Storage URLs are printed with their password masked. A password never needs to be in the spec: a
PostgreSQL URL without one takes it from ``$CVAE_DB_PASSWORD``, a file named by ``$CVAE_DB_PASSWORD_FILE``
(a Docker/Kubernetes secret), or libpq's own ``$PGPASSWORD`` / ``~/.pgpass``.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from cvae.sweeps import experimental_ok
from cvae.sweeps.optuna_private import BaseHeartbeat, cached_rdb_storage
from cvae.sweeps.spec import SweepSpec, grpc_address
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage

from cvae import secrets
from cvae.secrets import mask_url, split_password

log = logging.getLogger("cvae")

__all__ = ["StorageError", "import_grpc", "mask_url", "open_database", "open_storage", "split_password",
           "with_password"]


class StorageError(RuntimeError):
    """The study storage cannot be reached or opened; the message shows the URL with its password masked."""


def with_password(url: str) -> str:
    """:func:`cvae.secrets.with_password`, its error a :class:`StorageError`."""
    try:
        return secrets.with_password(url)
    except secrets.PasswordFileError as err:
        raise StorageError(str(err)) from None


def open_storage(spec: SweepSpec, url: str | None = None) -> optuna.storages.BaseStorage:
    """Open (and for SQLite create the folder of) the study storage, with heartbeats for stale trials.

    A database storage comes wrapped in :class:`ResilientStorage`: once opened, a call that loses the server
    is retried with backoff for :data:`RETRY_BUDGET_S` seconds. So does a ``grpc://`` proxy's client
    (:func:`open_grpc`), which keeps no Optuna heartbeat: the sweeps keep theirs in a system attribute.

    Raises:
        StorageError: unreachable server, bad credentials, unwritable file or folder: within seconds.
    """
    url = url or spec.storage
    if url.startswith("grpc:"):
        return open_grpc(url)
    with experimental_ok():
        retry = RetryHeartbeatStaleTrialCallback(max_retry=spec.max_retry, inherit_intermediate_values=True)
    return open_database(url, heartbeat_interval=spec.heartbeat.interval, grace_period=spec.heartbeat.grace,
                         stale_trial_callback=retry)


def open_database(url: str, *, heartbeat_interval: int | None = None, grace_period: int | None = None,
                  stale_trial_callback: Any = None, pool_size: int | None = None) -> optuna.storages.BaseStorage:
    """Open a SQLite, PostgreSQL or journal storage (:func:`open_storage` without a spec: what
    ``cvae sweep proxy`` serves); ``pool_size``: at most this many database connections at once.

    Raises:
        StorageError: as :func:`open_storage`.
    """
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:").removeprefix("//"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as err:
            raise StorageError(f"cannot open study storage {mask_url(url)}: {_os_text(err)}") from None
    engine_kwargs: dict = {"pool_pre_ping": True}
    if url.startswith("sqlite:"):
        db = sqlite_path(url)
        if db and db != ":memory:":
            try:
                Path(db).parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise StorageError(f"cannot open study storage {mask_url(url)}: {_os_text(err)}") from None
        # Several worker processes write one SQLite file: wait for its lock rather than fail.
        engine_kwargs["connect_args"] = {"timeout": 120}
    elif url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    if pool_size is not None and not (url.startswith("sqlite:") and sqlite_path(url) in (None, ":memory:")):
        engine_kwargs.update(pool_size=pool_size, max_overflow=0)
    full = with_password(url)
    deadline = time.monotonic() + 30
    while True:
        try:
            with experimental_ok():
                rdb = RDBStorage(
                    full, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period, heartbeat_stale_trial_callback=stale_trial_callback,
                )
            if url.startswith("sqlite:"):
                _serialize_sqlite(rdb.engine)
            # The cache Optuna itself puts in front of an RDBStorage (optuna.storages.get_storage).
            # Masked from the full URL: one whose password came from the environment shows `user:***@` too.
            return ResilientStorage(cached_rdb_storage(rdb), mask_url(full))
        except Exception as err:  # noqa: BLE001 - SQLAlchemy raises many types; all become one clear error
            text = root_cause_text(err)
            # Two processes creating the tables at once collide; the loser retries once the winner is done.
            racing = any(s in text.lower() for s in ("already exists", "locked", "duplicate", "unique"))
            if racing and time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            raise StorageError(f"cannot open study storage {mask_url(full)}: {mask_url(text)}{_hint(text)}") from None


# -- the gRPC storage proxy's client ------------------------------------------------------------------------
GRPC_CONNECT_TIMEOUT_S = 5.0
"""How long opening a ``grpc://`` storage waits for the proxy to answer."""


def open_grpc(url: str, timeout: float = GRPC_CONNECT_TIMEOUT_S) -> optuna.storages.BaseStorage:
    """A client of Optuna's gRPC storage proxy (``cvae sweep proxy``) at ``grpc://HOST:PORT``, wrapped in
    :class:`ResilientStorage` (a proxy that goes away is retried for :data:`RETRY_BUDGET_S` seconds).

    Raises:
        StorageError: not ``grpc://HOST:PORT`` with a port in 1..65535, or no proxy answered within ``timeout`` seconds.
    """
    address = grpc_address(url)
    if address is None:
        raise StorageError(f"bad study storage {mask_url(url)}: a gRPC storage proxy's URL is grpc://HOST:PORT "
                           "(the address `cvae sweep proxy` listens on)")
    host, port = address
    import_grpc()
    from optuna.storages import GrpcStorageProxy

    with experimental_ok():
        proxy = GrpcStorageProxy(host=host, port=port)
    try:
        proxy.wait_server_ready(timeout=timeout)
    except ConnectionError:
        proxy.close()
        raise StorageError(f"cannot open study storage {url}: no gRPC storage proxy answered within {timeout:g} s "
                           "(start one with `cvae sweep proxy --storage DATABASE_URL`)") from None
    return ResilientStorage(proxy, url)


def import_grpc():
    """gRPC, imported where a ``grpc://`` storage or a proxy is first used (importing this module changes no
    global state), with its fork support off unless the environment says otherwise: gRPC's fork support restarts
    its poller in a forked child, where Popen's close_fds then closes the poller's epoll descriptor, and the child
    aborts before its exec (grpc/grpc#43055, grpcio >= 1.81). The sweeps fork only to exec (worker processes,
    W&B's service), which needs no fork support. The variable must be set before gRPC is first imported."""
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    import grpc

    return grpc


def _serialize_sqlite(engine: Any) -> None:
    """Make each of SQLite's transactions atomic, reads included.

    Python's sqlite3 driver begins a transaction only at the first write, so a read-then-write is not atomic:
    two workers claiming the queue's first WAITING trial (Optuna reads its state, then sets RUNNING) could both
    take it; measured with 4 processes claiming a 60-trial queue, 8 to 13 trials were taken twice. SQLAlchemy's
    documented remedy for pysqlite: switch the driver's own transaction handling off and begin every
    transaction with ``BEGIN IMMEDIATE``, so that one connection at a time reads and writes; the others wait
    out SQLite's busy timeout (120 s here). Connections opened before the listeners are dropped.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection: Any, record: Any) -> None:  # noqa: ARG001 - SQLAlchemy's signature
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()


def sqlite_path(url: str) -> str | None:
    """The database file of a ``sqlite:`` URL as SQLAlchemy reads it (None: in memory), checked before anything
    is created: a URL with a host (``sqlite://study.db``, two slashes) names no file but would make a folder.

    Raises:
        StorageError: the URL does not parse, or has a host.
    """
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - sqlalchemy.exc.ArgumentError, ValueError: one clear line for any
        parsed = None
    if parsed is None or parsed.host:
        raise StorageError(f"bad study storage {mask_url(url)}: a SQLite URL is sqlite:///relative/path.db "
                           "(three slashes) or sqlite:////absolute/path.db (four)")
    return parsed.database


def _os_text(err: OSError) -> str:
    where = f" ({err.filename})" if err.filename else ""
    return f"{err.strerror or err}{where}"


# -- riding out outages ------------------------------------------------------------------------------------
RETRY_BUDGET_S = float(os.environ.get("CVAE_STORAGE_RETRY_S") or 180)
"""How long a storage call that lost the server is retried before the worker gives up (``$CVAE_STORAGE_RETRY_S``)."""

_TRANSIENT = (
    "connection refused", "could not connect", "server closed the connection", "terminating connection",
    "connection reset", "connection timed out", "timeout expired", "no connection to the server",
    "connection already closed", "connection is closed", "could not receive data", "could not send data",
    "the database system is starting up", "the database system is shutting down",
    "the database system is in recovery mode", "ssl syscall", "broken pipe", "database is locked",
    "server has gone away", "lost connection", "cannot connect now",
    "no route to host", "network is unreachable", "host is unreachable",  # this machine is off the network
)


def _hint(text: str) -> str:
    """What to do about a database error whose remedy is not in its text, else ""."""
    if "too many clients" in text.lower() or "too many connections" in text.lower():
        return ("; the database's max_connections is reached: each worker holds two connections, so raise it "
                "or serve the workers through `cvae sweep proxy` (docs/scale-out.md#the-storages-ceiling)")
    return ""


def root_cause_text(err: BaseException) -> str:
    """The first line of the innermost error behind ``err`` that says something (Optuna hides SQLAlchemy's behind a
    generic one, and SQLAlchemy's pool can leave an empty ``InvalidatePoolError`` behind the driver's)."""
    inner, said = err, ""
    seen = set()
    while inner is not None and id(inner) not in seen:
        seen.add(id(inner))
        if _grpc_code(inner) is not None:
            text = f"{(inner.details() or '').strip()} (gRPC {inner.code().name})".strip()
        else:
            text = str(getattr(inner, "orig", None) or inner).strip()
        if text and text != "()":
            said = text
        inner = inner.__cause__ or inner.__context__
    return said.splitlines()[0] if said else type(err).__name__


def is_transient(err: BaseException) -> bool:
    """Whether ``err`` is a lost or refused connection (worth retrying), not a bad query or a read-only file."""
    chain, inner = [], err
    while inner is not None and inner not in chain:
        chain.append(inner)
        inner = inner.__cause__ or inner.__context__
    if any(isinstance(e, sqlalchemy.exc.DBAPIError) and e.connection_invalidated for e in chain):
        return True
    if any(_grpc_code(e) is not None for e in chain):  # the proxy: down or restarting is UNAVAILABLE
        return any(_grpc_code(e) == sys.modules["grpc"].StatusCode.UNAVAILABLE for e in chain)
    if not any(_is_storage_failure(e) for e in chain):
        return False
    text = " ".join(str(e).lower() for e in chain)
    return any(marker in text for marker in _TRANSIENT)


def _is_storage_failure(err: BaseException) -> bool:
    """A failure of the database behind an RDB storage (SQLAlchemy's, or Optuna's wrapper of it), or of a
    call to the gRPC storage proxy (the errors Optuna's client does not turn into its own)."""
    return (isinstance(err, (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError))
            or _grpc_code(err) is not None)


def _grpc_code(err: BaseException):
    """The status (a ``grpc.StatusCode``) of a failed gRPC call, else None (always None before gRPC is imported:
    then no call has failed)."""
    grpc, code = sys.modules.get("grpc"), getattr(err, "code", None)
    return code() if grpc is not None and isinstance(err, grpc.RpcError) and callable(code) else None


class ResilientStorage(optuna.storages.BaseStorage, BaseHeartbeat):
    """An Optuna storage that rides out a database outage: each call that lost its connection is retried
    with exponential backoff (0.5 s doubling to 15 s) for up to ``budget_s`` seconds, then raises
    :class:`StorageError` naming the (masked) storage. Any other database failure (a read-only SQLite file,
    a full disk) becomes a one-line :class:`StorageError` at once. Optuna's own errors pass through. Through
    the gRPC proxy (``grpc://``), a proxy that cannot be reached (gRPC ``UNAVAILABLE``: stopped, restarting)
    is retried the same way; any other failed call (the proxy's own database gave up) is one line at once.

    Retrying is safe: Optuna's writes are single transactions, rolled back when the connection drops, and a
    state change that did land before the drop answers the retry with ``UpdateFinishedTrialError``, which
    the callers already treat as "someone else took it".
    """

    def __init__(self, inner: optuna.storages.BaseStorage, label: str, budget_s: float | None = None) -> None:
        self._inner = inner
        self.label = label
        self.budget_s = RETRY_BUDGET_S if budget_s is None else budget_s

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self._inner, name)
        start = time.monotonic()
        delay = 0.5
        warned = False
        while True:
            try:
                result = method(*args, **kwargs)
            except Exception as err:
                if not _is_storage_failure(err):
                    raise
                text = mask_url(root_cause_text(err))
                if not is_transient(err):
                    raise StorageError(f"study storage {self.label}: {text}{_hint(text)}") from None
                waited = time.monotonic() - start
                if waited >= self.budget_s:
                    raise StorageError(f"study storage {self.label} unreachable for {waited:.0f} s "
                                       f"(gave up after $CVAE_STORAGE_RETRY_S={self.budget_s:.0f} s): {text}") from None
                if not warned:
                    log.warning("study storage %s: %s; retrying for up to %.0f s", self.label, text, self.budget_s)
                    warned = True
                time.sleep(min(delay, max(self.budget_s - waited, 0.1)))
                delay = min(delay * 2, 15.0)
                continue
            if warned:
                log.warning("study storage %s: back after %.1f s", self.label, time.monotonic() - start)
            return result

    def __getattr__(self, name: str) -> Any:  # Optuna's private helpers (_get_stale_trial_ids, ...)
        if name == "_inner":  # not set yet (a copy or unpickling): no delegation, no recursion
            raise AttributeError(name)
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr
        return functools.partial(self._call, name)

    def remove_session(self) -> None:
        if hasattr(self._inner, "remove_session"):
            self._inner.remove_session()


def _delegate(name: str) -> Any:
    def method(self: ResilientStorage, *args: Any, **kwargs: Any) -> Any:
        return self._call(name, *args, **kwargs)

    method.__name__ = name
    return method


for _name in sorted(optuna.storages.BaseStorage.__abstractmethods__ | BaseHeartbeat.__abstractmethods__
                    | {"get_failed_trial_callback", "get_best_trial", "get_n_trials"}):
    setattr(ResilientStorage, _name, _delegate(_name))
ResilientStorage.__abstractmethods__ = frozenset()


def _without_heartbeat(name: str) -> Any:
    """``name`` answers None for a storage that keeps no Optuna heartbeat (the gRPC proxy's client): Optuna
    (``is_heartbeat_enabled``) and the sweeps (``has_heartbeat``) then see none, and the sweeps keep theirs in
    a system attribute (:mod:`cvae.sweeps.queue`)."""
    def method(self: ResilientStorage, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(self._inner, BaseHeartbeat):
            return None
        return self._call(name, *args, **kwargs)

    method.__name__ = name
    return method


for _name in ("get_heartbeat_interval", "get_failed_trial_callback"):
    setattr(ResilientStorage, _name, _without_heartbeat(_name))
