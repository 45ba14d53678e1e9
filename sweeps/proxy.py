"""``cvae sweep proxy``: Optuna's gRPC storage proxy in front of a sweep's database.

Each worker that opens a database holds its own connections (a few per process); thousands of workers would
exhaust PostgreSQL's ``max_connections`` (100 by default). Optuna's answer is a gRPC proxy: one process opens
the database and serves Optuna's storage API over gRPC (``optuna.storages.run_grpc_proxy_server``); the
workers open ``grpc://HOST:PORT`` (``optuna.storages.GrpcStorageProxy``, :func:`cvae.sweeps.storage.open_grpc`)
and never touch the database. The proxy holds at most ``threads`` database connections (2 for one thread),
however many workers there are.

The database is opened as the workers would open it (:func:`cvae.sweeps.storage.open_database`: the password
from ``$CVAE_DB_PASSWORD`` / ``$CVAE_DB_PASSWORD_FILE`` / libpq, an unreachable server fails within seconds, a
lost one is retried, every URL printed with its password masked). Optuna's proxy does not serve a journal
file (optuna/optuna#6084), so the backing storage is a database: PostgreSQL (or MySQL, SQLite).

The proxy has no authentication and no TLS (Optuna's server is insecure): anyone who reaches its port can read
and change every study of the database. It listens on 127.0.0.1 unless told otherwise; any other address gets
a warning, as the dashboard does.

Through the proxy, a worker's storage keeps no Optuna heartbeat (``GrpcStorageProxy`` has none): the sweeps
then beat in a system attribute with the worker's clock, as on a journal file (:mod:`cvae.sweeps.queue`), so
the machines' clocks must agree (NTP) to within a fraction of the heartbeat grace.
"""

from __future__ import annotations

import re
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import TextIO

from cvae.sweeps import experimental_ok
from cvae.sweeps.dashboard import bind_warning
from cvae.sweeps.storage import StorageError, import_grpc, mask_url, open_database, with_password

DEFAULT_PORT = 13000
"""Optuna's default port for the proxy."""
DEFAULT_THREADS = 10
"""Optuna's default thread pool: requests served at once (and so the most database connections)."""
_DATABASE = re.compile(r"^(sqlite|postgresql(\+\w+)?|mysql(\+\w+)?):")


def check_database_url(url: str) -> None:
    """The storage a proxy can serve: a database, not a journal file or another proxy.

    Raises:
        StorageError: naming the URL (masked) and what to give instead.
    """
    if url.startswith("journal:"):
        raise StorageError(f"--storage {mask_url(url)}: Optuna's gRPC proxy does not serve a journal file "
                           "(optuna/optuna#6084): give a database, postgresql+psycopg2://USER@HOST:PORT/DB")
    if url.startswith("grpc:"):
        raise StorageError(f"--storage {mask_url(url)}: that is a proxy's own address; give the database it "
                           "serves, postgresql+psycopg2://USER@HOST:PORT/DB")
    if not _DATABASE.match(url):
        raise StorageError(f"--storage {mask_url(url)}: must be a database URL, postgresql+psycopg2://USER@HOST:PORT/DB "
                           "(or sqlite:///PATH)")


def check_address_free(host: str, port: int) -> None:
    """Fail now, with the reason, when ``host``:``port`` cannot be listened on.

    gRPC's server binds with ``SO_REUSEPORT``: a second proxy on a port another one holds would start without
    a word and take half of its workers' calls. A plain socket's bind sees the port taken (and an unknown
    host, which gRPC reports only as "failed to bind").

    Raises:
        OSError: the host does not resolve, or the address is taken or not this machine's.
    """
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise OSError(f"unknown host ({err.strerror})") from None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed proxy's TIME_WAIT is no obstacle
            try:
                probe.bind(address)
            except OSError as err:
                raise OSError(err.strerror or str(err)) from None


def proxy_url(host: str, port: int) -> str:
    """The ``--storage`` the workers give to reach a proxy listening on ``host``:``port``."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"grpc://{shown}:{port}"


def serve_proxy(url: str, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, threads: int = DEFAULT_THREADS,
                out: TextIO | None = None) -> None:
    """Serve the database at ``url`` through Optuna's gRPC storage proxy until interrupted.

    Raises:
        StorageError: a URL that is not a database, or a database that cannot be opened.
        ValueError: ``threads`` or ``port`` out of range.
        OSError: the address cannot be listened on (port in use, unknown host).
        RuntimeError: gRPC could not bind it all the same.
    """
    out = out or sys.stdout
    check_database_url(url)
    if threads < 1:
        raise ValueError(f"--threads {threads}: must be at least 1")
    if not 0 < port < 65536:
        raise ValueError(f"--port {port}: must be in 1..65535")
    check_address_free(host, port)
    # One connection per thread; opening Optuna's RDB storage takes two at once (its tables and its version).
    connections = max(threads, 2)
    storage = open_database(url, pool_size=connections)
    try:
        storage.get_all_studies()  # the tables exist (Optuna creates them) and the database answers
    except StorageError:
        raise
    except Exception as err:  # noqa: BLE001 - SQLAlchemy raises many types; report one clear line
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise StorageError(f"cannot read studies from {mask_url(url)}: {mask_url(text)}") from None
    import_grpc()
    from optuna.storages import run_grpc_proxy_server

    # Masked from the full URL: one whose password came from the environment shows `user:***@` too.
    print(f"storage proxy for {mask_url(with_password(url))} on {host}:{port} ({threads} thread(s), at most {connections} "
          f"database connections): start workers with --storage {proxy_url(host, port)}", file=out, flush=True)
    warning = bind_warning(host, "the storage proxy", "no authentication and no encryption",
                           "read, change and delete the studies in this database")
    if warning:
        print(warning, file=sys.stderr, flush=True)
    with experimental_ok():
        run_grpc_proxy_server(storage, host=host, port=port,
                              thread_pool=ThreadPoolExecutor(max_workers=threads, thread_name_prefix="proxy"))
