"""The dashboard's integration network on 127.0.0.1: anvil, a registry of its own, three `worker run` processes of
the tiny chat model (layers 0:2, 2:4, 4:6) and one `coordinator run`; plus, for the escaping checks, a model and a
node whose name and endpoint hold HTML (nobody serves that model: it shows as uncovered)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shardnet.chain.deploy import deploy_registry
from shardnet.chain.registry import Registry
from shardnet.client import ShardnetClient
from tests.coordinator.harness import CoordinatorProc, start_coordinator
from tests.coordinator.tiny_chat_net import (
    start_span_workers,
    stop_workers,
    tiny_chat_on_chain,
    wait_routable,
)
from tests.fixtures_chain import TEST_PARAMS
from tests.worker.harness import WorkerProc

PRICE = 10**6
SPANS = {"a": (2, "0:2"), "b": (3, "2:4"), "c": (4, "4:6")}
HOSTILE_MODEL = '<img src=x onerror="document.body.dataset.pwned=1">tiny'
HOSTILE_ENDPOINT = 'http://127.0.0.1:9/<script>document.body.dataset.pwned="2"</script>'


@dataclass
class DashNet:
    tmp: Path
    owner: Registry
    client: ShardnetClient
    coordinator: CoordinatorProc
    model_id: int
    hostile_model_id: int
    hostile_node: str
    workers: dict[str, WorkerProc]


def start_dashboard_network(tmp_path_factory: Any, anvil: Any, accounts: Any) -> Iterator[DashNet]:
    tmp = tmp_path_factory.mktemp("dashnet")
    chain = tiny_chat_on_chain(
        tmp, anvil, accounts[0], deploy_registry(anvil.w3, accounts[0], TEST_PARAMS), PRICE
    )
    owner = chain.owner
    hostile_model_id = int(
        owner.register_model(HOSTILE_MODEL, "bafk<b>x</b>", 4, PRICE).event("ModelRegistered").args["modelId"]
    )
    owner.with_account(accounts[7]).register_node(HOSTILE_ENDPOINT, TEST_PARAMS.min_stake)

    coord = start_coordinator(tmp, accounts[1].key.hex(), chain.dep_file, tmp / "coord-store")
    owner.set_coordinator(accounts[1].address, coord.url, True)
    workers: dict[str, WorkerProc] = {}
    try:
        start_span_workers(
            chain,
            {name: (accounts[i], span) for name, (i, span) in SPANS.items()},
            "--drain-grace-s",
            "2",
            into=workers,
        )
        wait_routable(workers.values(), coord)
        client = ShardnetClient(owner.with_account(accounts[9]), coordinator_url=None)
        yield DashNet(
            tmp, owner, client, coord, chain.model_id, hostile_model_id, accounts[7].address, workers
        )
    finally:
        coord.stop()
        stop_workers(workers.values())
