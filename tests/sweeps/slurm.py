"""A throwaway one-node Slurm cluster for tests: munged, slurmctld and slurmd of Debian's packages, started on
127.0.0.1 from a temp folder, stopped and deleted at the end.

Nothing system-wide is used or changed: the cluster has its own ``slurm.conf``, munge key and socket, state,
spool, pid and log files in the temp folder, and its own free TCP ports; clients find it through
``SLURM_CONF`` (:attr:`SlurmCluster.env`). The daemons run in the foreground as this process's children, so
stopping them is killing known pids. Jobs run as the submitting user; this needs root (slurmd launches jobs
as their user), which the tests and CI have.

    with SlurmCluster() as cluster:
        subprocess.run(["sbatch", ...], env={**os.environ, **cluster.env})
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scontrol", "scancel", "srun")
NODE = "localhost"
"""The node's name (slurmd is told it with ``-N``; its address is 127.0.0.1 whatever the machine's hostname)."""
PARTITION = "debug"
CPUS = 2
"""CPUs of the node (as configured: ``SlurmdParameters=config_overrides`` keeps slurmd from checking them)."""
MEMORY_MB = 8000
TIMEOUT = 60
"""Seconds the cluster may take to come up (a few on an idle machine)."""


class SlurmError(RuntimeError):
    """The cluster could not be set up or started; the message ends with the daemons' log tails."""


def missing_binaries() -> list[str]:
    """The Slurm and munge programs not installed (``apt-get install slurmctld slurmd munge``)."""
    found = {name: shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name) if p.exists()), None)
        for name in (*DAEMONS, *CLIENTS)}
    return [name for name, path in found.items() if path is None]


def _which(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin") / name)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    """munged + slurmctld + slurmd for the lifetime of a ``with`` block; one node (``localhost``, 2 CPUs,
    8000 MB), one partition (``debug``), no accounting database.

    Attributes:
        root: the temp folder (``slurm.conf``, ``munge/``, ``state/``, ``spool/``, ``*.log``); removed on exit.
        env: what a client needs in its environment (``SLURM_CONF``).
    """

    def __init__(self) -> None:
        missing = missing_binaries()
        if missing:
            raise SlurmError(f"not installed: {', '.join(missing)} (apt-get install slurmctld slurmd munge)")
        if os.geteuid() != 0:
            raise SlurmError("a test Slurm cluster needs root: slurmd starts jobs as their user")
        self.root: Path | None = None
        self.env: dict[str, str] = {}
        self._procs: dict[str, subprocess.Popen] = {}

    # -- files ---------------------------------------------------------------------------------------------
    @property
    def conf(self) -> Path:
        assert self.root is not None
        return self.root / "slurm.conf"

    def _write_munge_key(self, munge_dir: Path) -> Path:
        munge = pwd.getpwnam("munge")
        munge_dir.mkdir(mode=0o700)
        os.chown(munge_dir, munge.pw_uid, munge.pw_gid)
        key = munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        os.chown(key, munge.pw_uid, munge.pw_gid)
        return key

    def _write_conf(self, ctld_port: int, slurmd_port: int) -> None:
        assert self.root is not None
        r = self.root
        self.conf.write_text(f"""\
# written by tests/sweeps/slurm.py: a one-node test cluster on 127.0.0.1
ClusterName=cvaetest
SlurmctldHost={NODE}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={r / 'munge' / 'munge.socket'}
StateSaveLocation={r / 'state'}
SlurmdSpoolDir={r / 'spool'}
SlurmctldPidFile={r / 'slurmctld.pid'}
SlurmdPidFile={r / 'slurmd.pid'}
SlurmctldLogFile={r / 'slurmctld.log'}
SlurmdLogFile={r / 'slurmd.log'}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/builtin
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=30
MinJobAge=600
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={NODE} NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory={MEMORY_MB} State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
""")

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> SlurmCluster:
        """Write the configuration, start the three daemons and wait until the node is idle."""
        self.root = Path(tempfile.mkdtemp(prefix="cvae-slurm-"))
        self.root.chmod(0o755)  # munged (its own user) checks the folders above its socket and key
        try:
            for sub in ("state", "spool"):
                (self.root / sub).mkdir()
            key = self._write_munge_key(self.root / "munge")
            for attempt in range(3):  # another process may take a probed port before slurmctld binds it
                self._write_conf(free_port(), free_port())
                self.env = {"SLURM_CONF": str(self.conf)}
                try:
                    self._start_daemons(key)
                    break
                except SlurmError as err:
                    self._stop_daemons()
                    if attempt == 2 or "Address already in use" not in str(err):
                        raise
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, cmd: list[str], user: str | None = None) -> None:
        assert self.root is not None
        as_user = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []} if user else {}
        with open(self.root / f"{name}.out", "ab") as log:  # the daemon's own stdout/stderr
            self._procs[name] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                                 env={**os.environ, **self.env}, cwd=self.root,
                                                 start_new_session=True, **as_user)

    def _start_daemons(self, key: Path) -> None:
        assert self.root is not None
        m = self.root / "munge"
        self._spawn("munged", [_which("munged"), "--foreground", "--force",
                               f"--socket={m / 'munge.socket'}", f"--key-file={key}", f"--pid-file={m / 'munged.pid'}",
                               f"--log-file={m / 'munged.log'}", f"--seed-file={m / 'munged.seed'}"], user="munge")
        self._wait(lambda: (m / "munge.socket").exists(), "munged's socket")
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-c", "-f", str(self.conf)])
        self._wait(lambda: self._client("sinfo", "-h").returncode == 0, "slurmctld to answer")
        self._spawn("slurmd", [_which("slurmd"), "-D", "-N", NODE, "-f", str(self.conf)])
        self._wait(lambda: self.node_state() == "idle", f"node {NODE} to be idle")

    def _client(self, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, **self.env})
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(list(args), 124, "", f"timed out after {timeout}s")

    def node_state(self) -> str:
        """The node's state as ``sinfo`` says it (``idle``, ``mixed``, ``allocated``, ``down*``, ...)."""
        done = self._client("sinfo", "-h", "-n", NODE, "-o", "%T")
        return done.stdout.strip() if done.returncode == 0 else ""

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise SlurmError(f"{name} exited ({proc.returncode}) while waiting for {what}{self.log_tails()}")
            if ready():
                return
            time.sleep(0.2)
        raise SlurmError(f"timed out after {TIMEOUT}s waiting for {what}{self.log_tails()}")

    def log_tails(self, lines: int = 15) -> str:
        """The last lines of each daemon's log, for a failure's message."""
        out = []
        if self.root is not None:
            for path in (self.root / "munge" / "munged.log", *sorted(self.root.glob("*.log")),
                         *sorted(self.root.glob("*.out"))):
                try:
                    text = path.read_text(errors="replace").splitlines()[-lines:]
                except OSError:
                    continue
                if text:
                    out.append(f"--- {path.name} ---\n" + "\n".join(text))
        return ("\n" + "\n".join(out)) if out else ""

    def cancel_all(self, wait_s: float = 60) -> None:
        """Cancel every job of the cluster and wait until none is left (their processes have ended)."""
        self._client("scancel", "--full", "--partition", PARTITION)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            done = self._client("squeue", "-h", "-o", "%i")
            if done.returncode != 0 or not done.stdout.strip():
                return
            time.sleep(0.5)

    def stop(self) -> None:
        """Cancel the jobs, stop the daemons (SIGTERM, then SIGKILL) and remove the folder; safe to call twice."""
        if self.root is None:
            return
        try:
            if "slurmd" in self._procs and self._procs["slurmd"].poll() is None:
                self.cancel_all()
        finally:
            self._stop_daemons()
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def _stop_daemons(self) -> None:
        for name in reversed(DAEMONS):
            proc = self._procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
