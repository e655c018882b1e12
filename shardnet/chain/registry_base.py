"""The plumbing under the registry bindings: connection, ABI encoding, simulate-then-send, revert and log decoding."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from eth_utils import to_checksum_address

from shardnet.chain.abi import AbiEvent, AbiFunction, as_bytes, as_int
from shardnet.chain.artifacts import ContractArtifact, load_artifact
from shardnet.chain.errors import ChainError, ContractRevert, RevertDecoder
from shardnet.chain.registry_types import JobStatus
from shardnet.chain.timing import CHAIN_CLOCK
from shardnet.chain.tx import DecodedEvent, TxResult, call_or_revert, rpc, send_transaction

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from web3 import Web3

#: Most blocks one `eth_getLogs` request covers (many public nodes refuse wider ranges, some above 1,000-10,000).
LOG_RANGE = 2000


class RegistryCore:
    """Connection, ABI and log plumbing of the registry bindings (the functions are in `Registry`)."""

    def __init__(
        self,
        w3: Web3,
        address: str,
        account: LocalAccount | None = None,
        *,
        artifact: ContractArtifact | None = None,
        deploy_block: int = 0,
    ) -> None:
        self.w3 = w3
        self.address = to_checksum_address(address)
        self.account = account
        self.deploy_block = deploy_block
        self.artifact = artifact or load_artifact()
        self._functions = {e["name"]: AbiFunction(e) for e in self.artifact.entries("function")}
        self._events = {ev.topic: ev for ev in (AbiEvent(e) for e in self.artifact.entries("event"))}
        self._decoder = RevertDecoder(self.artifact.abi, enums={"JobStatus": JobStatus})
        self._immutables: dict[str, int] = {}

    @classmethod
    def from_deployment(
        cls,
        path: str | Path | None = None,
        account: LocalAccount | None = None,
        *,
        rpc_url: str | None = None,
    ) -> Self:
        """Bindings for the registry in a deployment file (default: `SHARDNET_DEPLOYMENT` or .shardnet/deployment.json)."""
        from web3 import HTTPProvider, Web3

        from shardnet.chain.deploy import load_deployment

        dep = load_deployment(path)
        w3 = Web3(HTTPProvider(rpc_url or dep.rpc_url, request_kwargs={"timeout": 30}))
        return cls(w3, dep.registry, account, deploy_block=dep.deploy_block)

    def with_account(self, account: LocalAccount) -> Self:
        """The same registry, sending as `account`."""
        return type(self)(
            self.w3, self.address, account, artifact=self.artifact, deploy_block=self.deploy_block
        )

    @property
    def rpc_url(self) -> str:
        """The JSON-RPC URL these bindings call ('' when the provider has none, e.g. an in-process one)."""
        return str(getattr(self.w3.provider, "endpoint_uri", "") or "")

    @property
    def event_names(self) -> list[str]:
        return sorted(ev.name for ev in self._events.values())

    @property
    def event_topics(self) -> dict[str, str]:
        """Event name -> topic0 (0x-hex), e.g. for `eth_getLogs` filters."""
        return {ev.name: "0x" + ev.topic.hex() for ev in self._events.values()}

    def decode_revert(self, data: bytes, function: str | None = None) -> ContractRevert:
        """Decode raw revert data against this contract's ABI."""
        return self._decoder.decode(data, function)

    # ------------------------------------------------------------ plumbing
    def _function(self, name: str) -> AbiFunction:
        try:
            return self._functions[name]
        except KeyError:
            raise ChainError(
                f"the registry ABI has no function {name!r}: the artifact is out of date, run `shardnet compile`"
            ) from None

    def _immutable(self, name: str) -> int:
        """A parameter the contract fixes at deployment (a Solidity `immutable`): read from the chain once."""
        if name not in self._immutables:
            self._immutables[name] = int(self._view(name))
        return self._immutables[name]

    def _view(self, name: str, *args: Any) -> Any:
        fn = self._function(name)
        tx = {"to": self.address, "data": fn.encode(args)}
        if self.account is not None:
            tx["from"] = self.account.address
        with CHAIN_CLOCK.timed("read", name):
            raw = call_or_revert(self.w3, tx, self._decoder.decode, name)
        if not raw and fn.outputs:
            raise ChainError(
                f"{name} returned nothing: no registry contract at {self.address} on this chain. Was the devnet "
                "restarted without --state? Redeploy (`shardnet devnet` / `shardnet deploy`) or fix --deployment"
            )
        out = fn.decode(raw)
        return out[0] if len(out) == 1 else out

    def _send(self, name: str, *args: Any, value: int = 0) -> TxResult:
        if self.account is None:
            raise ChainError(
                f"cannot send {name}: this Registry has no account; pass account= (a key) to send"
            )
        fn = self._function(name)
        if value and not fn.payable:
            raise ChainError(f"{name} is not payable but value={value} was given")
        with CHAIN_CLOCK.timed("tx", name):  # sent and mined
            receipt = send_transaction(
                self.w3,
                self.account,
                to=self.address,
                data=fn.encode(args),
                value=value,
                decode=self._decoder.decode,
                function=name,
            )
        return TxResult(
            tx_hash=str(receipt["transactionHash"]),
            block_number=as_int(receipt["blockNumber"]),
            gas_used=as_int(receipt["gasUsed"]),
            events=self.decode_logs(receipt.get("logs", [])),
        )

    def decode_logs(self, logs: Iterable[Mapping[str, Any]]) -> list[DecodedEvent]:
        """Decode the logs this registry emitted (others are skipped), in chain order.

        Accepts raw JSON-RPC logs (hex strings) and web3 log dicts (HexBytes) alike.
        """
        events = []
        for entry in logs:
            if to_checksum_address(entry["address"]) != self.address or not entry.get("topics"):
                continue
            topics = [as_bytes(t) for t in entry["topics"]]
            event = self._events.get(topics[0])
            if event is None:
                continue
            tx_hash = entry.get("transactionHash")
            events.append(
                DecodedEvent(
                    name=event.name,
                    args=event.decode_args(topics, as_bytes(entry.get("data") or b"")),
                    block_number=as_int(entry["blockNumber"]),
                    log_index=as_int(entry["logIndex"]),
                    tx_hash="0x" + as_bytes(tx_hash).hex() if tx_hash is not None else "",
                    address=self.address,
                )
            )
        events.sort(key=lambda e: e.position)
        return events

    def get_logs(
        self,
        from_block: int,
        to_block: int,
        event_names: Sequence[str] | None = None,
        *,
        max_range: int = LOG_RANGE,
        first_indexed: int | None = None,
    ) -> list[DecodedEvent]:
        """The registry's events in blocks [from_block, to_block], optionally only some event names (and only those
        whose first indexed argument, e.g. a jobId, is `first_indexed`), in chain order.

        Asks the node in `eth_getLogs` requests of at most `max_range` blocks each, as public nodes refuse
        wider ranges; the whole chain can be asked for at once.
        """
        if max_range < 1:
            raise ValueError(f"max_range must be at least 1 block, not {max_range}")
        query: dict[str, Any] = {"address": self.address}
        if event_names:
            topics = self.event_topics
            unknown = [n for n in event_names if n not in topics]
            if unknown:
                raise ChainError(f"unknown registry events {unknown}; known: {', '.join(self.event_names)}")
            query["topics"] = [[topics[n] for n in event_names]]
        if first_indexed is not None:
            query["topics"] = [query.get("topics", [None])[0], "0x" + first_indexed.to_bytes(32, "big").hex()]
        events: list[DecodedEvent] = []
        for start in range(max(from_block, 0), to_block + 1, max_range):
            end = min(to_block, start + max_range - 1)
            chunk = dict(query, fromBlock=hex(start), toBlock=hex(end))
            events += self.decode_logs(rpc(self.w3, "eth_getLogs", [chunk]))  # chunks come in chain order
        return events

    def block_number(self) -> int:
        return int(rpc(self.w3, "eth_blockNumber", []), 16)

    def block_hash(self, block: int) -> str | None:
        """The 0x hash of block number `block` on the node's chain now; None when the chain has no such block."""
        found = rpc(self.w3, "eth_getBlockByNumber", [hex(block), False])
        return None if found is None else "0x" + as_bytes(found["hash"]).hex()

    def latest_timestamp(self) -> int:
        """The timestamp of the latest block (a devnet mines only on demand: it may lag the wall clock)."""
        return int(rpc(self.w3, "eth_getBlockByNumber", ["latest", False])["timestamp"], 16)

    def balance(self) -> int:
        """The contract's ether balance (wei): always totalStaked + totalUnbonding + totalEscrow + totalClaimable + protocolFees."""
        return int(rpc(self.w3, "eth_getBalance", [self.address, "latest"]), 16)
