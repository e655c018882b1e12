"""Real `shardnet store serve` processes on 127.0.0.1 for the private-store tests: start, wait, kill."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from shardnet.chain.devnet import free_port

SHARDNET = str(Path(sys.executable).parent / "shardnet")


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`shardnet ARGS` as a user types it; stdout and stderr captured."""
    return subprocess.run([SHARDNET, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@dataclass
class StorageNode:
    store: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StorageNode:
        log = open(self.store.parent / f"node-{self.port}.log", "wb")  # noqa: SIM115 (kept for the process's life)
        self.proc = subprocess.Popen(
            [SHARDNET, "store", "serve", "--store", str(self.store), "--port", str(self.port)],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2):
                    return self
            except OSError:
                assert self.proc.poll() is None, f"storage node exited: see {log.name}"
                time.sleep(0.2)
        raise TimeoutError(f"storage node on {self.url} did not answer /health")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def start_nodes(root: Path, count: int) -> list[StorageNode]:
    nodes = []
    for i in range(count):
        store = root / f"node{i}" / "store"
        store.mkdir(parents=True)
        nodes.append(StorageNode(store))
    for node in nodes:
        node.start()
    return nodes
