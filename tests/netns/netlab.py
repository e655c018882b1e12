"""Linux network namespaces as test hosts: each host gets its own namespace and address, joined to one bridge.

    lab = NetLab.create()                 # a bridge with 10.A.B.1/24 in this (the root) namespace
    chain = lab.add_host("chain")         # namespace snl<tag>-chain, eth0 = 10.A.B.2, veth to the bridge
    subprocess.Popen([*lab.exec_prefix(chain), "anvil", "--host", "127.0.0.1"])
    lab.cut(chain); lab.restore(chain)    # the host's link down / up (its processes keep running)
    lab.limit_rate(chain, 100)            # tbf on both ends of its link, in Mbit/s
    lab.close()                           # kills what still runs in the namespaces, deletes them and the bridge

Names carry this process's id (`snl` + pid in 6 hex digits + a per-process counter), so runs in parallel never
collide, and `NetLab.create()` first deletes what crashed runs left behind (namespaces and bridges whose pid
is gone). Needs root and `ip netns`; `unavailable_reason()` says why not, for a test skip.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import zlib
from dataclasses import dataclass, field

PREFIX = "snl"
_counter = itertools.count()


class NetLabError(RuntimeError):
    """An `ip`/`tc` command failed; the message names the command and what it printed."""


def sh(*cmd: str, check: bool = True) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise NetLabError(
            f"`{' '.join(cmd)}` failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
        )
    return done.stdout


def unavailable_reason() -> str | None:
    """Why namespace networks cannot be built here (for `pytest.skip`), or None when they can."""
    if not os.uname().sysname == "Linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root; run the netns tests with sudo)"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "the `ip` and `tc` commands (iproute2) are not installed: apt-get install iproute2"
    probe = f"{PREFIX}{os.getpid():06x}probe"
    try:
        sh("ip", "netns", "add", probe)
    except NetLabError as exc:
        return f"`ip netns add` does not work here: {exc}"
    sh("ip", "netns", "del", probe, check=False)
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_pid(name: str) -> int | None:
    if not name.startswith(PREFIX) or len(name) < len(PREFIX) + 6:
        return None
    try:
        return int(name[len(PREFIX) : len(PREFIX) + 6], 16)
    except ValueError:
        return None


def kill_namespace_processes(ns: str) -> None:
    """SIGKILL every process still running in namespace `ns` (they were started in it by the harness)."""
    for line in sh("ip", "netns", "pids", ns, check=False).split():
        try:
            os.kill(int(line), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def sweep_stale() -> list[str]:
    """Delete namespaces and bridges of earlier runs whose process is gone; returns their names."""
    removed = []
    for line in sh("ip", "netns", "list", check=False).splitlines():
        ns = line.split()[0] if line.split() else ""
        pid = _owner_pid(ns)
        if pid is not None and not _pid_alive(pid):
            kill_namespace_processes(ns)
            sh("ip", "netns", "del", ns, check=False)
            removed.append(ns)
    for line in sh("ip", "-o", "link", "show", "type", "bridge", check=False).splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        pid = _owner_pid(name)
        if pid is not None and not _pid_alive(pid):
            sh("ip", "link", "del", name, check=False)
            removed.append(name)
    return removed


def _free_subnet(tag: str) -> str:
    """A 10.A.B (/24) that no address or route of this machine uses yet."""
    used = sh("ip", "-4", "-o", "addr", "show", check=False) + sh("ip", "-4", "route", "show", check=False)
    start = zlib.crc32(tag.encode())
    for i in range(4096):
        n = (start + i) % (200 * 250)
        a, b = 20 + n // 250, 1 + n % 250
        if f"10.{a}.{b}." not in used:
            return f"10.{a}.{b}"
    raise NetLabError("found no free 10.A.B.0/24 subnet for the test network")


@dataclass
class Host:
    """One test host: a namespace, its address on the bridge, and the root side of its veth link."""

    name: str
    ns: str
    ip: str
    link: str  # the veth end in the root namespace, attached to the bridge


@dataclass
class NetLab:
    tag: str
    bridge: str
    subnet: str  # "10.A.B"
    hosts: dict[str, Host] = field(default_factory=dict)
    closed: bool = False

    @property
    def root_ip(self) -> str:
        """The address of this (the root) namespace on the bridge: where tests and benchmarks talk from."""
        return f"{self.subnet}.1"

    @classmethod
    def create(cls) -> NetLab:
        sweep_stale()
        tag = f"{os.getpid():06x}{next(_counter) % 16:x}"
        lab = cls(tag, f"{PREFIX}{tag}b", _free_subnet(tag))
        try:
            sh("ip", "link", "add", lab.bridge, "type", "bridge")
            sh("ip", "addr", "add", f"{lab.root_ip}/24", "dev", lab.bridge)
            sh("ip", "link", "set", lab.bridge, "up")
        except BaseException:
            lab.close()
            raise
        return lab

    def add_host(self, name: str) -> Host:
        """A new namespace `snl<tag>-<name>` with eth0 at the next address, linked to the bridge, loopback up."""
        index = len(self.hosts)
        if index > 250:
            raise NetLabError("a test network holds at most 250 hosts")
        host = Host(
            name,
            f"{PREFIX}{self.tag}-{name}",
            f"{self.subnet}.{index + 2}",
            f"{PREFIX}{self.tag}h{index:02x}",
        )
        inner = f"{PREFIX}{self.tag}n{index:02x}"
        self.hosts[name] = host
        sh("ip", "netns", "add", host.ns)
        sh("ip", "link", "add", host.link, "type", "veth", "peer", "name", inner)
        sh("ip", "link", "set", inner, "netns", host.ns)
        sh("ip", "link", "set", host.link, "master", self.bridge, "up")
        inside = ("ip", "netns", "exec", host.ns)
        sh(*inside, "ip", "link", "set", inner, "name", "eth0")
        sh(*inside, "ip", "addr", "add", f"{host.ip}/24", "dev", "eth0")
        sh(*inside, "ip", "link", "set", "eth0", "up")
        sh(*inside, "ip", "link", "set", "lo", "up")
        return host

    def exec_prefix(self, host: Host) -> list[str]:
        """The command prefix that runs a program inside `host`'s namespace."""
        return ["ip", "netns", "exec", host.ns]

    def cut(self, host: Host) -> None:
        """Take `host`'s link down: nothing crosses it either way (its processes keep running)."""
        sh("ip", "link", "set", host.link, "down")

    def restore(self, host: Host) -> None:
        sh("ip", "link", "set", host.link, "up")

    def limit_rate(self, host: Host, mbit: float, burst_kbit: int = 64, latency_ms: int = 50) -> None:
        """Limit `host`'s link to `mbit` Mbit/s in both directions (`tc qdisc ... tbf` on each veth end)."""
        spec = (
            "root",
            "tbf",
            "rate",
            f"{mbit}mbit",
            "burst",
            f"{burst_kbit}kbit",
            "latency",
            f"{latency_ms}ms",
        )
        sh("tc", "qdisc", "replace", "dev", host.link, *spec)
        sh(*self.exec_prefix(host), "tc", "qdisc", "replace", "dev", "eth0", *spec)

    def close(self) -> None:
        """Kill what still runs in the namespaces, delete them (their veth pairs go with them) and the bridge."""
        if self.closed:
            return
        self.closed = True
        for host in self.hosts.values():
            kill_namespace_processes(host.ns)
            sh("ip", "netns", "del", host.ns, check=False)
        sh("ip", "link", "del", self.bridge, check=False)

    def __enter__(self) -> NetLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
