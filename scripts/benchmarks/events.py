"""`scripts/bench.py events`: how long a chain event takes to reach the worker and the coordinator that act on it.

On a fresh anvil with a deployed registry it runs the worker's chain follower (`worker.chain_sync.ChainSync`) and
a whole coordinator service (`coordinator.service.CoordinatorService`, in this process), then submits jobs naming
that coordinator one at a time. For each JobSubmitted it takes the time between the transaction's receipt (the
block is mined: anvil mines on arrival) and the call of each role's handler for it, and prints p50 / p95 / max:
first with new blocks pushed over the websocket (`eth_subscribe` newHeads, `shardnet.chain.heads`), then with
polling only, at each role's default interval (worker 1 s, coordinator 0.2 s). Target: <= 100 ms with push.

    .venv/bin/python scripts/bench.py events [--jobs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import HTTPProvider, Web3

from shardnet.chain.deploy import deploy_registry
from shardnet.chain.devnet import Devnet
from shardnet.chain.heads import ws_url_for
from shardnet.chain.registry import Registry
from shardnet.chain.tx import DecodedEvent
from shardnet.db import make_engine
from shardnet.localnet import dev_account

TARGET_MS = 100.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=20, help="jobs submitted per mode (default: 20)")
    parser.add_argument(
        "--gap-ms", type=float, default=150.0, help="mean pause between two submissions, ms (default: 150)"
    )


def own_connection(registry: Registry, account: LocalAccount) -> Registry:
    """The registry through a connection of its own, as a role in its own process has."""
    w3 = Web3(HTTPProvider(registry.rpc_url, request_kwargs={"timeout": 30}))
    return Registry(w3, registry.address, account, deploy_block=registry.deploy_block)


class Roles:
    """The worker's follower and a coordinator service, both recording when their JobSubmitted handler runs."""

    def __init__(self, devnet: Devnet, registry: Registry, work: Path, ws: bool) -> None:
        from coordinator.config import load_config
        from coordinator.service import CoordinatorService
        from worker.chain_sync import ChainSync
        from worker.state import WorkerState

        self.seen: dict[str, dict[int, float]] = {"worker": {}, "coordinator": {}}
        ws_setting = None if ws else "off"
        node = dev_account(2)
        self.sync = ChainSync(
            own_connection(registry, node),
            WorkerState(make_engine(None, work / "worker.db"), node.address),
            start_block=registry.deploy_block,
            ws_url=ws_url_for(devnet.rpc_url, ws_setting),
            on_job_submitted=lambda job_id, _c: self.seen["worker"].setdefault(job_id, time.perf_counter()),
        )
        cfg = load_config(
            {"data_dir": work, "store_dir": work / "store", "port": 0, "ws_url": ws_setting}, None, {}
        )
        owner = registry.account
        assert owner is not None
        self.service = CoordinatorService(cfg, own_connection(registry, owner), owner)
        handle = self.service.watcher.handlers["JobSubmitted"]

        def timed(event: DecodedEvent, session: Any) -> None:
            self.seen["coordinator"].setdefault(int(event.args["jobId"]), time.perf_counter())
            handle(event, session)

        self.service.watcher.handlers["JobSubmitted"] = timed
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Roles:
        self.sync.start()
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.service.start(), self.loop).result(120)
        for heads in (self.sync.heads, self.service.heads):
            if heads is not None and not heads.wait_connected(10):
                raise RuntimeError(f"no websocket subscription at {heads.ws_url}")
        time.sleep(1.5)  # both caught up with the deployment's blocks
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.service.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.sync.stop(final_round=False)


def measure(devnet: Devnet, registry: Registry, model_id: int, args: argparse.Namespace, ws: bool) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="shardnet-events-") as tmp,
        Roles(devnet, registry, Path(tmp), ws) as roles,
    ):
        mined: dict[int, float] = {}
        for _ in range(args.jobs):
            time.sleep(random.expovariate(1000.0 / args.gap_ms))
            value = registry.quote(model_id, 8)
            result = registry.submit_job(model_id, b"\x01" * 32, 8, registry.account.address, value)  # type: ignore[union-attr]
            mined[int(result.event("JobSubmitted").args["jobId"])] = time.perf_counter()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(j not in s for s in roles.seen.values() for j in mined):
            time.sleep(0.05)
        mode = (
            "pushed (eth_subscribe newHeads over ws)"
            if ws
            else "polling only (worker 1 s, coordinator 0.2 s)"
        )
        for role, seen in roles.seen.items():
            delays = sorted((seen[j] - t) * 1000 for j, t in mined.items() if j in seen)
            if not delays:
                print(f"| {mode} | {role} | no event handled | | | |")
                continue
            p95 = delays[min(len(delays) - 1, int(0.95 * len(delays)))]
            verdict = "yes" if max(delays) <= TARGET_MS else "no"
            print(
                f"| {mode} | {role} | {statistics.median(delays):.1f} | {p95:.1f} | {max(delays):.1f} | "
                f"{len(delays)}/{len(mined)}, max <= {TARGET_MS:.0f} ms: {verdict} |"
            )


def run(args: argparse.Namespace) -> int:
    devnet = Devnet.start("anvil", log_file=Path(tempfile.gettempdir()) / "shardnet-events-anvil.log")
    try:
        owner = dev_account(0)
        dep = deploy_registry(devnet.web3(), owner)
        registry = Registry(devnet.web3(), dep.registry, owner, deploy_block=dep.deploy_block)
        registry.set_coordinator(owner.address, "http://127.0.0.1:9")
        model_id = int(registry.register_model("m", "bafk", 2, 1).event("ModelRegistered").args["modelId"])
        print(f"anvil {devnet.rpc_url}: {args.jobs} jobs per mode; ms from the receipt to the role's handler")
        print("| mode | role | p50 ms | p95 ms | max ms | handled |")
        print("|---|---|---:|---:|---:|---|")
        for ws in (True, False):
            measure(devnet, registry, model_id, args, ws)
    finally:
        devnet.stop()
    return 0
