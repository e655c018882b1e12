"""Shared set-up of the ShardRegistry contract tests (tests/chain/test_registry_*.py).

A `World` is the test registry of the `deployment` fixture (reverted after each test) with a coordinator,
three staked nodes, a 4-layer model and live shards: node1 serves [0,2), node2 [2,4), node3 [0,4).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from shardnet.chain.errors import ContractRevert
from shardnet.chain.registry import Registry
from shardnet.span import LayerSpan
from tests.fixtures_chain import TEST_PARAMS, DevChain

ETHER = 10**18
PRICE = 1_000
NUM_LAYERS = 4
MAX_TOKENS = 8
MIN_STAKE = TEST_PARAMS.min_stake
INPUT = keccak(text="hello")
OUTPUT = keccak(text="world")


@contextmanager
def reverts(error: str, **args: Any) -> Iterator[pytest.ExceptionInfo[ContractRevert]]:
    """Expect a ContractRevert with exactly this custom error name and these arguments."""
    with pytest.raises(ContractRevert) as info:
        yield info
    assert info.value.error == error, f"expected {error}, got {info.value.describe()}"
    assert info.value.args == args, f"expected {error}{args}, got {info.value.describe()}"


def assert_solvent(reg: Registry) -> None:
    """The contract's invariant: its balance is exactly what it owes."""
    owed = reg.total_staked() + reg.total_unbonding() + reg.total_escrow() + reg.total_claimable() + reg.protocol_fees()
    assert reg.balance() == owed


@dataclass
class World:
    chain: DevChain
    accounts: list[LocalAccount]
    registry_for: Callable[[LocalAccount | None], Registry]
    model_id: int = 0
    shard1: int = 0
    shard2: int = 0
    shard3: int = 0

    # roles
    @property
    def owner(self) -> LocalAccount:  # also the approved coordinator
        return self.accounts[0]

    @property
    def node1(self) -> LocalAccount:
        return self.accounts[1]

    @property
    def node2(self) -> LocalAccount:
        return self.accounts[2]

    @property
    def node3(self) -> LocalAccount:
        return self.accounts[3]

    @property
    def spare(self) -> LocalAccount:  # a funded account that is nobody yet
        return self.accounts[4]

    @property
    def client(self) -> LocalAccount:
        return self.accounts[5]

    @property
    def coordinator2(self) -> LocalAccount:  # approved too, but not the coordinator of the jobs below
        return self.accounts[6]

    @property
    def outsider(self) -> LocalAccount:
        return self.accounts[8]

    def reg(self, account: LocalAccount) -> Registry:
        return self.registry_for(account)

    @property
    def gov(self) -> Registry:
        return self.registry_for(self.owner)

    def quote(self, max_tokens: int = MAX_TOKENS) -> int:
        return self.gov.quote(self.model_id, max_tokens)

    def submit(self, value: int | None = None, max_tokens: int = MAX_TOKENS) -> int:
        value = self.quote(max_tokens) if value is None else value
        result = self.reg(self.client).submit_job(self.model_id, INPUT, max_tokens, value)
        return int(result.event("JobSubmitted").args["jobId"])

    def routed_job(self, value: int | None = None) -> int:
        """A job submitted by the client and routed node1 [0,2) -> node2 [2,4) by the owner."""
        job_id = self.submit(value)
        self.gov.assign_route(job_id, [(self.node1.address, LayerSpan(0, 2)), (self.node2.address, LayerSpan(2, 4))])
        return job_id

    def balance_of(self, address: str) -> int:
        return int(self.chain.rpc("eth_getBalance", address, "latest"), 16)


def build_world(
    chain: DevChain, accounts: list[LocalAccount], registry_for: Callable[[LocalAccount | None], Registry]
) -> World:
    world = World(chain, accounts, registry_for)
    gov = world.gov
    gov.set_coordinator(world.owner.address, "http://127.0.0.1:9000", True)
    gov.set_coordinator(world.coordinator2.address, "http://127.0.0.1:9001", True)
    for i, node in enumerate((world.node1, world.node2, world.node3)):
        world.reg(node).register_node(f"http://127.0.0.1:{8101 + i}", MIN_STAKE)
    world.model_id = int(
        gov.register_model("tiny", "bafkreitiny", NUM_LAYERS, PRICE).event("ModelRegistered").args["modelId"]
    )
    shards = []
    for node, span in ((world.node1, LayerSpan(0, 2)), (world.node2, LayerSpan(2, 4)), (world.node3, LayerSpan(0, 4))):
        result = world.reg(node).announce_shard(world.model_id, span)
        shards.append(int(result.event("ShardAnnounced").args["assignmentId"]))
    world.shard1, world.shard2, world.shard3 = shards
    return world
