"""Real `shardnet store serve` processes on 127.0.0.1 for the private-store tests: start, wait, kill."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from shardnet.chain.devnet import free_port
from tests.fixtures_store import hostile_routes

SHARDNET = str(Path(sys.executable).parent / "shardnet")


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`shardnet ARGS` as a user types it; stdout and stderr captured."""
    return subprocess.run([SHARDNET, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@dataclass
class StorageNode:
    store: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    extra_args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StorageNode:
        log = open(self.store.parent / f"node-{self.port}.log", "wb")  # noqa: SIM115 (kept for the process's life)
        self.proc = subprocess.Popen(
            [
                SHARDNET,
                "store",
                "serve",
                "--store",
                str(self.store),
                "--port",
                str(self.port),
                *self.extra_args,
            ],
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


def start_nodes(root: Path, count: int, *extra_args: str) -> list[StorageNode]:
    nodes = []
    for i in range(count):
        store = root / f"node{i}" / "store"
        store.mkdir(parents=True)
        nodes.append(StorageNode(store, extra_args=extra_args))
    for node in nodes:
        node.start()
    return nodes


@contextmanager
def hostile_node(store: Path, port: int) -> Iterator[str]:
    """A node on `port` that answers every CID with whatever bytes its folder holds, unverified (a lying node)."""
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.add_routes(hostile_routes(store))
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, name="hostile-node", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.run_until_complete(runner.cleanup())
        loop.close()
