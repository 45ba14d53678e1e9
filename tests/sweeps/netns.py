"""Machines on a network of a test's own: Linux network namespaces, each joined to this one by a veth link.

    with Network(["a", "b"]) as net:                 # root and ip(8) only
        net.host_address("a")                         # this side of a's link, where a test's server listens
        net.popen("a", [...])                         # a process on machine a (its network: that one link)
        net.cut("a"); net.restore("a")                # the link down and up: a's packets are lost meanwhile

Each machine is a namespace with one /30 link to this namespace, from 198.18.0.0/15 (RFC 2544's range for
network tests) and checked unused here; a machine reaches only the host side of its own link, where a test's
own PostgreSQL listens, and nothing else (no route). Nothing is left behind: deleting a namespace deletes its
link. :func:`unavailable` says why it cannot run here (not root, no ``ip``).
"""

from __future__ import annotations

import ipaddress
import os
import random
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

RANGE = ipaddress.ip_network("198.18.0.0/15")

RTO_MAX_MS = 1000
"""TCP's retransmission timeout cap inside a machine (``net.ipv4.tcp_rto_max_ms``, Linux 6.11+, per namespace):
a call that was in flight when the link went down reaches the server within a second of the link's return,
instead of at the next step of TCP's exponential backoff (minutes into a long cut). What the test sees is the
same; it only waits less."""


class NetworkError(RuntimeError):
    """An ``ip`` command failed; the message has its output."""


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no ip(8) (Debian's iproute2)"
    return None


def _ip(*args: str) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {(proc.stdout + proc.stderr).strip()}")
    return proc.stdout


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = _ip("-o", "-4", "addr", "show")
    nets = []
    for line in out.splitlines():
        fields = line.split()
        if "inet" in fields:
            nets.append(ipaddress.ip_interface(fields[fields.index("inet") + 1]).network)
    return nets


class Network:
    """Namespaces ``cv<pid><i>`` with links ``cv<pid><i>h`` (this side) to ``cv<pid><i>m`` (the machine's)."""

    def __init__(self, machines: Sequence[str]) -> None:
        self.machines = list(machines)
        self.tag = f"cv{os.getpid() % 100000}"
        self.links: dict[str, ipaddress.IPv4Network] = {}

    def namespace(self, machine: str) -> str:
        return f"{self.tag}{self.machines.index(machine)}"

    def _host_link(self, machine: str) -> str:
        return f"{self.namespace(machine)}h"

    def host_address(self, machine: str) -> str:
        """This side of ``machine``'s link: where a server for it listens."""
        return str(self.links[machine][1])

    @property
    def subnets(self) -> tuple[str, ...]:
        return tuple(str(net) for net in self.links.values())

    def __enter__(self) -> Network:
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _create(self) -> None:
        used = _used_networks()
        blocks = list(RANGE.subnets(new_prefix=30))
        for machine in self.machines:
            net = next(b for b in random.sample(blocks, 64) if not any(b.overlaps(u) for u in used))
            used.append(net)
            ns, host, peer = self.namespace(machine), self._host_link(machine), f"{self.namespace(machine)}m"
            _ip("netns", "add", ns)
            self.links[machine] = net
            _ip("link", "add", host, "type", "veth", "peer", "name", peer)
            _ip("link", "set", peer, "netns", ns)
            _ip("addr", "add", f"{net[1]}/30", "dev", host)
            _ip("link", "set", host, "up")
            _ip("netns", "exec", ns, "ip", "addr", "add", f"{net[2]}/30", "dev", peer)
            _ip("netns", "exec", ns, "ip", "link", "set", peer, "up")
            _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
            rto = Path("/proc/sys/net/ipv4/tcp_rto_max_ms")
            if rto.exists():
                _ip("netns", "exec", ns, "sh", "-c", f"echo {RTO_MAX_MS} > {rto}")

    def popen(self, machine: str, cmd: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start ``cmd`` on ``machine`` (its network namespace; the same files, users and processes)."""
        return subprocess.Popen(["ip", "netns", "exec", self.namespace(machine), *cmd], **kwargs)

    def cut(self, machine: str) -> None:
        """Take ``machine``'s link down: its packets are lost, its open connections hang (a pulled cable)."""
        _ip("link", "set", self._host_link(machine), "down")

    def restore(self, machine: str) -> None:
        _ip("link", "set", self._host_link(machine), "up")

    def close(self) -> None:
        for machine in self.links:
            for args in (("netns", "delete", self.namespace(machine)),  # deletes its link too
                         ("link", "delete", self._host_link(machine))):  # a link never moved into it
                try:
                    _ip(*args)
                except NetworkError:
                    pass
        self.links.clear()
