"""Sending: concurrent nonces from one key, resync after a foreign send, EIP-1559 fields, reverts."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from eth_account.signers.local import LocalAccount

from shardnet.chain.errors import ChainUnavailable, ContractRevert
from shardnet.chain.registry import Registry
from shardnet.chain.tx import nonce_manager, rpc, send_transaction


def _tx(anvil, tx_hash: str) -> dict:
    return rpc(anvil.w3, "eth_getTransactionByHash", [tx_hash])


def test_twenty_concurrent_sends_from_one_key_all_land_with_distinct_nonces(
    isolated_anvil, accounts: list[LocalAccount]
) -> None:
    sender, receiver = accounts[5], accounts[6]
    start = isolated_anvil.w3.eth.get_transaction_count(sender.address)
    before = isolated_anvil.w3.eth.get_balance(receiver.address)
    barrier = threading.Barrier(20)

    def send(i: int) -> dict:
        barrier.wait()
        return send_transaction(isolated_anvil.w3, sender, to=receiver.address, value=1 + i)

    with ThreadPoolExecutor(max_workers=20) as pool:
        receipts = list(pool.map(send, range(20)))
    assert all(int(r["status"], 16) == 1 for r in receipts)
    nonces = sorted(int(_tx(isolated_anvil, r["transactionHash"])["nonce"], 16) for r in receipts)
    assert nonces == list(range(start, start + 20))
    assert isolated_anvil.w3.eth.get_balance(receiver.address) == before + sum(range(1, 21))


def test_nonce_manager_resyncs_after_a_send_it_did_not_see(
    isolated_anvil, accounts: list[LocalAccount]
) -> None:
    w3, sender = isolated_anvil.w3, accounts[5]
    send_transaction(w3, sender, to=accounts[6].address, value=1)  # the manager now holds a local counter
    # another process sends from the same key behind the manager's back
    nonce = w3.eth.get_transaction_count(sender.address, "pending")
    fields = {
        "type": 2,
        "chainId": 31337,
        "nonce": nonce,
        "to": accounts[6].address,
        "value": 1,
        "gas": 21_000,
        "maxFeePerGas": 10**10,
        "maxPriorityFeePerGas": 10**9,
    }
    foreign = w3.eth.send_raw_transaction(sender.sign_transaction(fields).raw_transaction)
    w3.eth.wait_for_transaction_receipt(foreign)
    receipt = send_transaction(w3, sender, to=accounts[6].address, value=2)  # stale nonce: rejected, resynced
    assert int(_tx(isolated_anvil, receipt["transactionHash"])["nonce"], 16) == nonce + 1


def test_transactions_are_eip1559(isolated_anvil, accounts: list[LocalAccount]) -> None:
    receipt = send_transaction(isolated_anvil.w3, accounts[5], to=accounts[6].address, value=1)
    tx = _tx(isolated_anvil, receipt["transactionHash"])
    block = isolated_anvil.rpc("eth_getBlockByNumber", receipt["blockNumber"], False)
    assert tx["type"] == "0x2"
    assert int(tx["maxFeePerGas"], 16) >= int(block["baseFeePerGas"], 16) + int(
        tx["maxPriorityFeePerGas"], 16
    )


def test_a_reverting_transaction_is_not_sent(
    registry_for: Callable[..., Registry], accounts: list[LocalAccount]
) -> None:
    reg = registry_for(accounts[5])
    pending = nonce_manager(reg.w3, accounts[5].address)._pending_count()
    with pytest.raises(ContractRevert, match="ShardRegistryNotRegistered"):
        reg.add_stake(10)
    assert nonce_manager(reg.w3, accounts[5].address)._pending_count() == pending


def test_a_revert_after_simulation_is_decoded_from_the_mined_block(
    isolated_anvil, registry_for: Callable[..., Registry], accounts: list[LocalAccount]
) -> None:
    """Two registrations from one key simulate fine while nothing is mined; the second reverts on chain."""
    reg = registry_for(accounts[5])
    isolated_anvil.rpc("evm_setAutomine", False)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(reg.register_node, f"http://n{i}", 10**18) for i in range(2)]
            while int(isolated_anvil.rpc("eth_getTransactionCount", accounts[5].address, "pending"), 16) < (
                int(isolated_anvil.rpc("eth_getTransactionCount", accounts[5].address, "latest"), 16) + 2
            ):
                threading.Event().wait(0.01)
            isolated_anvil.rpc("evm_mine")
            outcomes = []
            for f in futures:
                try:
                    outcomes.append(f.result(timeout=30).event("NodeRegistered").name)
                except ContractRevert as exc:
                    outcomes.append(exc.error)
    finally:
        isolated_anvil.rpc("evm_setAutomine", True)
    assert sorted(outcomes) == ["NodeRegistered", "ShardRegistryAlreadyRegistered"]


def test_sending_to_a_dead_node_raises_chain_unavailable(accounts: list[LocalAccount]) -> None:
    from web3 import HTTPProvider, Web3

    from shardnet.chain.devnet import free_port

    w3 = Web3(HTTPProvider(f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(ChainUnavailable, match="is it running"):
        send_transaction(w3, accounts[5], to=accounts[6].address, value=1)


def test_resending_the_same_transaction_does_not_send_it_twice(
    isolated_anvil, accounts: list[LocalAccount]
) -> None:
    """A retried send (same nonce, same fields) that the node already holds counts as sent, not as a nonce error."""
    w3, sender, receiver = isolated_anvil.w3, accounts[5], accounts[7]
    before = w3.eth.get_balance(receiver.address)
    isolated_anvil.rpc("evm_setAutomine", False)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            first = pool.submit(send_transaction, w3, sender, to=receiver.address, value=5, gas=21_000)
            nonce = int(isolated_anvil.rpc("eth_getTransactionCount", sender.address, "latest"), 16)
            while int(isolated_anvil.rpc("eth_getTransactionCount", sender.address, "pending"), 16) == nonce:
                threading.Event().wait(0.01)
            nonce_manager(w3, sender.address)._next = nonce  # as if the reply to the first send had been lost
            again = pool.submit(send_transaction, w3, sender, to=receiver.address, value=5, gas=21_000)
            threading.Event().wait(0.3)
            isolated_anvil.rpc("evm_mine")
            hashes = {first.result(30)["transactionHash"], again.result(30)["transactionHash"]}
    finally:
        isolated_anvil.rpc("evm_setAutomine", True)
    assert len(hashes) == 1
    assert w3.eth.get_balance(receiver.address) == before + 5
