"""`Registry.get_logs` asks the node in capped block ranges, so `shardnet jobs` works on a long chain."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3 import HTTPProvider, Web3

from shardnet.chain.deploy import Deployment
from shardnet.chain.registry import LOG_RANGE, Registry
from shardnet.client import ShardnetClient
from tests.chain.registry_world import build_world
from tests.fixtures_chain import DevChain


class RecordingProvider(HTTPProvider):
    """The real node's HTTP provider, keeping the block range of every `eth_getLogs` request."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.log_ranges: list[tuple[int, int]] = []

    def make_request(self, method: Any, params: Any) -> Any:
        if method == "eth_getLogs":
            self.log_ranges.append((int(params[0]["fromBlock"], 16), int(params[0]["toBlock"], 16)))
        return super().make_request(method, params)


def recording_registry(
    chain: DevChain, deployment: Deployment, account: LocalAccount | None = None
) -> tuple[Registry, RecordingProvider]:
    provider = RecordingProvider(chain.rpc_url)
    return Registry(
        Web3(provider), deployment.registry, account, deploy_block=deployment.deploy_block
    ), provider


def test_get_logs_in_capped_ranges_returns_the_same_events_in_order(
    anvil: DevChain, deployment: Deployment, registry: Registry
) -> None:
    for i in range(3):
        registry.register_model(f"m{i}", "bafk", 2, 1)
        anvil.mine(2)
    head = registry.block_number()
    whole = registry.get_logs(deployment.deploy_block, head)
    assert [e.name for e in whole].count("ModelRegistered") == 3
    reader, provider = recording_registry(anvil, deployment)
    assert reader.get_logs(deployment.deploy_block, head, max_range=2) == whole
    ranges = provider.log_ranges
    assert ranges[0][0] == deployment.deploy_block and ranges[-1][1] == head
    assert all(b - a + 1 <= 2 for a, b in ranges) and all(b + 1 == c for (_, b), (c, _) in pairwise(ranges))
    assert len(ranges) == (head - deployment.deploy_block) // 2 + 1
    assert reader.get_logs(head + 1, head) == [] and len(provider.log_ranges) == len(
        ranges
    )  # empty range: no request
    with pytest.raises(ValueError, match="at least 1 block"):
        reader.get_logs(0, head, max_range=0)


def test_jobs_lists_a_chain_longer_than_one_log_range(
    anvil: DevChain,
    deployment: Deployment,
    accounts: list[LocalAccount],
    registry_for: Callable[[LocalAccount | None], Registry],
) -> None:
    world = build_world(anvil, accounts, registry_for)
    first = world.submit()
    anvil.rpc("anvil_mine", hex(LOG_RANGE + 10))  # a long stretch of empty blocks between the jobs
    second = world.submit()
    world.settle(second)
    reader, provider = recording_registry(anvil, deployment)
    jobs = ShardnetClient(reader).jobs()
    assert [(j.job_id, j.status.name) for j in jobs] == [(first, "Open"), (second, "Settled")]
    assert len(provider.log_ranges) >= 2 and all(b - a + 1 <= LOG_RANGE for a, b in provider.log_ranges)
    assert [j.job_id for j in ShardnetClient(reader).jobs(world.client.address.lower())] == [first, second]
    assert ShardnetClient(reader).jobs(world.outsider.address) == []
