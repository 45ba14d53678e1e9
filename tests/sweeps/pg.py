"""A throwaway PostgreSQL server for tests: ``initdb`` into a temp folder, start on 127.0.0.1, stop, delete.

PostgreSQL refuses to run as root, so when the tests run as root (here and in CI) every server binary runs
as the ``postgres`` OS user (``runuser -u postgres -- ...``) in a folder chowned to it; otherwise the
binaries run as the current user. Only 127.0.0.1 (and the server's private socket folder) is trusted.

    with PostgresServer() as pg:
        url = pg.create_database("study")   # postgresql+psycopg2://postgres@127.0.0.1:<port>/study
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

SUPERUSER = "postgres"
"""The superuser ``initdb -U`` creates; every URL connects as it (trust auth, no password)."""

RUN_AS = "postgres"
"""The OS user that runs the server when the tests run as root."""

TIMEOUT = 60
"""Seconds any one subprocess call may take (initdb and start take one or two)."""

_DB_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresError(RuntimeError):
    """The server could not be set up, started or used; the message ends with the server log's tail."""


def _version_key(bindir: str) -> tuple[int, ...]:
    match = re.search(r"/postgresql/([\d.]+)/bin$", bindir)
    return tuple(int(x) for x in match.group(1).split(".") if x) if match else (0,)


def find_bindir() -> Path | None:
    """The folder of ``initdb``/``pg_ctl``/``postgres``: Debian's newest ``/usr/lib/postgresql/*/bin``,
    else ``pg_config --bindir``, else the one on ``PATH``; None when PostgreSQL is not installed."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True)
            candidates.append(out.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).parent))
    for cand in candidates:
        if cand and all(os.access(Path(cand) / exe, os.X_OK) for exe in ("initdb", "pg_ctl", "postgres")):
            return Path(cand)
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _traversable_by_others(path: Path) -> bool:
    """Whether every folder from / down to ``path`` lets other users through (o+x)."""
    for p in [path, *path.parents]:
        try:
            if not os.stat(p).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


class PostgresServer:
    """A PostgreSQL server in a fresh temp folder, for the lifetime of a ``with`` block.

    Attributes:
        port: the TCP port on 127.0.0.1.
        url: SQLAlchemy URL of the database created at start (``dbname``).
        root: the temp folder (``data/``, ``sock/``, ``server.log``); removed on exit.
    """

    def __init__(self, dbname: str = "cvae_test", *, bindir: str | os.PathLike | None = None,
                 listen: tuple[str, ...] = (), trust: tuple[str, ...] = (), max_connections: int = 100) -> None:
        found = Path(bindir) if bindir else find_bindir()
        if found is None:
            raise PostgresError("PostgreSQL is not installed: no initdb/pg_ctl/postgres found in "
                                "/usr/lib/postgresql/*/bin, `pg_config --bindir` or PATH")
        self.bindir = found
        self.dbname = dbname
        self.listen = ("127.0.0.1", *listen)
        """The addresses the server listens on: 127.0.0.1 and ``listen`` (a test's own links)."""
        self.trust = ("127.0.0.1/32", *trust)
        """The client networks trusted without a password: 127.0.0.1 and ``trust``."""
        self.max_connections = max_connections
        """PostgreSQL's limit on connections (its default, 100; benchmarks/storage_ceiling.py sets others)."""
        self.port: int | None = None
        self.root: Path | None = None
        self.url: str | None = None
        self._as_root = os.geteuid() == 0

    # -- paths and commands ---------------------------------------------------------------------------
    @property
    def datadir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        assert self.root is not None
        return self.root / "server.log"

    def _cmd(self, exe: str, *args: str) -> list[str]:
        cmd = [str(self.bindir / exe), *args]
        return ["runuser", "-u", RUN_AS, "--", *cmd] if self._as_root else cmd

    def _run(self, exe: str, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
        cmd = self._cmd(exe, *args)
        try:
            proc = subprocess.run(cmd, cwd=self.root, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise PostgresError(f"{exe} timed out after {timeout}s: {' '.join(cmd)}{self._log_tail()}") from None
        except OSError as err:
            raise PostgresError(f"cannot run {exe}: {err}") from None
        if proc.returncode != 0:
            raise PostgresError(f"{exe} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                                f"{(proc.stdout + proc.stderr).strip()[-2000:]}{self._log_tail()}")
        return proc

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.logfile.read_text(errors="replace").splitlines()[-lines:]
        except (OSError, AssertionError):
            return ""
        return "\n--- server log (tail) ---\n" + "\n".join(text) if text else ""

    def _make_root(self) -> Path:
        """A private temp folder the server's user owns, under a base folder it can traverse."""
        bases = [Path(tempfile.gettempdir()), Path("/tmp")]
        base = next((b for b in bases if not self._as_root or _traversable_by_others(b)), None)
        if base is None:
            raise PostgresError(f"no temp folder that user {RUN_AS} can traverse among {bases}")
        root = Path(tempfile.mkdtemp(prefix="cvae-pg-", dir=base))
        if self._as_root:
            shutil.chown(root, user=RUN_AS, group=None)
        return root

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> PostgresServer:
        """initdb, trust 127.0.0.1 only, start on a free port (a few seconds), create ``dbname``."""
        self.root = self._make_root()
        try:
            self._run("initdb", "-D", str(self.datadir), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
                      "--locale=C", "--no-sync", "--no-instructions")
            (self.datadir / "pg_hba.conf").write_text(
                "# written by tests/sweeps/pg.py: the private socket folder, 127.0.0.1 and a test's own links only\n"
                "local all all trust\n" + "".join(f"host  all all {net} trust\n" for net in self.trust)
            )
            (self.root / "sock").mkdir()
            if self._as_root:
                shutil.chown(self.root / "sock", user=RUN_AS, group=None)
            for attempt in range(3):  # another process may grab the free port between probe and bind
                self.port = free_port()
                try:
                    self._pg_start()
                    break
                except PostgresError as err:
                    if attempt == 2 or "already in use" not in str(err):
                        raise
            self.url = self.create_database(self.dbname)
        except BaseException:
            self.stop()
            raise
        return self

    def _pg_start(self) -> None:
        assert self.root is not None and self.port is not None
        opts = (f"-c listen_addresses={','.join(self.listen)} -p {self.port} -k {self.root / 'sock'} "
                f"-c fsync=off -c max_connections={self.max_connections}")
        self._run("pg_ctl", "-D", str(self.datadir), "-o", opts, "-w", "-t", "30", "start", "-l", str(self.logfile))

    def pause(self) -> None:
        """Stop the server (fast shutdown: clients are disconnected), keeping its data: an outage."""
        self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "-t", "30", "stop", timeout=45)

    def resume(self) -> None:
        """Start the server again after :meth:`pause`, on the same port with the same data."""
        self._pg_start()

    def stop(self) -> None:
        """Stop the server (fast shutdown, killed if that fails) and remove its folder; safe to call twice."""
        if self.root is None:
            return
        try:
            if (self.datadir / "postmaster.pid").exists():
                try:
                    self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "-t", "30", "stop",
                              timeout=45)
                except PostgresError:
                    self._kill_postmaster()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def _kill_postmaster(self) -> None:
        try:
            pid = int((self.datadir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        for sig in (signal.SIGQUIT, signal.SIGKILL):  # SIGQUIT: immediate shutdown of the postmaster
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.1)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- databases -------------------------------------------------------------------------------------
    def url_for(self, name: str) -> str:
        """The SQLAlchemy URL of database ``name`` on this server."""
        return f"postgresql+psycopg2://{SUPERUSER}@127.0.0.1:{self.port}/{name}"

    def create_database(self, name: str) -> str:
        """Create an empty database (a lowercase identifier) and return its URL."""
        if not _DB_NAME.fullmatch(name):
            raise ValueError(f"database name {name!r}: use lowercase letters, digits and '_' (at most 63)")
        import psycopg2

        try:
            conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres",
                                    connect_timeout=10)
        except psycopg2.Error as err:
            raise PostgresError(f"cannot connect to the test server on port {self.port}: {err}"
                                f"{self._log_tail()}") from None
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        except psycopg2.Error as err:
            raise PostgresError(f"CREATE DATABASE {name} failed: {err}{self._log_tail()}") from None
        finally:
            conn.close()
        return self.url_for(name)
