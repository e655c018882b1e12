"""The dashboard's integration network on 127.0.0.1: anvil, a registry of its own, three `worker run` processes of
the tiny chat model (layers 0:2, 2:4, 4:6) and one `coordinator run`; plus, for the escaping checks, a model and a
node whose name and endpoint hold HTML (nobody serves that model: it shows as uncovered)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shardnet.chain.deploy import deploy_registry
from shardnet.chain.registry import Registry
from shardnet.client import ShardnetClient
from tests.coordinator.harness import (
    CoordinatorProc,
    build_tiny_chat_model,
    http_json,
    start_coordinator,
    wait_for,
)
from tests.fixtures_chain import TEST_PARAMS
from tests.worker.harness import WorkerProc, start_worker

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
    from shardnet.model.importer import import_model

    tmp = tmp_path_factory.mktemp("dashnet")
    deployment = deploy_registry(anvil.w3, accounts[0], TEST_PARAMS)
    dep_file = deployment.save(tmp / "deployment.json")
    owner = Registry(anvil.w3, deployment.registry, accounts[0], deploy_block=deployment.deploy_block)
    hf_dir = tmp / "hf"
    build_tiny_chat_model(hf_dir)
    store = tmp / "store"
    cid, _manifest = import_model(hf_dir, store, name="tiny-chat", progress=False)
    model_id = int(owner.register_model("tiny-chat", cid, 6, PRICE).event("ModelRegistered").args["modelId"])
    hostile_model_id = int(
        owner.register_model(HOSTILE_MODEL, "bafk<b>x</b>", 4, PRICE).event("ModelRegistered").args["modelId"]
    )
    owner.with_account(accounts[7]).register_node(HOSTILE_ENDPOINT, TEST_PARAMS.min_stake)

    coord = start_coordinator(tmp, accounts[1].key.hex(), dep_file, tmp / "coord-store")
    owner.set_coordinator(accounts[1].address, coord.url, True)
    workers: dict[str, WorkerProc] = {}
    try:
        for name, (i, span) in SPANS.items():
            workers[name] = start_worker(
                tmp,
                accounts[i],
                dep_file,
                "tiny-chat",
                store,
                "--layers",
                span,
                "--drain-grace-s",
                "2",
                name=name,
            )
        for w in workers.values():
            w.wait_ready(timeout=300)
        coord.wait_ready(timeout=300)
        wait_for(
            lambda: len(http_json("GET", coord.url + "/v1/workers")[1]["workers"]) == 3,
            30,
            "3 workers routable",
        )
        client = ShardnetClient(owner.with_account(accounts[9]), coordinator_url=None)
        yield DashNet(tmp, owner, client, coord, model_id, hostile_model_id, accounts[7].address, workers)
    finally:
        coord.stop()
        for w in workers.values():
            if w.proc is not None and w.proc.poll() is None:
                w.signal(signal.SIGTERM)
        for w in workers.values():
            w.stop()
