"""ShardRegistry slashing, jail, protocol fees and pull payments, including a re-entrant and a refusing claimant."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

from shardnet.chain.compile import compile_standard_json
from shardnet.chain.registry import Registry
from shardnet.chain.tx import call_or_revert, send_transaction
from tests.chain.registry_world import (
    ETHER,
    MAX_TOKENS,
    MIN_STAKE,
    World,
    assert_solvent,
    build_world,
    reverts,
)
from tests.fixtures_chain import TEST_PARAMS, DevChain

SLASH_BPS = TEST_PARAMS.slash_bps
EVIDENCE = keccak(text="evidence")

CLAIMANT_SOL = """// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

interface IRegistryForClaimant {
    function submitJob(uint256 modelId, bytes32 inputHash, uint32 maxTokens) external payable returns (uint256);
    function claim() external;
}

/// A client that is a contract: its receive() re-enters claim(), or refuses ether when told to.
contract Claimant {
    IRegistryForClaimant private immutable _registry;
    bool public refuse;
    bytes public reentryRevertData;
    uint256 public received;

    constructor(address registry) {
        _registry = IRegistryForClaimant(registry);
    }

    function setRefuse(bool value) external {
        refuse = value;
    }

    function submit(uint256 modelId, uint32 maxTokens) external payable {
        _registry.submitJob{value: msg.value}(modelId, bytes32(uint256(1)), maxTokens);
    }

    function claim() external {
        _registry.claim();
    }

    receive() external payable {
        require(!refuse, "refusing ether");
        received += msg.value;
        try _registry.claim() {} catch (bytes memory data) {
            reentryRevertData = data;
        }
    }
}
"""


@pytest.fixture
def world(anvil: DevChain, accounts: list[LocalAccount], registry_for: Callable[..., Registry]) -> World:
    return build_world(anvil, accounts, registry_for)


@pytest.fixture(scope="module")
def claimant_artifact() -> dict[str, Any]:
    out = compile_standard_json({"tests/Claimant.sol": CLAIMANT_SOL})
    data: dict[str, Any] = out["contracts"]["tests/Claimant.sol"]["Claimant"]
    return data


class ClaimantContract:
    """Drives a deployed Claimant through raw transactions, decoding reverts against the registry's ABI."""

    def __init__(self, world: World, artifact: dict[str, Any]) -> None:
        self.world = world
        self.sender = world.accounts[9]
        self.decode = world.gov.decode_revert
        code = "0x" + artifact["evm"]["bytecode"]["object"] + abi_encode(["address"], [world.gov.address]).hex()
        receipt = send_transaction(world.gov.w3, self.sender, to=None, data=code)
        self.address = to_checksum_address(receipt["contractAddress"])

    def _data(self, signature: str, types: list[str], args: list[Any]) -> str:
        return "0x" + (keccak(text=signature)[:4] + abi_encode(types, args)).hex()

    def send(self, signature: str, types: list[str], args: list[Any], value: int = 0) -> dict[str, Any]:
        return send_transaction(
            self.world.gov.w3, self.sender, to=self.address, data=self._data(signature, types, args), value=value,
            decode=self.decode, function=signature,
        )

    def view(self, signature: str, out_type: str) -> Any:
        raw = call_or_revert(self.world.gov.w3, {"to": self.address, "data": self._data(signature, [], [])},
                             self.decode, signature)
        return abi_decode([out_type], raw)[0]


def refund_to(world: World, claimant: ClaimantContract) -> int:
    """Make the claimant a client whose failed job leaves it the whole escrow to claim."""
    quote = world.quote()
    claimant.send("submit(uint256,uint32)", ["uint256", "uint32"], [world.model_id, MAX_TOKENS], value=quote)
    world.gov.fail_job(world.gov.job_count(), "no route")
    assert world.gov.claimable(claimant.address) == quote
    return quote


# ---------------------------------------------------------------- slashing


def test_slash_takes_share_of_stake_and_unbonding_and_jails(world: World) -> None:
    reg1 = world.reg(world.node1)
    reg1.add_stake(3 * ETHER)
    reg1.request_unstake(2 * ETHER)
    job_id = world.routed_job()
    ev = world.gov.slash(world.node1.address, EVIDENCE, job_id).event("NodeSlashed")
    stake, unbonding = MIN_STAKE + ETHER, 2 * ETHER
    taken = stake * SLASH_BPS // 10_000 + unbonding * SLASH_BPS // 10_000
    assert ev.args == {"node": world.node1.address, "amount": taken, "evidenceHash": EVIDENCE, "jobId": job_id}
    node = world.gov.get_node(world.node1.address)
    assert (node.stake, node.unbonding, node.jailed) == (stake - stake * SLASH_BPS // 10_000,
                                                          unbonding - unbonding * SLASH_BPS // 10_000, True)
    assert world.gov.protocol_fees() == taken
    assert_solvent(world.gov)
    # the node keeps only the unslashed part of its unbonding stake
    world.gov.fail_job(job_id, "cheat")
    world.chain.advance_time(TEST_PARAMS.unbonding_period)
    assert reg1.withdraw_stake().event("StakeWithdrawn").args["amount"] == node.unbonding


def test_slash_reverts(world: World) -> None:
    with reverts("ShardRegistryNotCoordinator", account=world.node2.address):
        world.reg(world.node2).slash(world.node1.address, EVIDENCE, 0)
    with reverts("ShardRegistryNotRegistered", node=world.spare.address):
        world.gov.slash(world.spare.address, EVIDENCE, 0)
    with reverts("ShardRegistryUnknownJob", jobId=5):
        world.gov.slash(world.node1.address, EVIDENCE, 5)


def test_add_stake_lifts_jail_once_back_at_min_stake(world: World) -> None:
    world.gov.slash(world.node1.address, EVIDENCE, 0)
    reg1 = world.reg(world.node1)
    left = reg1.get_node(world.node1.address).stake
    reg1.add_stake(MIN_STAKE - left - 1)
    assert reg1.get_node(world.node1.address).jailed
    reg1.add_stake(1)
    node = reg1.get_node(world.node1.address)
    assert (node.jailed, node.stake) == (False, MIN_STAKE)
    world.submit()
    world.gov.assign_route(1, [(world.node3.address, world.gov.get_assignment(world.shard3).span)])


def test_withdraw_fees_credits_recipient(world: World) -> None:
    world.gov.slash(world.node1.address, EVIDENCE, 0)
    fees = world.gov.protocol_fees()
    ev = world.gov.withdraw_fees(world.spare.address).event("FeesWithdrawn")
    assert ev.args == {"to": world.spare.address, "amount": fees}
    assert (world.gov.protocol_fees(), world.gov.claimable(world.spare.address)) == (0, fees)
    assert world.reg(world.spare).claim().event("Claimed").args == {"account": world.spare.address, "amount": fees}
    assert_solvent(world.gov)


# ---------------------------------------------------------------- claims


def test_claim_with_nothing_reverts(world: World) -> None:
    with reverts("ShardRegistryNothingToClaim", account=world.client.address):
        world.reg(world.client).claim()


def test_reentrant_claim_is_stopped_by_the_guard(world: World, claimant_artifact: dict[str, Any]) -> None:
    claimant = ClaimantContract(world, claimant_artifact)
    quote = refund_to(world, claimant)
    result = claimant.send("claim()", [], [])
    assert claimant.view("received()", "uint256") == quote  # paid exactly once
    inner = world.gov.decode_revert(claimant.view("reentryRevertData()", "bytes"))
    assert (inner.error, inner.args) == ("ShardRegistryReentrantCall", {})
    assert world.balance_of(claimant.address) == quote
    assert world.gov.claimable(claimant.address) == 0
    assert [e.name for e in world.gov.decode_logs(result["logs"])] == ["Claimed"]
    assert_solvent(world.gov)


def test_refused_transfer_reverts_and_keeps_the_balance(world: World, claimant_artifact: dict[str, Any]) -> None:
    claimant = ClaimantContract(world, claimant_artifact)
    quote = refund_to(world, claimant)
    claimant.send("setRefuse(bool)", ["bool"], [True])
    with reverts("ShardRegistryTransferFailed", to=claimant.address, amount=quote):
        claimant.send("claim()", [], [])
    assert world.gov.claimable(claimant.address) == quote
    claimant.send("setRefuse(bool)", ["bool"], [False])
    claimant.send("claim()", [], [])
    assert world.balance_of(claimant.address) == quote
    assert_solvent(world.gov)
