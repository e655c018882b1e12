"""Networks of the tiny chat model on 127.0.0.1 for the coordinator's and the dashboard's integration tests: the model
built, imported and registered on a registry (`tiny_chat_on_chain`), `worker run` processes serving spans of it
(`start_span_workers` / `stop_workers`), and the one-worker network of the API tests (admission, memory admission,
preflight), where each test module says only its flags (`one_worker_network`)."""

from __future__ import annotations

import signal
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shardnet.chain.deploy import Deployment
from shardnet.chain.registry import Registry
from shardnet.store.manifest import Manifest
from tests.coordinator.harness import (
    NUM_LAYERS,
    CoordinatorProc,
    build_tiny_chat_model,
    http_json,
    start_coordinator,
    wait_for,
)
from tests.worker.harness import WorkerProc, start_worker


@dataclass
class TinyChatChain:
    """The tiny chat model in `store` (built in `hf_dir`), registered as "tiny-chat" on the registry of `dep_file`."""

    tmp: Path
    dep_file: Path
    owner: Registry
    hf_dir: Path
    store: Path
    cid: str
    manifest: Manifest
    model_id: int


def tiny_chat_on_chain(
    tmp: Path,
    anvil: Any,
    owner_account: Any,
    deployment: Deployment,
    price: int,
    unserved: Sequence[str] = (),
) -> TinyChatChain:
    """Save `deployment` in `tmp`, build and import the tiny chat model there and register it at `price` a layer
    token as `owner_account`; then register each name of `unserved` with the same files (no worker serves them)."""
    from shardnet.model.importer import import_model

    dep_file = deployment.save(tmp / "deployment.json")
    owner = Registry(anvil.w3, deployment.registry, owner_account, deploy_block=deployment.deploy_block)
    hf_dir, store = tmp / "hf", tmp / "store"
    build_tiny_chat_model(hf_dir)
    cid, manifest = import_model(hf_dir, store, name="tiny-chat", progress=False)

    def register(name: str) -> int:
        return int(
            owner.register_model(name, cid, NUM_LAYERS, price).event("ModelRegistered").args["modelId"]
        )

    model_id = register("tiny-chat")
    for name in unserved:
        register(name)
    return TinyChatChain(tmp, dep_file, owner, hf_dir, store, cid, manifest, model_id)


def start_span_workers(
    chain: TinyChatChain, spans: Mapping[str, tuple[Any, str]], *extra: str, into: dict[str, WorkerProc]
) -> None:
    """Start one `worker run` a name of `spans` (name -> (account, "start:end")) with `extra` flags, not waiting for
    them; each goes into `into` as soon as it starts, so that `stop_workers` finds it if a later one fails."""
    for name, (account, span) in spans.items():
        into[name] = start_worker(
            chain.tmp, account, chain.dep_file, "tiny-chat", chain.store, "--layers", span, *extra, name=name
        )


def wait_routable(workers: Iterable[WorkerProc], coordinator: CoordinatorProc, timeout_s: float = 30) -> None:
    """Wait until every worker and the coordinator answer /health and the coordinator lists as many workers."""
    count = 0
    for w in workers:
        w.wait_ready(timeout=300)
        count += 1
    coordinator.wait_ready(timeout=300)
    wait_for(
        lambda: len(http_json("GET", coordinator.url + "/v1/workers")[1]["workers"]) == count,
        timeout_s,
        f"{count} workers routable",
    )


def stop_workers(workers: Iterable[WorkerProc]) -> None:
    """SIGTERM every running worker first, so that they drain and release in parallel, then make sure each is gone."""
    workers = list(workers)
    for w in workers:
        if w.proc is not None and w.proc.poll() is None:
            w.signal(signal.SIGTERM)
    for w in workers:
        w.stop()


def admission_coordinator_flags(queue_wait_s: int) -> list[str]:
    """The coordinator of the admission tests: no shadow verification, up to 6 jobs at once (more than its worker
    holds, so only admission control keeps paid jobs from failing), 8 API requests queued for `queue_wait_s`."""
    return [
        "--verify-share",
        "0",
        "--max-concurrent-jobs",
        "6",
        "--api-queue-size",
        "8",
        "--api-queue-wait-s",
        str(queue_wait_s),
    ]


@dataclass
class OneWorkerNet:
    dep_file: Path
    owner: Registry
    coordinator: CoordinatorProc
    worker: WorkerProc
    model_id: int


@contextmanager
def one_worker_network(
    tmp_path_factory: Any,
    anvil: Any,
    accounts: Any,
    module_deployment: Deployment,
    folder: str,
    *,
    price: int,
    coordinator_args: Sequence[str] = (),
    worker_args: Sequence[str] = (),
    unserved_models: Sequence[str] = (),
    coordinator_reads_the_import_store: bool = False,
) -> Iterator[OneWorkerNet]:
    """The module's registry, the tiny chat model, one `coordinator run` and one `worker run` of all its layers, in a
    new temporary folder named after `folder`; yielded once the coordinator can route through the worker, stopped
    when the block ends. The coordinator keeps its model files in a store of its own unless
    `coordinator_reads_the_import_store`."""
    tmp = tmp_path_factory.mktemp(folder)
    chain = tiny_chat_on_chain(tmp, anvil, accounts[0], module_deployment, price, unserved_models)
    coord_store = chain.store if coordinator_reads_the_import_store else tmp / "coord-store"
    coord = start_coordinator(tmp, accounts[1].key.hex(), chain.dep_file, coord_store, *coordinator_args)
    chain.owner.set_coordinator(accounts[1].address, coord.url, True)
    workers: dict[str, WorkerProc] = {}
    try:
        start_span_workers(chain, {"w": (accounts[2], f"0:{NUM_LAYERS}")}, *worker_args, into=workers)
        wait_routable(workers.values(), coord)
        yield OneWorkerNet(chain.dep_file, chain.owner, coord, workers["w"], chain.model_id)
    finally:
        coord.stop()
        stop_workers(workers.values())
