"""Typed Python bindings of the ShardRegistry contract (specified by contracts/IShardRegistry.sol).

One snake_case method per contract function. Views return frozen dataclasses; writes simulate first
(a revert raises `ContractRevert` naming the custom error and its arguments, nothing is sent), then
send with EIP-1559 fees and return a `TxResult` with the decoded events.

    registry = Registry.from_deployment(account=my_account)
    registry.register_node("http://10.0.0.5:8100", stake=10**18)
    model_id = registry.register_model("m", cid, 30, 10**9).event("ModelRegistered").args["modelId"]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from shardnet.chain.artifacts import ContractArtifact, load_artifact
from shardnet.chain.errors import ChainError, ContractRevert, RevertDecoder, _canonical_type
from shardnet.chain.tx import DecodedEvent, TxResult, call_or_revert, rpc, send_transaction
from shardnet.span import LayerSpan

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from web3 import Web3

__all__ = [
    "LOG_RANGE", "AssignmentInfo", "DecodedEvent", "HopInfo", "JobInfo", "JobStatus", "ModelInfo", "NodeInfo",
    "Registry", "RegistryParams", "TxResult",
]

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"

#: Most blocks one `eth_getLogs` request covers (many public nodes refuse wider ranges, some above 1,000-10,000).
LOG_RANGE = 2000


class JobStatus(IntEnum):
    """IShardRegistry.JobStatus, in the contract's spelling (as in its ABI, events and revert messages).

    The contract's `None` (no such job) cannot be a Python attribute: it is `NoJob` here.
    """

    NoJob = 0
    Submitted = 1
    Routed = 2
    Finalized = 3
    Cancelled = 4
    Failed = 5


@dataclass(frozen=True)
class RegistryParams:
    """Constructor parameters of the registry, in constructor order."""

    min_stake: int = 10**18
    unbonding_period: int = 60
    job_timeout: int = 600
    coordinator_fee_bps: int = 500
    slash_bps: int = 5000
    max_prompt_tokens: int = 512

    def as_args(self) -> list[int]:
        return [getattr(self, f.name) for f in fields(self)]


@dataclass(frozen=True)
class NodeInfo:
    address: str
    endpoint: str
    stake: int
    unbonding: int
    unbonding_until: int
    live_assignments: int
    open_jobs: int
    registered: bool
    jailed: bool


@dataclass(frozen=True)
class ModelInfo:
    model_id: int
    name: str
    manifest_cid: str
    num_layers: int
    price_per_layer_token: int
    owner: str


@dataclass(frozen=True)
class AssignmentInfo:
    assignment_id: int
    node: str
    model_id: int
    start: int
    end: int
    live: bool

    @property
    def span(self) -> LayerSpan:
        return LayerSpan(self.start, self.end)


@dataclass(frozen=True)
class HopInfo:
    index: int
    node: str
    start: int
    end: int
    commitment: bytes

    @property
    def span(self) -> LayerSpan:
        return LayerSpan(self.start, self.end)

    @property
    def committed(self) -> bool:
        return self.commitment != bytes(32)


@dataclass(frozen=True)
class JobInfo:
    job_id: int
    client: str
    model_id: int
    input_hash: bytes
    max_tokens: int
    escrow: int
    deadline: int
    status: JobStatus
    coordinator: str
    output_hash: bytes


def to_bytes32(value: bytes | str) -> bytes:
    """A 32-byte hash from bytes or a 0x-hex string."""
    raw = bytes.fromhex(value[2:] if value.startswith("0x") else value) if isinstance(value, str) else bytes(value)
    if len(raw) != 32:
        raise ValueError(f"expected a 32-byte hash, got {len(raw)} bytes")
    return raw


def _to_python(param: Mapping[str, Any], value: Any) -> Any:
    """ABI-decoded value -> Python: checksummed addresses, structs as dicts by component name."""
    typ = str(param["type"])
    if typ.endswith("]"):
        inner = dict(param, type=typ[: typ.rindex("[")])
        return [_to_python(inner, v) for v in value]
    if typ == "tuple":
        return {c["name"]: _to_python(c, v) for c, v in zip(param["components"], value, strict=True)}
    if typ == "address":
        return to_checksum_address(value)
    return value


class _Function:
    def __init__(self, entry: Mapping[str, Any]) -> None:
        self.name = str(entry["name"])
        self.inputs = list(entry.get("inputs", []))
        self.outputs = list(entry.get("outputs", []))
        self.input_types = [_canonical_type(p) for p in self.inputs]
        self.output_types = [_canonical_type(p) for p in self.outputs]
        self.selector = keccak(text=f"{self.name}({','.join(self.input_types)})")[:4]
        self.payable = entry.get("stateMutability") == "payable"

    def encode(self, args: Sequence[Any]) -> str:
        if len(args) != len(self.inputs):
            raise TypeError(f"{self.name} takes {len(self.inputs)} arguments, got {len(args)}")
        return "0x" + (self.selector + abi_encode(self.input_types, list(args))).hex()

    def decode(self, data: bytes) -> list[Any]:
        values = abi_decode(self.output_types, data)
        return [_to_python(p, v) for p, v in zip(self.outputs, values, strict=True)]


class _Event:
    def __init__(self, entry: Mapping[str, Any]) -> None:
        self.name = str(entry["name"])
        self.inputs = list(entry.get("inputs", []))
        self.topic = keccak(text=f"{self.name}({','.join(_canonical_type(p) for p in self.inputs)})")
        self.indexed = [p for p in self.inputs if p.get("indexed")]
        self.unindexed = [p for p in self.inputs if not p.get("indexed")]

    def decode_args(self, topics: Sequence[bytes], data: bytes) -> dict[str, Any]:
        args: dict[str, Any] = {}
        for param, topic in zip(self.indexed, topics[1:], strict=True):
            typ = _canonical_type(param)
            dynamic = typ in ("string", "bytes") or typ.endswith("]") or typ.startswith("(")
            args[param["name"]] = topic if dynamic else _to_python(param, abi_decode([typ], topic)[0])
        values = abi_decode([_canonical_type(p) for p in self.unindexed], data)
        for param, value in zip(self.unindexed, values, strict=True):
            args[param["name"]] = _to_python(param, value)
        return {p["name"]: args[p["name"]] for p in self.inputs}  # ABI order


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return bytes.fromhex(value[2:] if value.startswith("0x") else value)
    return bytes(value)


def _as_int(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


class Registry:
    """Bindings of one deployed ShardRegistry. Without an `account`, only views work."""

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
        self._functions = {e["name"]: _Function(e) for e in self.artifact.entries("function")}
        self._events = {ev.topic: ev for ev in (_Event(e) for e in self.artifact.entries("event"))}
        self._decoder = RevertDecoder(self.artifact.abi, enums={"JobStatus": JobStatus})

    @classmethod
    def from_deployment(
        cls, path: str | Path | None = None, account: LocalAccount | None = None, *, rpc_url: str | None = None
    ) -> Registry:
        """Bindings for the registry in a deployment file (default: `SHARDNET_DEPLOYMENT` or .shardnet/deployment.json)."""
        from web3 import HTTPProvider, Web3

        from shardnet.chain.deploy import load_deployment

        dep = load_deployment(path)
        w3 = Web3(HTTPProvider(rpc_url or dep.rpc_url, request_kwargs={"timeout": 30}))
        return cls(w3, dep.registry, account, deploy_block=dep.deploy_block)

    def with_account(self, account: LocalAccount) -> Registry:
        """The same registry, sending as `account`."""
        return Registry(self.w3, self.address, account, artifact=self.artifact, deploy_block=self.deploy_block)

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
    def _function(self, name: str) -> _Function:
        try:
            return self._functions[name]
        except KeyError:
            raise ChainError(
                f"the registry ABI has no function {name!r}: the artifact is out of date, run `shardnet compile`"
            ) from None

    def _view(self, name: str, *args: Any) -> Any:
        fn = self._function(name)
        tx = {"to": self.address, "data": fn.encode(args)}
        if self.account is not None:
            tx["from"] = self.account.address
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
            raise ChainError(f"cannot send {name}: this Registry has no account; pass account= (a key) to send")
        fn = self._function(name)
        if value and not fn.payable:
            raise ChainError(f"{name} is not payable but value={value} was given")
        receipt = send_transaction(
            self.w3, self.account, to=self.address, data=fn.encode(args), value=value,
            decode=self._decoder.decode, function=name,
        )
        return TxResult(
            tx_hash=str(receipt["transactionHash"]),
            block_number=_as_int(receipt["blockNumber"]),
            gas_used=_as_int(receipt["gasUsed"]),
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
            topics = [_as_bytes(t) for t in entry["topics"]]
            event = self._events.get(topics[0])
            if event is None:
                continue
            tx_hash = entry.get("transactionHash")
            events.append(DecodedEvent(
                name=event.name,
                args=event.decode_args(topics, _as_bytes(entry.get("data") or b"")),
                block_number=_as_int(entry["blockNumber"]),
                log_index=_as_int(entry["logIndex"]),
                tx_hash="0x" + _as_bytes(tx_hash).hex() if tx_hash is not None else "",
                address=self.address,
            ))
        events.sort(key=lambda e: e.position)
        return events

    def get_logs(
        self,
        from_block: int,
        to_block: int,
        event_names: Sequence[str] | None = None,
        *,
        max_range: int = LOG_RANGE,
    ) -> list[DecodedEvent]:
        """The registry's events in blocks [from_block, to_block], optionally only some event names, in chain order.

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
        events: list[DecodedEvent] = []
        for start in range(max(from_block, 0), to_block + 1, max_range):
            end = min(to_block, start + max_range - 1)
            chunk = dict(query, fromBlock=hex(start), toBlock=hex(end))
            events += self.decode_logs(rpc(self.w3, "eth_getLogs", [chunk]))  # chunks come in chain order
        return events

    def block_number(self) -> int:
        return int(rpc(self.w3, "eth_blockNumber", []), 16)

    def balance(self) -> int:
        """The contract's ether balance (wei): always totalStaked + totalUnbonding + totalEscrow + totalClaimable + protocolFees."""
        return int(rpc(self.w3, "eth_getBalance", [self.address, "latest"]), 16)

    # ------------------------------------------------------------ governance
    def set_coordinator(self, coordinator: str, endpoint: str, approved: bool = True) -> TxResult:
        return self._send("setCoordinator", to_checksum_address(coordinator), endpoint, approved)

    def withdraw_fees(self, to: str) -> TxResult:
        return self._send("withdrawFees", to_checksum_address(to))

    # ------------------------------------------------------------ nodes
    def register_node(self, endpoint: str, stake: int) -> TxResult:
        return self._send("registerNode", endpoint, value=stake)

    def update_endpoint(self, endpoint: str) -> TxResult:
        return self._send("updateEndpoint", endpoint)

    def add_stake(self, amount: int) -> TxResult:
        return self._send("addStake", value=amount)

    def request_unstake(self, amount: int) -> TxResult:
        return self._send("requestUnstake", amount)

    def withdraw_stake(self) -> TxResult:
        return self._send("withdrawStake")

    # ------------------------------------------------------------ models and shards
    def register_model(self, name: str, manifest_cid: str, num_layers: int, price_per_layer_token: int) -> TxResult:
        return self._send("registerModel", name, manifest_cid, num_layers, price_per_layer_token)

    def announce_shard(self, model_id: int, span: LayerSpan) -> TxResult:
        return self._send("announceShard", model_id, span.start, span.end)

    def release_shard(self, assignment_id: int) -> TxResult:
        return self._send("releaseShard", assignment_id)

    # ------------------------------------------------------------ jobs
    def submit_job(self, model_id: int, input_hash: bytes | str, max_tokens: int, value: int) -> TxResult:
        return self._send("submitJob", model_id, to_bytes32(input_hash), max_tokens, value=value)

    def assign_route(self, job_id: int, hops: Sequence[tuple[str, LayerSpan]]) -> TxResult:
        nodes = [to_checksum_address(node) for node, _ in hops]
        return self._send("assignRoute", job_id, nodes, [s.start for _, s in hops], [s.end for _, s in hops])

    def add_hop(self, job_id: int, node: str, span: LayerSpan) -> TxResult:
        return self._send("addHop", job_id, to_checksum_address(node), span.start, span.end)

    def post_commitment(self, job_id: int, commitment: bytes | str) -> TxResult:
        return self._send("postCommitment", job_id, to_bytes32(commitment))

    def finalize_job(self, job_id: int, output_hash: bytes | str, layer_tokens: Sequence[int]) -> TxResult:
        return self._send("finalizeJob", job_id, to_bytes32(output_hash), list(layer_tokens))

    def fail_job(self, job_id: int, reason: str) -> TxResult:
        return self._send("failJob", job_id, reason)

    def cancel_job(self, job_id: int) -> TxResult:
        return self._send("cancelJob", job_id)

    # ------------------------------------------------------------ slashing and payouts
    def slash(self, node: str, evidence_hash: bytes | str, job_id: int) -> TxResult:
        return self._send("slash", to_checksum_address(node), to_bytes32(evidence_hash), job_id)

    def claim(self) -> TxResult:
        return self._send("claim")

    # ------------------------------------------------------------ views
    def owner(self) -> str:
        return str(self._view("owner"))

    def min_stake(self) -> int:
        return int(self._view("minStake"))

    def unbonding_period(self) -> int:
        return int(self._view("unbondingPeriod"))

    def job_timeout(self) -> int:
        return int(self._view("jobTimeout"))

    def coordinator_fee_bps(self) -> int:
        return int(self._view("coordinatorFeeBps"))

    def slash_bps(self) -> int:
        return int(self._view("slashBps"))

    def max_prompt_tokens(self) -> int:
        return int(self._view("maxPromptTokens"))

    def params(self) -> RegistryParams:
        return RegistryParams(
            self.min_stake(), self.unbonding_period(), self.job_timeout(),
            self.coordinator_fee_bps(), self.slash_bps(), self.max_prompt_tokens(),
        )

    def is_coordinator(self, account: str) -> bool:
        return bool(self._view("isCoordinator", to_checksum_address(account)))

    def coordinator_endpoint(self, account: str) -> str:
        return str(self._view("coordinatorEndpoint", to_checksum_address(account)))

    def get_node(self, node: str) -> NodeInfo:
        n = self._view("getNode", to_checksum_address(node))
        return NodeInfo(
            to_checksum_address(node), n["endpoint"], n["stake"], n["unbonding"], n["unbondingUntil"],
            n["liveAssignments"], n["openJobs"], n["registered"], n["jailed"],
        )

    def get_model(self, model_id: int) -> ModelInfo:
        m = self._view("getModel", model_id)
        return ModelInfo(model_id, m["name"], m["manifestCid"], m["numLayers"], m["pricePerLayerToken"], m["owner"])

    def model_count(self) -> int:
        return int(self._view("modelCount"))

    def get_assignment(self, assignment_id: int) -> AssignmentInfo:
        a = self._view("getAssignment", assignment_id)
        return AssignmentInfo(assignment_id, a["node"], a["modelId"], a["start"], a["end"], a["live"])

    def assignment_count(self) -> int:
        return int(self._view("assignmentCount"))

    def live_assignments(self, model_id: int) -> list[int]:
        return [int(i) for i in self._view("liveAssignments", model_id)]

    def get_job(self, job_id: int) -> JobInfo:
        j = self._view("getJob", job_id)
        return JobInfo(
            job_id, j["client"], j["modelId"], j["inputHash"], j["maxTokens"], j["escrow"], j["deadline"],
            JobStatus(j["status"]), j["coordinator"], j["outputHash"],
        )

    def get_hops(self, job_id: int) -> list[HopInfo]:
        return [
            HopInfo(i, h["node"], h["start"], h["end"], h["commitment"])
            for i, h in enumerate(self._view("getHops", job_id))
        ]

    def job_count(self) -> int:
        return int(self._view("jobCount"))

    def quote(self, model_id: int, max_tokens: int) -> int:
        return int(self._view("quote", model_id, max_tokens))

    def claimable(self, account: str) -> int:
        return int(self._view("claimable", to_checksum_address(account)))

    def total_staked(self) -> int:
        return int(self._view("totalStaked"))

    def total_unbonding(self) -> int:
        return int(self._view("totalUnbonding"))

    def total_escrow(self) -> int:
        return int(self._view("totalEscrow"))

    def total_claimable(self) -> int:
        return int(self._view("totalClaimable"))

    def protocol_fees(self) -> int:
        return int(self._view("protocolFees"))
