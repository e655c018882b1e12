"""The namespace harness itself (root): hosts reach each other only over the bridge, a cut link carries nothing
until restored, tbf limits a link's rate, and nothing is left behind, also by a run that crashed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.netns.netlab import NetLab, sh, sweep_stale, unavailable_reason

UNAVAILABLE = unavailable_reason()
pytestmark = pytest.mark.skipif(
    UNAVAILABLE is not None, reason=f"no namespace test network here: {UNAVAILABLE}"
)

# run inside a namespace: connect to HOST:PORT, read everything, print seconds taken and bytes read
FETCH = """
import socket, sys, time
t0 = time.perf_counter()
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
n = 0
while chunk := s.recv(65536):
    n += len(chunk)
print(time.perf_counter() - t0, n)
"""
# run inside a namespace: serve SIZE bytes to each of 2 connections on ADDRESS:PORT
SERVE = """
import socket, sys
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
for _ in range(2):
    c, _ = srv.accept()
    c.sendall(b"x" * int(sys.argv[3]))
    c.close()
"""


def names() -> str:
    return sh("ip", "netns", "list") + sh("ip", "-o", "link", "show")


def fetch(lab: NetLab, host: object, ip: str, timeout: float = 5.0) -> tuple[float, int]:
    out = subprocess.run(
        [*lab.exec_prefix(host), sys.executable, "-c", FETCH, ip, "9000", str(timeout)],  # type: ignore[arg-type]
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        return float("inf"), 0
    seconds, size = out.stdout.split()
    return float(seconds), int(size)


def test_hosts_talk_over_the_bridge_a_cut_stops_them_and_tbf_limits_the_rate() -> None:
    size = 2_500_000  # 20 Mbit
    with NetLab.create() as lab:
        server, client = lab.add_host("server"), lab.add_host("client")
        assert server.ip != client.ip and server.ip.startswith(lab.subnet + ".")
        proc = subprocess.Popen(
            [*lab.exec_prefix(server), sys.executable, "-c", SERVE, server.ip, "9000", str(size)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        fast, got = fetch(lab, client, server.ip)
        assert got == size
        lab.limit_rate(server, 20)  # 20 Mbit/s: 20 Mbit take ~1 s
        slow, got = fetch(lab, client, server.ip)
        assert got == size and slow >= 0.8 and slow > fast, (fast, slow)
        lab.cut(server)
        assert fetch(lab, client, server.ip, timeout=1.0)[1] == 0  # nothing crosses a cut link
        lab.restore(server)
        proc.kill()
        proc.wait()
    for leftover in (lab.bridge, server.ns, client.ns, server.link):
        assert leftover not in names()


def test_a_crashed_runs_namespaces_are_swept_by_the_next() -> None:
    # a child process builds a lab with a process running in it, then dies without cleaning up
    script = (
        "import subprocess, os\n"
        "from tests.netns.netlab import NetLab\n"
        "lab = NetLab.create(); h = lab.add_host('orphan')\n"
        "subprocess.Popen([*lab.exec_prefix(h), 'sleep', '600'], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(lab.bridge, h.ns, flush=True)\n"
        "os._exit(0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    bridge, ns = out.stdout.split()
    assert bridge in names() and ns in names()
    time.sleep(0.1)
    orphans = sh("ip", "netns", "pids", ns).split()
    assert orphans
    removed = sweep_stale()
    assert bridge in removed and ns in removed
    assert bridge not in names() and ns not in names()
    for pid in orphans:  # the process left running inside was ended with its namespace (gone, or a zombie)
        assert running(pid) is False, f"process {pid} still runs after its namespace was swept"


def running(pid: str) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return False
        if "State:\tZ" in status:
            return False
        time.sleep(0.05)
    return True
