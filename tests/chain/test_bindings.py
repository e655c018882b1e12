"""Typed registry bindings and revert decoding, on a real anvil node and a real hardhat node."""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from eth_abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from shardnet.chain.artifacts import load_artifact
from shardnet.chain.commitments import sign_commitment
from shardnet.chain.errors import ChainError, ContractRevert, RevertDecoder, revert_data_from_rpc_error
from shardnet.chain.registry import (
    AssignmentInfo,
    JobStatus,
    ModelInfo,
    NodeInfo,
    Registry,
    RegistryParams,
    Settlement,
)
from shardnet.span import LayerSpan
from shardnet.wire.commitment import merkle_root, step_hash

ETHER = 10**18
PRICE = 1_000


def run_core_flow(
    registry_for: Callable[[LocalAccount | None], Registry], accounts: list[LocalAccount]
) -> dict[str, int]:
    """register, model, announce, submit, route, commit, finalize, claim; checks each step's effect."""
    owner, node_a, node_b, client = accounts[0], accounts[1], accounts[2], accounts[3]
    gov, reg_a, reg_b, cli = (registry_for(a) for a in (owner, node_a, node_b, client))

    gov.set_coordinator(owner.address, "http://127.0.0.1:9000", True)
    assert (
        gov.is_coordinator(owner.address)
        and gov.coordinator_endpoint(owner.address) == "http://127.0.0.1:9000"
    )

    for reg, port in ((reg_a, 8101), (reg_b, 8102)):
        result = reg.register_node(f"http://127.0.0.1:{port}", ETHER)
        ev = result.event("NodeRegistered")
        assert ev.args["endpoint"] == f"http://127.0.0.1:{port}" and ev.args["stake"] == ETHER
        assert result.gas_used > 21_000 and result.block_number > 0 and result.tx_hash.startswith("0x")

    model_id = gov.register_model("tiny", "bafkreitest", 4, PRICE).event("ModelRegistered").args["modelId"]
    assert gov.get_model(model_id) == ModelInfo(model_id, "tiny", "bafkreitest", 4, PRICE, owner.address)
    a_id = reg_a.announce_shard(model_id, LayerSpan(0, 2)).event("ShardAnnounced").args["assignmentId"]
    b_id = reg_b.announce_shard(model_id, LayerSpan(2, 4)).event("ShardAnnounced").args["assignmentId"]
    assert gov.get_assignment(b_id) == AssignmentInfo(b_id, node_b.address, model_id, 2, 4, True)
    assert sorted(gov.live_assignments(model_id)) == sorted([a_id, b_id])

    max_tokens = 8
    price = cli.quote(model_id, max_tokens)
    submitted = cli.submit_job(model_id, keccak(text="hello"), max_tokens, owner.address, price)
    job_id = submitted.event("JobSubmitted").args["jobId"]
    job = cli.get_job(job_id)
    assert (job.client, job.coordinator, job.status, job.escrow, job.input_hash) == (
        client.address,
        owner.address,
        JobStatus.Open,
        price,
        keccak(text="hello"),
    )

    domain = gov.domain()
    assert (domain.chain_id, domain.registry) == (int(gov.w3.eth.chain_id), gov.address)
    hops = [
        sign_commitment(
            node,
            domain,
            job_id=job_id,
            span=span,
            positions=10,
            steps=3,
            root=merkle_root([step_hash(f"{node.address} {i}".encode()) for i in range(3)]),
        )
        for node, span in ((node_a, LayerSpan(0, 2)), (node_b, LayerSpan(2, 4)))
    ]
    settled = gov.settle_jobs([Settlement(job_id, job.record, keccak(text="world"), hops)])
    fin = settled.event("JobSettled")
    paid = 2 * 2 * 10 * PRICE
    assert (fin.args["paidToNodes"], fin.args["paidHops"]) == (paid, 0b11)
    assert fin.args["paidToNodes"] + fin.args["coordinatorFee"] + fin.args["refund"] == price
    assert gov.get_job(job_id).status == JobStatus.Settled
    (read_back,) = gov.settlements_in(settled.tx_hash)
    assert read_back.sorted_hops() == hops and read_back.job == job.record

    assert reg_a.claimable(node_a.address) == 20 * PRICE
    claimed = reg_a.claim().event("Claimed")
    assert claimed.args == {"account": node_a.address, "amount": 20 * PRICE}
    assert reg_a.claimable(node_a.address) == 0
    assert gov.balance() == gov.liabilities()
    return {"model_id": model_id, "job_id": job_id}


def test_core_flow_on_anvil(
    registry_for: Callable[[LocalAccount | None], Registry], accounts: list[LocalAccount]
) -> None:
    run_core_flow(registry_for, accounts)


def test_params_and_views_are_typed(registry: Registry, accounts: list[LocalAccount]) -> None:
    assert registry.params() == RegistryParams(10**18, 60, 600, 500, 5000, 512, 0, 60, 0, 4096, 0)
    assert registry.owner() == accounts[0].address
    assert registry.model_count() == 0 and registry.job_count() == 0
    node = registry.get_node(accounts[5].address)
    assert node == NodeInfo(accounts[5].address, "", 0, 0, 0, 0, 0, False, False)
    assert JobStatus(2) is JobStatus.Settled and JobStatus(2).name == "Settled"  # the contract's spelling


def test_custom_error_is_decoded_with_named_args(
    registry_for: Callable[..., Registry], accounts: list[LocalAccount]
) -> None:
    reg = registry_for(accounts[1])
    before = reg.block_number()
    with pytest.raises(ContractRevert) as info:
        reg.register_node("http://x", 1)
    err = info.value
    assert err.error == "ShardRegistryInsufficientStake"
    assert err.args == {"provided": 1, "required": 10**18}
    assert "ShardRegistryInsufficientStake(provided=1, required=1000000000000000000)" in str(err)
    assert err.function == "registerNode"
    assert reg.block_number() == before, "a reverting call must not be sent"
    clone = pickle.loads(pickle.dumps(err))
    assert (clone.error, clone.args) == (err.error, err.args)


def test_enum_and_address_args_are_converted(
    registry_for: Callable[..., Registry], accounts: list[LocalAccount]
) -> None:
    reg = registry_for(accounts[3])
    with pytest.raises(ContractRevert) as info:
        reg.job_state(7)
    assert info.value.error == "ShardRegistryUnknownJob" and info.value.args == {"jobId": 7}
    stranger = registry_for(accounts[4])
    with pytest.raises(ContractRevert) as info:
        stranger.set_coordinator(accounts[4].address, "http://c", True)
    assert info.value.error == "OwnableUnauthorizedAccount"
    assert info.value.args == {"account": accounts[4].address}


def test_views_decode_reverts_too(registry: Registry) -> None:
    with pytest.raises(ContractRevert) as info:
        registry.quote(99, 1)
    assert info.value.error == "ShardRegistryUnknownModel" and info.value.args == {"modelId": 99}


def test_a_registry_address_without_code_is_a_clear_error(anvil, accounts: list[LocalAccount]) -> None:
    with pytest.raises(ChainError, match="no registry contract"):
        Registry(anvil.w3, accounts[8].address).model_count()


def test_write_without_account_says_what_to_do(registry_for: Callable[..., Registry]) -> None:
    with pytest.raises(Exception, match="no account"):
        registry_for(None).claim()


def test_decode_logs_accepts_web3_logs_and_skips_foreign_ones(
    registry: Registry, anvil, accounts: list[LocalAccount]
) -> None:
    result = registry.register_model("m", "bafk", 3, 5)
    receipt = anvil.w3.eth.get_transaction_receipt(result.tx_hash)  # HexBytes topics, int numbers
    events = registry.decode_logs(receipt["logs"])
    assert [e.name for e in events] == ["ModelRegistered"]
    assert events[0].args["numLayers"] == 3 and events[0].position == (result.block_number, 0)
    foreign = [dict(receipt["logs"][0], address=accounts[9].address)]
    assert registry.decode_logs(foreign) == []
    assert [
        e.name for e in registry.get_logs(result.block_number, result.block_number, ["ModelRegistered"])
    ] == ["ModelRegistered"]
    assert registry.get_logs(result.block_number, result.block_number, ["JobSubmitted"]) == []


def test_job_status_names_are_the_contracts() -> None:
    source = (Path(__file__).resolve().parents[2] / "contracts" / "IShardRegistry.sol").read_text()
    found = re.search(r"enum JobStatus \{([^}]*)\}", source)
    assert found is not None, "enum JobStatus not found in IShardRegistry.sol"
    solidity = [member.strip() for member in found.group(1).split(",") if member.strip()]
    assert solidity[0] == "None" and [s.name for s in JobStatus] == ["NoJob", *solidity[1:]]
    assert [s.value for s in JobStatus] == list(range(len(solidity)))


def test_builtin_error_string_and_panic_are_decoded() -> None:
    decoder = RevertDecoder(load_artifact().abi)
    err = decoder.decode(bytes.fromhex("08c379a0") + abi_encode(["string"], ["not enough"]))
    assert (err.error, err.args) == ("Error", {"message": "not enough"})
    panic = decoder.decode(bytes.fromhex("4e487b71") + abi_encode(["uint256"], [0x11]))
    assert (panic.error, panic.args) == ("Panic", {"code": 0x11})
    assert "overflow" in str(panic)
    unknown = decoder.decode(bytes.fromhex("deadbeef"))
    assert unknown.error == "UnknownRevert" and unknown.args == {"data": "0xdeadbeef"}


@pytest.mark.parametrize(
    "rpc_error",
    [
        {"code": 3, "message": "execution reverted: custom error 0xdeadbeef", "data": "0xdeadbeef"},  # anvil
        {
            "code": -32603,
            "message": "Error: VM Exception while processing transaction: reverted with an "
            "unrecognized custom error (return data: 0xdeadbeef)",
        },  # hardhat, message only
        {"code": -32603, "message": "reverted", "data": {"message": "x", "data": "0xdeadbeef"}},  # nested
    ],
)
def test_revert_data_is_found_in_every_node_dialect(rpc_error: dict[str, object]) -> None:
    assert revert_data_from_rpc_error(rpc_error) == bytes.fromhex("deadbeef")


def test_rpc_errors_without_revert_data_are_not_reverts() -> None:
    assert revert_data_from_rpc_error({"code": -32000, "message": "insufficient funds for gas"}) is None


@pytest.mark.hardhat
def test_core_flow_and_revert_decoding_on_hardhat(hardhat, accounts: list[LocalAccount]) -> None:
    run_core_flow(hardhat.registry_for, accounts)
    reg = hardhat.registry_for(accounts[6])
    with pytest.raises(ContractRevert) as info:
        reg.register_node("http://x", 5)
    assert info.value.error == "ShardRegistryInsufficientStake"
    assert info.value.args == {"provided": 5, "required": 10**18}
    with pytest.raises(ContractRevert) as info:
        reg.job_state(12345)
    assert info.value.args == {"jobId": 12345}
