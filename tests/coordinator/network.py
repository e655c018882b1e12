"""The coordinator's integration network on 127.0.0.1, shared by the tests of this package (see conftest.py):
anvil, a registry of its own, four `worker run` processes of a tiny chat model (layers 0:2, 2:4 twice, 4:6)
and one `coordinator run`; and the helpers the tests share (reference text, balances, views)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shardnet.chain.deploy import deploy_registry
from shardnet.chain.registry import Registry
from shardnet.client import ShardnetClient
from tests.coordinator.harness import EOS_ID, CoordinatorProc, http_json, start_coordinator
from tests.coordinator.tiny_chat_net import (
    start_span_workers,
    stop_workers,
    tiny_chat_on_chain,
    wait_routable,
)
from tests.fixtures_chain import TEST_PARAMS
from tests.worker.harness import WorkerProc

PRICE = 10**6
SHARDNET = [str(Path(sys.executable).parent / "shardnet")]  # the installed console script


@dataclass
class Net:
    tmp: Path
    dep_file: Path
    owner: Registry
    client_account: Any
    client: ShardnetClient
    coordinator: CoordinatorProc
    coordinator_address: str
    model_id: int
    store: Path
    hf_dir: Path
    workers: dict[str, WorkerProc]
    reference: Any


def reference_text(net: Net, prompt: str, n: int, chat: bool = False) -> tuple[list[int], str]:
    """Greedy tokens of the unsplit model (up to EOS) and their text; `chat` wraps the prompt in the chat template."""
    from shardnet.model.reference import greedy_generate

    if chat:
        prompt = net.reference["tokenizer"].apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    ids = net.reference["tokenizer"](prompt, add_special_tokens=False)["input_ids"]
    torch.set_num_threads(1)
    tokens = greedy_generate(net.reference["model"], torch.tensor([ids]), n).tokens
    if EOS_ID in tokens:
        tokens = tokens[: tokens.index(EOS_ID)]
    return tokens, net.reference["tokenizer"].decode(tokens, skip_special_tokens=True)


def start_network(tmp_path_factory: Any, anvil: Any, accounts: Any) -> Iterator[Net]:
    """Deploy a registry of its own, register the tiny chat model, start 4 workers and a coordinator; stop them."""
    from transformers import AutoTokenizer

    from shardnet.model.reference import load_reference

    tmp = tmp_path_factory.mktemp("coordnet")
    chain = tiny_chat_on_chain(
        tmp, anvil, accounts[0], deploy_registry(anvil.w3, accounts[0], TEST_PARAMS), PRICE
    )
    coord = start_coordinator(
        tmp,
        accounts[1].key.hex(),
        chain.dep_file,
        tmp / "coord-store",
        "--verify-share",
        "0.3",
        "--load-penalty-s",
        "0.05",
    )
    chain.owner.set_coordinator(accounts[1].address, coord.url, True)
    spans = {"a": (2, "0:2"), "b": (3, "2:4"), "b2": (4, "2:4"), "c": (5, "4:6")}
    workers: dict[str, WorkerProc] = {}
    network: Net | None = None
    try:
        start_span_workers(
            chain,
            {name: (accounts[i], span) for name, (i, span) in spans.items()},
            "--drain-grace-s",
            "2",
            into=workers,
        )
        wait_routable(workers.values(), coord, timeout_s=20)
        client_account = accounts[9]
        reference = {
            "model": load_reference(chain.store, chain.manifest.to_json()),
            "tokenizer": AutoTokenizer.from_pretrained(chain.hf_dir),
        }
        network = Net(
            tmp,
            chain.dep_file,
            chain.owner,
            client_account,
            ShardnetClient(chain.owner.with_account(client_account), coordinator_url=None),
            coord,
            accounts[1].address,
            chain.model_id,
            chain.store,
            chain.hf_dir,
            workers,
            reference,
        )
        yield network
    finally:
        coord.stop()
        if network is not None:
            network.coordinator.stop()  # a test may have replaced it with a restarted process
        stop_workers(workers.values())  # the dict holds the workers a test restarted in place of the first


def claimables(reg: Registry, addresses: list[str]) -> dict[str, int]:
    return {a.lower(): reg.claimable(a) for a in addresses}


def workers_view(net: Net) -> dict[str, dict[str, Any]]:
    return {w["node"]: w for w in http_json("GET", net.coordinator.url + "/v1/workers")[1]["workers"]}


def job_status(net: Net, job_id: int) -> str:
    return http_json("GET", f"{net.coordinator.url}/v1/jobs/{job_id}")[1]["status"]


def second_coordinator(net: Net, account: Any, *flags: str, name: str) -> CoordinatorProc:
    """Another `coordinator run` on the network's registry and store, as `account`: started with `flags`, approved
    on chain and ready (stopped again if either fails); the caller stops it."""
    coord = start_coordinator(net.tmp, account.key.hex(), net.dep_file, net.store, *flags, name=name)
    try:
        net.owner.set_coordinator(account.address, coord.url, True)
        coord.wait_ready(timeout=300)
    except BaseException:
        coord.stop()
        raise
    return coord
