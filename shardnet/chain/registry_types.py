"""Typed values of the registry bindings: constructor parameters, views as frozen dataclasses, and the structs
(job records, settlements, slash evidence) that the contract's write functions take."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from eth_utils import to_checksum_address

from shardnet.chain.commitments import SignedCommitment
from shardnet.span import LayerSpan
from shardnet.wire.eip712 import CompactSignature

if TYPE_CHECKING:
    from shardnet.chain.tx import DecodedEvent

__all__ = [
    "AssignmentInfo",
    "JobInfo",
    "JobRecord",
    "JobStatus",
    "ModelInfo",
    "NodeInfo",
    "RegistryParams",
    "HopVerdicts",
    "PaidVerdict",
    "Settlement",
    "SlashEvidence",
    "VerificationPayment",
    "to_bytes32",
]


class JobStatus(IntEnum):
    """IShardRegistry.JobStatus, in the contract's spelling (as in its ABI, events and revert messages).

    The contract's `None` (no such job) cannot be a Python attribute: it is `NoJob` here.
    """

    NoJob = 0
    Open = 1
    Settled = 2
    Failed = 3
    Cancelled = 4


@dataclass(frozen=True)
class RegistryParams:
    """Constructor parameters of the registry, in constructor order (the defaults suit a devnet).

    On a real chain use an `approval_delay` of a day or more (clients and nodes see a new coordinator coming) and
    a `dispute_window` longer than DRAW_DELAY + 256 blocks (the randomness of a dispute must still be readable).
    """

    min_stake: int = 10**18
    unbonding_period: int = 60
    job_timeout: int = 600
    coordinator_fee_bps: int = 500
    slash_bps: int = 5000
    max_prompt_tokens: int = 512
    approval_delay: int = 0
    dispute_window: int = 60
    protocol_fee_bps: int = 0
    max_job_tokens: int = 4096
    #: each paid verdict earns this share of the checked hop's pay (basis points); quotes hold HELD_VERDICTS x it
    verify_bps: int = 1000

    def as_args(self) -> list[int]:
        return [getattr(self, f.name) for f in fields(self)]


@dataclass(frozen=True)
class NodeInfo:
    address: str
    endpoint: str
    stake: int
    unbonding: int
    unbonding_until: int
    bonded_until: int
    live_assignments: int
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
class JobRecord:
    """IShardRegistry.JobRecord: the job as submitted (the registry keeps only its hash)."""

    client: str
    coordinator: str
    model_id: int
    max_tokens: int
    deadline: int
    escrow: int
    num_layers: int
    price: int

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            to_checksum_address(self.client),
            to_checksum_address(self.coordinator),
            self.model_id,
            self.max_tokens,
            self.deadline,
            self.escrow,
            self.num_layers,
            self.price,
        )

    @classmethod
    def from_event(cls, args: Mapping[str, Any]) -> JobRecord:
        """From the arguments of a JobSubmitted event."""
        return cls(
            args["client"],
            args["coordinator"],
            int(args["modelId"]),
            int(args["maxTokens"]),
            int(args["deadline"]),
            int(args["escrow"]),
            int(args["numLayers"]),
            int(args["price"]),
        )

    @classmethod
    def from_abi(cls, value: Mapping[str, Any]) -> JobRecord:
        """From a decoded ABI tuple (a dict by component name)."""
        return cls(
            value["client"],
            value["coordinator"],
            int(value["modelId"]),
            int(value["maxTokens"]),
            int(value["deadline"]),
            int(value["escrow"]),
            int(value["numLayers"]),
            int(value["price"]),
        )


@dataclass(frozen=True)
class JobInfo:
    """A job: its record and input hash (from JobSubmitted), its status and what posted commitments took."""

    job_id: int
    record: JobRecord
    input_hash: bytes
    status: JobStatus
    posted_paid: int
    posted_hops: int
    submitted_block: int

    @classmethod
    def just_submitted(cls, event: DecodedEvent) -> JobInfo:
        """The job a JobSubmitted event (e.g. of the submitter's own receipt) just opened: Open, nothing posted;
        the same as `Registry.get_job` then, without its two reads."""
        args = event.args
        return cls(
            int(args["jobId"]),
            JobRecord.from_event(args),
            bytes(args["inputHash"]),
            JobStatus.Open,
            0,
            0,
            event.block_number,
        )

    @property
    def client(self) -> str:
        return self.record.client

    @property
    def coordinator(self) -> str:
        return self.record.coordinator

    @property
    def model_id(self) -> int:
        return self.record.model_id

    @property
    def max_tokens(self) -> int:
        return self.record.max_tokens

    @property
    def escrow(self) -> int:
        return self.record.escrow

    @property
    def deadline(self) -> int:
        return self.record.deadline


@dataclass(frozen=True)
class Settlement:
    """IShardRegistry.Settlement: one job of a settleJobs batch (hops are sorted the registry's way)."""

    job_id: int
    job: JobRecord
    output_hash: bytes
    hops: Sequence[SignedCommitment]

    def as_tuple(self) -> tuple[Any, ...]:
        hops = sorted(self.hops, key=SignedCommitment.sort_key)
        return self.job_id, self.job.as_tuple(), to_bytes32(self.output_hash), [h.as_tuple() for h in hops]

    def sorted_hops(self) -> list[SignedCommitment]:
        """The hops in calldata order: bit i of JobSettled.paidHops is about this list's item i."""
        return sorted(self.hops, key=SignedCommitment.sort_key)

    @classmethod
    def from_abi(cls, value: Mapping[str, Any]) -> Settlement:
        """From a decoded settleJobs argument (for reading a settlement back from its transaction)."""
        job_id = int(value["jobId"])
        hops = [
            SignedCommitment(
                job_id,
                h["node"],
                int(h["start"]),
                int(h["end"]),
                int(h["positions"]),
                int(h["steps"]),
                bytes(h["root"]),
                CompactSignature(bytes(h["r"]), bytes(h["vs"])),
            )
            for h in value["hops"]
        ]
        return cls(job_id, JobRecord.from_abi(value["job"]), bytes(value["outputHash"]), hops)


@dataclass(frozen=True)
class SlashEvidence:
    """IShardRegistry.SlashEvidence: what `slash` checks (see docs/PROTOCOL.md)."""

    job_id: int
    job: JobRecord
    close_block: int
    commitment: SignedCommitment
    leaf_index: int
    leaf: bytes
    proof: Sequence[bytes]
    verdicts: Sequence[CompactSignature]

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            self.job_id,
            self.job.as_tuple(),
            self.close_block,
            self.commitment.as_tuple(),
            self.leaf_index,
            to_bytes32(self.leaf),
            [to_bytes32(p) for p in self.proof],
            [(v.r, v.vs) for v in self.verdicts],
        )


@dataclass(frozen=True)
class PaidVerdict:
    """IShardRegistry.PaidVerdict: a drawn verifier's signed Verdict on a hop (innocent: leaf index 2**32 - 1,
    leaf 0; see shardnet.chain.commitments.INNOCENT_LEAF_INDEX)."""

    leaf_index: int
    leaf: bytes
    signature: CompactSignature

    def as_tuple(self) -> tuple[Any, ...]:
        return self.leaf_index, to_bytes32(self.leaf), self.signature.r, self.signature.vs


@dataclass(frozen=True)
class HopVerdicts:
    """IShardRegistry.HopVerdicts: one checked hop, the size of the draw its verifiers came from, their verdicts."""

    commitment: SignedCommitment
    picks: int
    verdicts: Sequence[PaidVerdict]

    def as_tuple(self) -> tuple[Any, ...]:
        return self.commitment.as_tuple(), self.picks, [v.as_tuple() for v in self.verdicts]


@dataclass(frozen=True)
class VerificationPayment:
    """IShardRegistry.VerificationPayment: a settled job's checked hops, paid from its held verification share
    (hops are sorted the registry's way: layer order)."""

    job_id: int
    job: JobRecord
    close_block: int
    hops: Sequence[HopVerdicts]

    def as_tuple(self) -> tuple[Any, ...]:
        hops = sorted(self.hops, key=lambda h: SignedCommitment.sort_key(h.commitment))
        return self.job_id, self.job.as_tuple(), self.close_block, [h.as_tuple() for h in hops]


def to_bytes32(value: bytes | str) -> bytes:
    """A 32-byte hash from bytes or a 0x-hex string."""
    raw = (
        bytes.fromhex(value[2:] if value.startswith("0x") else value)
        if isinstance(value, str)
        else bytes(value)
    )
    if len(raw) != 32:
        raise ValueError(f"expected a 32-byte hash, got {len(raw)} bytes")
    return raw
