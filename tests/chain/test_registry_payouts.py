"""ShardRegistry pull payments, including a re-entrant and a refusing claimant (slashing: test_registry_attacks.py)."""

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
    MAX_TOKENS,
    World,
    assert_solvent,
    build_world,
    reverts,
)
from tests.fixtures_chain import DevChain

CLAIMANT_SOL = """// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

interface IRegistryForClaimant {
    function submitJob(uint256 modelId, bytes32 inputHash, uint32 maxTokens, address coordinator) external payable returns (uint256);
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

    function submit(uint256 modelId, uint32 maxTokens, address coordinator) external payable {
        _registry.submitJob{value: msg.value}(modelId, bytes32(uint256(1)), maxTokens, coordinator);
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
        code = (
            "0x" + artifact["evm"]["bytecode"]["object"] + abi_encode(["address"], [world.gov.address]).hex()
        )
        receipt = send_transaction(world.gov.w3, self.sender, to=None, data=code)
        self.address = to_checksum_address(receipt["contractAddress"])

    def _data(self, signature: str, types: list[str], args: list[Any]) -> str:
        return "0x" + (keccak(text=signature)[:4] + abi_encode(types, args)).hex()

    def send(self, signature: str, types: list[str], args: list[Any], value: int = 0) -> dict[str, Any]:
        return send_transaction(
            self.world.gov.w3,
            self.sender,
            to=self.address,
            data=self._data(signature, types, args),
            value=value,
            decode=self.decode,
            function=signature,
        )

    def view(self, signature: str, out_type: str) -> Any:
        raw = call_or_revert(
            self.world.gov.w3,
            {"to": self.address, "data": self._data(signature, [], [])},
            self.decode,
            signature,
        )
        return abi_decode([out_type], raw)[0]


def refund_to(world: World, claimant: ClaimantContract) -> int:
    """Make the claimant a client whose failed job leaves it the whole escrow to claim."""
    quote = world.quote()
    claimant.send(
        "submit(uint256,uint32,address)",
        ["uint256", "uint32", "address"],
        [world.model_id, MAX_TOKENS, world.owner.address],
        value=quote,
    )
    job_id = world.gov.job_count()
    world.gov.fail_job(job_id, world.record(job_id), "no route")
    assert world.gov.claimable(claimant.address) == quote
    return quote


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
    assert (inner.error, inner.args) == ("ReentrancyGuardReentrantCall", {})
    assert world.balance_of(claimant.address) == quote
    assert world.gov.claimable(claimant.address) == 0
    assert [e.name for e in world.gov.decode_logs(result["logs"])] == ["Claimed"]
    assert_solvent(world.gov)


def test_refused_transfer_reverts_and_keeps_the_balance(
    world: World, claimant_artifact: dict[str, Any]
) -> None:
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
