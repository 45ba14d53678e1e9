"""``cvae sweep dashboard``: optuna-dashboard on a sweep's study storage.

The storage is opened as the workers open it (:func:`sweeps.storage.open_storage`: the password from
``$CVAE_DB_PASSWORD`` / ``$CVAE_DB_PASSWORD_FILE`` / libpq, an unreachable server fails within seconds,
messages show the URL with its password masked), then served by ``optuna_dashboard.run_server`` with the
sweep's artifact store (``<output_dir>/artifacts``, :mod:`cvae.sweeps.artifacts`): a trial's page lists its
rollout GIF and PSNR plot. The store is read lazily: a dashboard started before the first trial ends shows
its artifacts once they are uploaded.

optuna-dashboard has no authentication, and its API can rename and delete studies, so it listens on
127.0.0.1 unless told otherwise; from another machine, open it through an SSH tunnel
(``ssh -N -L 8080:127.0.0.1:8080 HOST``). Any other address gets a warning.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from cvae.sweeps.artifacts import artifact_dir, artifact_store
from cvae.sweeps.spec import SweepSpec
from cvae.sweeps.storage import StorageError, mask_url, open_storage

LOOPBACK = ("127.0.0.1", "localhost", "::1")
"""Addresses that only this machine can reach."""


def bind_warning(host: str, server: str = "the dashboard", lacks: str = "no authentication",
                 can: str = "read, rename and delete the studies in this storage") -> str | None:
    """The warning for ``server`` (which has ``lacks``) listening on ``host``, or None for a loopback address
    (the dashboard's, and the storage proxy's: :mod:`cvae.sweeps.proxy`)."""
    if host in LOOPBACK:
        return None
    return (f"warning: {server} listens on {host}: it has {lacks}, and anyone who can reach that address can "
            f"{can}. Unless it is behind a firewall or inside a private network, use the default 127.0.0.1 and an "
            f"SSH tunnel.")


def dashboard_url(host: str, port: int) -> str:
    """The address to open in a browser."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/dashboard"


def _check_local_file(url: str) -> None:
    """A SQLite or journal file that does not exist is a typo or a sweep not started: say so, create nothing."""
    path = None
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path in ("", ":memory:"):
            return
    elif url.startswith("journal:"):
        path = url.removeprefix("journal:").removeprefix("//")
    if path is not None and not Path(path).exists():
        raise StorageError(f"no study storage at {path} ({mask_url(url)}): start the sweep first "
                           f"(`cvae sweep run SPEC` or `cvae sweep init SPEC`), or pass --storage")


def serve_dashboard(spec: SweepSpec, *, storage_url: str | None = None, host: str = "127.0.0.1",
                    port: int = 8080, out: TextIO | None = None) -> None:
    """Serve optuna-dashboard for the spec's storage (or ``storage_url``) until interrupted.

    Raises:
        StorageError: the storage cannot be opened (missing local file, unreachable server, bad password).
        OSError: the address cannot be bound (port in use, unknown host).
    """
    out = out or sys.stdout
    url = storage_url or spec.storage
    _check_local_file(url)
    storage = open_storage(spec, url)
    try:
        names = [s.study_name for s in storage.get_all_studies()]
    except Exception as err:  # noqa: BLE001 - SQLAlchemy raises many types; report one clear line
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise StorageError(f"cannot read studies from {mask_url(url)}: {mask_url(text)}") from None

    print(f"optuna-dashboard for sweep {spec.name} (storage {mask_url(url)}, artifacts "
          f"{artifact_dir(spec.output_dir)}) at {dashboard_url(host, port)}", file=out, flush=True)
    if spec.name not in names:
        print(f"note: study {spec.name!r} is not in this storage yet; it appears when `cvae sweep run` or a "
              f"worker creates it", file=out, flush=True)
    warning = bind_warning(host)
    if warning:
        print(warning, file=sys.stderr, flush=True)

    import optuna_dashboard

    optuna_dashboard.run_server(storage, host=host, port=port, artifact_store=artifact_store(spec.output_dir))
