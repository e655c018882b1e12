"""Sending transactions: raw JSON-RPC, EIP-1559 fees, simulation first, receipts, and per-account nonces.

Several threads may send from one key at once: `NonceManager` hands out nonces from a local counter
under a lock (held while the transaction is signed and sent, so nonces reach the node in order) and
resyncs from the chain's pending count when the node rejects a nonce.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shardnet.chain.errors import (
    ChainError,
    ChainUnavailable,
    ContractRevert,
    RevertDecoder,
    RpcError,
    revert_data_from_rpc_error,
)

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from web3 import Web3

log = logging.getLogger(__name__)

#: Revert data -> ContractRevert (see `shardnet.chain.errors.RevertDecoder.decode`).
DecodeRevert = Callable[[bytes, "str | None"], ContractRevert]

_NONCE_ERROR_MARKERS = ("nonce", "underpriced")
_ALREADY_KNOWN_MARKERS = ("already known", "known transaction", "already imported")
_SEND_RETRIES = 4


@dataclass(frozen=True)
class DecodedEvent:
    """One contract event: its ABI name, arguments by ABI name, and where it happened."""

    name: str
    args: dict[str, Any] = field(hash=False)
    block_number: int
    log_index: int
    tx_hash: str
    address: str

    @property
    def position(self) -> tuple[int, int]:
        """(block number, log index): the total order of events on a chain."""
        return (self.block_number, self.log_index)


@dataclass(frozen=True)
class TxResult:
    """A mined, successful transaction and the registry events it emitted."""

    tx_hash: str
    block_number: int
    gas_used: int
    events: list[DecodedEvent] = field(hash=False)

    def event(self, name: str) -> DecodedEvent:
        """The first event called `name`; ChainError if the transaction emitted none."""
        for ev in self.events:
            if ev.name == name:
                return ev
        emitted = ", ".join(e.name for e in self.events) or "none"
        raise ChainError(f"transaction {self.tx_hash} emitted no {name} event (emitted: {emitted})")


def _endpoint(w3: Web3) -> str:
    return str(getattr(w3.provider, "endpoint_uri", None) or id(w3.provider))


def rpc(w3: Web3, method: str, params: list[Any]) -> Any:
    """One JSON-RPC call through w3's provider; returns `result`.

    Raises ChainUnavailable when the node cannot be reached and RpcError when it answers with an error.
    """
    try:
        reply = w3.provider.make_request(method, params)  # type: ignore[arg-type]
    except (OSError, TimeoutError) as exc:  # requests' ConnectionError and Timeout are OSErrors
        raise ChainUnavailable(
            f"cannot reach the chain node at {_endpoint(w3)} ({type(exc).__name__}): is it running? check --rpc"
        ) from exc
    except Exception as exc:
        if "connect" in type(exc).__name__.lower() or "timeout" in type(exc).__name__.lower():
            raise ChainUnavailable(f"cannot reach the chain node at {_endpoint(w3)}: {exc}") from exc
        raise
    if reply.get("error") is not None:
        raise RpcError(method, reply["error"])
    return reply.get("result")


def call_or_revert(
    w3: Web3, tx: Mapping[str, Any], decode: DecodeRevert, function: str | None, block: str | int = "latest"
) -> bytes:
    """`eth_call` that raises ContractRevert (decoded) if the call reverts; returns the output bytes."""
    tag = hex(block) if isinstance(block, int) else block
    try:
        out = rpc(w3, "eth_call", [_json_tx(tx), tag])
    except RpcError as exc:
        data = revert_data_from_rpc_error(exc.rpc_error)
        if data is None:
            raise
        raise decode(data, function) from None
    return bytes.fromhex(str(out)[2:])


def estimate_or_revert(w3: Web3, tx: Mapping[str, Any], decode: DecodeRevert, function: str | None) -> int:
    """`eth_estimateGas`, which also simulates the transaction: a revert raises ContractRevert."""
    try:
        return int(rpc(w3, "eth_estimateGas", [_json_tx(tx)]), 16)
    except RpcError as exc:
        data = revert_data_from_rpc_error(exc.rpc_error)
        if data is None:
            raise
        raise decode(data, function) from None


def _json_tx(tx: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tx.items():
        if value is None:
            continue
        out[key] = hex(value) if isinstance(value, int) else value
    return out


class NonceManager:
    """Nonces of one account on one node, safe to share between threads."""

    def __init__(self, w3: Web3, address: str) -> None:
        self._w3 = w3
        self.address = address
        self._lock = threading.Lock()
        self._next: int | None = None

    def _pending_count(self) -> int:
        return int(rpc(self._w3, "eth_getTransactionCount", [self.address, "pending"]), 16)

    def send_with_nonce(self, send: Callable[[int], str]) -> str:
        """Call `send(nonce)` with the next nonce, under the lock; resync and retry on a nonce error."""
        with self._lock:
            for attempt in range(_SEND_RETRIES):
                if self._next is None:
                    self._next = self._pending_count()
                nonce = self._next
                try:
                    tx_hash = send(nonce)
                except RpcError as exc:
                    message = str(exc.rpc_error.get("message", "")).lower()
                    if attempt + 1 < _SEND_RETRIES and any(m in message for m in _NONCE_ERROR_MARKERS):
                        log.warning(
                            "nonce %d of %s rejected (%s); resyncing from the chain",
                            nonce,
                            self.address,
                            message,
                        )
                        self._next = None
                        continue
                    raise
                self._next = nonce + 1
                return tx_hash
        raise AssertionError("unreachable")

    def resync(self) -> None:
        """Forget the local counter; the next send reads the chain's pending count."""
        with self._lock:
            self._next = None


_managers: dict[tuple[str, str], NonceManager] = {}
_managers_lock = threading.Lock()


def nonce_manager(w3: Web3, address: str) -> NonceManager:
    """The one NonceManager of `address` on w3's node (shared by every Registry in this process)."""
    key = (_endpoint(w3), address.lower())
    with _managers_lock:
        manager = _managers.get(key)
        if manager is None:
            manager = _managers[key] = NonceManager(w3, address)
        return manager


def reset_nonce_managers() -> None:
    """Resync every account's nonces from the chain (after a devnet snapshot was reverted or restarted)."""
    with _managers_lock:
        managers = list(_managers.values())
    for manager in managers:
        manager.resync()


_chain_ids: dict[str, int] = {}


def chain_id(w3: Web3) -> int:
    """The node's chain id (cached per endpoint)."""
    key = _endpoint(w3)
    if key not in _chain_ids:
        _chain_ids[key] = int(rpc(w3, "eth_chainId", []), 16)
    return _chain_ids[key]


def eip1559_fees(w3: Web3) -> tuple[int, int]:
    """(maxFeePerGas, maxPriorityFeePerGas): twice the latest base fee plus the node's suggested tip."""
    block = rpc(w3, "eth_getBlockByNumber", ["latest", False])
    base = int(block.get("baseFeePerGas") or "0x0", 16)
    try:
        tip = int(rpc(w3, "eth_maxPriorityFeePerGas", []), 16)
    except RpcError:
        tip = 10**9
    return 2 * base + tip, tip


def send_transaction(
    w3: Web3,
    account: LocalAccount,
    *,
    to: str | None,
    data: str = "0x",
    value: int = 0,
    gas: int | None = None,
    decode: DecodeRevert | None = None,
    function: str | None = None,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Simulate, sign with EIP-1559 fees, send and wait for the receipt of one transaction.

    A transaction that would revert raises ContractRevert (decoded with `decode`) before anything is
    sent; one that reverts on chain anyway (the state changed meanwhile) raises it after mining.
    Returns the receipt as a dict of JSON-RPC fields (hex strings).
    """
    decoder = decode or RevertDecoder([]).decode
    tx: dict[str, Any] = {"from": account.address, "to": to, "data": data, "value": value}
    if gas is None:
        estimate = estimate_or_revert(w3, tx, decoder, function)
        gas = estimate + estimate // 5 + 10_000
    max_fee, tip = eip1559_fees(w3)
    cid = chain_id(w3)

    def sign_and_send(nonce: int) -> str:
        fields: dict[str, Any] = {
            "type": 2,
            "chainId": cid,
            "nonce": nonce,
            "gas": gas,
            "value": value,
            "data": data,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": tip,
        }
        if to is not None:
            fields["to"] = to
        signed = account.sign_transaction(fields)
        try:
            return str(rpc(w3, "eth_sendRawTransaction", ["0x" + bytes(signed.raw_transaction).hex()]))
        except RpcError as exc:  # this very transaction reached the node before (a retried send): it counts
            if any(m in str(exc.rpc_error.get("message", "")).lower() for m in _ALREADY_KNOWN_MARKERS):
                return "0x" + bytes(signed.hash).hex()
            raise

    tx_hash = nonce_manager(w3, account.address).send_with_nonce(sign_and_send)
    receipt = wait_for_receipt(w3, tx_hash, timeout)
    if int(receipt["status"], 16) != 1:
        block = int(receipt["blockNumber"], 16)
        data_out = _revert_data_of_mined(w3, tx_hash)
        if data_out is not None:
            raise decoder(data_out, function)
        raise ChainError(
            f"{function or 'transaction'} {tx_hash} reverted on chain in block {block} "
            f"(gas used {int(receipt['gasUsed'], 16)} of {gas}); the chain state changed after simulation"
        )
    return dict(receipt)


def _revert_data_of_mined(w3: Web3, tx_hash: str) -> bytes | None:
    """The revert data of a mined, failed transaction, replayed by `debug_traceTransaction` (anvil, hardhat)."""
    try:
        trace = rpc(
            w3,
            "debug_traceTransaction",
            [tx_hash, {"disableStack": True, "disableMemory": True, "disableStorage": True}],
        )
    except ChainError as exc:
        log.debug("cannot trace %s for its revert data: %s", tx_hash, exc)
        return None
    value = trace.get("returnValue") if isinstance(trace, dict) else None
    if not isinstance(value, str):
        return None
    try:
        return bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        return None


def wait_for_receipt(w3: Web3, tx_hash: str, timeout: float = 120.0, poll: float = 0.002) -> dict[str, Any]:
    """Poll until the transaction is mined (devnets mine asynchronously); ChainError after `timeout`."""
    deadline = time.monotonic() + timeout
    delay = poll
    while True:
        receipt = rpc(w3, "eth_getTransactionReceipt", [tx_hash])
        if receipt is not None and receipt.get("blockNumber") is not None:
            return dict(receipt)
        if time.monotonic() > deadline:
            raise ChainError(
                f"transaction {tx_hash} was not mined within {timeout:.0f} s: is the node mining? "
                "(a nonce gap after a devnet reset also stalls it: restart the process)"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
