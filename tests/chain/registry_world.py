"""Shared set-up of the ShardRegistry contract tests (tests/chain/test_registry_*.py).

A `World` is the test registry of the `deployment` fixture (reverted after each test) with a coordinator,
three staked nodes, a 4-layer model and live shards: node1 serves [0,2), node2 [2,4), node3 [0,4). Jobs name
the owner as their coordinator; nodes sign real EIP-712 commitments (`commit`) that the owner settles (`settle`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from shardnet.chain.commitments import SignedCommitment, sign_commitment
from shardnet.chain.errors import ContractRevert
from shardnet.chain.registry import JobRecord, Registry, Settlement
from shardnet.span import LayerSpan
from shardnet.wire.commitment import merkle_root, step_hash
from shardnet.wire.eip712 import Domain
from tests.fixtures_chain import TEST_PARAMS, DevChain

ETHER = 10**18
PRICE = 1_000
NUM_LAYERS = 4
MAX_TOKENS = 8
MIN_STAKE = TEST_PARAMS.min_stake
INPUT = keccak(text="hello")
OUTPUT = keccak(text="world")
STEPS = 5
POSITIONS = 6  # a 1-token prompt and 5 generated tokens: well under maxTokens + maxPromptTokens


def leaves(tag: str, steps: int = STEPS) -> list[bytes]:
    """The step hashes a node commits to (distinct per tag)."""
    return [step_hash(f"{tag} step {i}".encode()) for i in range(steps)]


@contextmanager
def reverts(error: str, **args: Any) -> Iterator[pytest.ExceptionInfo[ContractRevert]]:
    """Expect a ContractRevert with exactly this custom error name and these arguments."""
    with pytest.raises(ContractRevert) as info:
        yield info
    assert info.value.error == error, f"expected {error}, got {info.value.describe()}"
    assert info.value.args == args, f"expected {error}{args}, got {info.value.describe()}"


def assert_solvent(reg: Registry) -> None:
    """The contract's invariant: its balance is exactly what it owes."""
    assert reg.balance() == reg.liabilities()


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

    def submit(
        self, value: int | None = None, max_tokens: int = MAX_TOKENS, coordinator: LocalAccount | None = None
    ) -> int:
        value = self.quote(max_tokens) if value is None else value
        who = (coordinator or self.owner).address
        result = self.reg(self.client).submit_job(self.model_id, INPUT, max_tokens, who, value)
        return int(result.event("JobSubmitted").args["jobId"])

    def record(self, job_id: int) -> JobRecord:
        return self.gov.job_record(job_id)

    @property
    def domain(self) -> Domain:
        return Domain(int(self.chain.rpc("eth_chainId"), 16), self.gov.address)

    def shard_of(self, node: LocalAccount) -> int:
        return {
            self.node1.address: self.shard1,
            self.node2.address: self.shard2,
            self.node3.address: self.shard3,
        }[node.address]

    def commit(
        self,
        node: LocalAccount,
        job_id: int,
        span: LayerSpan,
        positions: int = POSITIONS,
        *,
        tag: str | None = None,
        steps: int = STEPS,
    ) -> SignedCommitment:
        """`node`'s real EIP-712 signed commitment for `span` of `job_id`."""
        root = merkle_root(leaves(tag or f"{job_id}/{node.address}/{span}", steps))
        return sign_commitment(
            node, self.domain, job_id=job_id, span=span, positions=positions, steps=steps, root=root
        )

    def route(self, job_id: int) -> list[SignedCommitment]:
        """The commitments of node1 [0,2) and node2 [2,4) for a job."""
        return [
            self.commit(self.node1, job_id, LayerSpan(0, 2)),
            self.commit(self.node2, job_id, LayerSpan(2, 4)),
        ]

    def settle(
        self, job_id: int, hops: list[SignedCommitment] | None = None, coordinator: LocalAccount | None = None
    ) -> Any:
        hops = self.route(job_id) if hops is None else hops
        reg = self.reg(coordinator or self.owner)
        return reg.settle_jobs([Settlement(job_id, self.record(job_id), OUTPUT, hops)])

    def pay_of(self, positions: int = POSITIONS, layers: int = 2) -> int:
        return positions * layers * PRICE

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
    for node, span in (
        (world.node1, LayerSpan(0, 2)),
        (world.node2, LayerSpan(2, 4)),
        (world.node3, LayerSpan(0, 4)),
    ):
        result = world.reg(node).announce_shard(world.model_id, span)
        shards.append(int(result.event("ShardAnnounced").args["assignmentId"]))
    world.shard1, world.shard2, world.shard3 = shards
    return world
