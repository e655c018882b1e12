"""The coordinator's durable state (SQLAlchemy, through `shardnet.db`): jobs, prompts, outputs, hops, steps,
verifications and slashes. The chain event cursor lives in `shardnet.db`'s `chain_cursor` table.

A job row is created when the coordinator first learns of a job (the `JobSubmitted` event, or the prompt
handed over by the client, whichever comes first); its `status` is written only by `coordinator.lifecycle`,
which owns the job's state machine and what a restart does with each state.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, Integer, String, Text, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from shardnet.db import Base, session_scope


class JobRow(Base):
    __tablename__ = "coordinator_jobs"

    job_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    client: Mapped[str | None] = mapped_column(String(42), nullable=True)
    model_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    input_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    max_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    escrow_wei: Mapped[str | None] = mapped_column(
        String(80), nullable=True
    )  # decimal string: wei exceeds 64 bits
    deadline: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # a coordinator.lifecycle.JobState
    chain_pending: Mapped[str | None] = mapped_column(
        String(16), nullable=True
    )  # tx the status leads to, unmined
    source: Mapped[str] = mapped_column(
        String(8), default="chain"
    )  # "chain" (a client) or "api" (paid by us)
    prompt: Mapped[str | None] = mapped_column(Text, nullable=True)
    sampling: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON {"temperature", "top_p", "seed"}
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    output: Mapped[str | None] = mapped_column(Text, nullable=True)
    output_tokens: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list of ids
    output_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    finish_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    tx_finalize: Mapped[str | None] = mapped_column(String(66), nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    updated_at: Mapped[float] = mapped_column(Float, default=time.time, onupdate=time.time)


class HopRow(Base):
    """One hop of a job (in the order it joined), the work this coordinator saw it do and its signed commitment."""

    __tablename__ = "coordinator_hops"

    job_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hop_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    node: Mapped[str] = mapped_column(String(42))
    endpoint: Mapped[str] = mapped_column(String(256))
    span_start: Mapped[int] = mapped_column(Integer)
    span_end: Mapped[int] = mapped_column(Integer)
    positions: Mapped[int] = mapped_column(Integer, default=0)
    layer_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    commitment: Mapped[str | None] = mapped_column(String(66), nullable=True)  # root it committed to, if any
    signed_commitment: Mapped[str | None] = mapped_column(
        Text, nullable=True
    )  # JSON, as the worker signed it
    settle_note: Mapped[str | None] = mapped_column(
        String(200), nullable=True
    )  # why it is left out, if it is
    reason: Mapped[str] = mapped_column(String(16), default="route")  # "route", "failover", "rerun"


class StepRow(Base):
    """One step of one hop: where it ran and the hashes of what went in and came out."""

    __tablename__ = "coordinator_steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(BigInteger, index=True)
    hop_index: Mapped[int] = mapped_column(Integer)
    step_index: Mapped[int] = mapped_column(Integer)
    start_pos: Mapped[int] = mapped_column(Integer)
    n_positions: Mapped[int] = mapped_column(Integer)
    input_hash: Mapped[str] = mapped_column(String(66))
    output_hash: Mapped[str] = mapped_column(String(66))
    replay: Mapped[bool] = mapped_column(Boolean, default=False)


class VerificationRow(Base):
    __tablename__ = "coordinator_verifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(BigInteger, index=True)
    hop_index: Mapped[int] = mapped_column(Integer)
    step_index: Mapped[int] = mapped_column(Integer)
    node: Mapped[str] = mapped_column(String(42))
    replica: Mapped[str] = mapped_column(String(42))
    metric: Mapped[float] = mapped_column(Float)
    agree: Mapped[bool] = mapped_column(Boolean)
    referee: Mapped[str | None] = mapped_column(String(42), nullable=True)
    outlier: Mapped[str | None] = mapped_column(String(42), nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class SlashRow(Base):
    __tablename__ = "coordinator_slashes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(BigInteger, index=True)
    node: Mapped[str] = mapped_column(String(42), index=True)
    evidence_hash: Mapped[str] = mapped_column(String(66))
    evidence: Mapped[str] = mapped_column(Text)  # the canonical JSON whose keccak is evidence_hash
    tx_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


@dataclass(frozen=True)
class StepRecord:
    hop_index: int
    step_index: int
    start_pos: int
    n_positions: int
    input_hash: bytes
    output_hash: bytes
    replay: bool = False


def _hex(b: bytes | None) -> str | None:
    return None if b is None else "0x" + b.hex()


class CoordinatorState:
    """Typed access to the coordinator's tables. Each method is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        Base.metadata.create_all(engine)

    # -- jobs
    def get_job(self, job_id: int) -> JobRow | None:
        with Session(self.engine, expire_on_commit=False) as s:
            return s.get(JobRow, job_id)

    def set_job_fields(self, job_id: int, **fields: Any) -> JobRow:
        """Set `fields` of an existing job row (not its status: `coordinator.lifecycle` moves that)."""
        if "status" in fields:
            raise ValueError("a job's status moves only through coordinator.lifecycle.JobLifecycle")
        with session_scope(self.engine) as s:
            row = s.get(JobRow, job_id)
            if row is None:
                raise KeyError(f"no job {job_id} in the coordinator's database")
            for key, value in fields.items():
                setattr(row, key, value)
            row.updated_at = time.time()
        return row

    def unsettled_jobs(self, terminal: Sequence[str]) -> list[JobRow]:
        """Jobs not in a `terminal` status, or whose last chain transaction is not known to be mined."""
        with Session(self.engine, expire_on_commit=False) as s:
            q = select(JobRow).where(JobRow.status.not_in(list(terminal)) | JobRow.chain_pending.is_not(None))
            return list(s.scalars(q.order_by(JobRow.job_id)))

    def jobs(self, *, statuses: Sequence[str] | None = None, client: str | None = None) -> list[JobRow]:
        with Session(self.engine, expire_on_commit=False) as s:
            q = select(JobRow).order_by(JobRow.job_id)
            if statuses:
                q = q.where(JobRow.status.in_(list(statuses)))
            if client:
                q = q.where(JobRow.client == client.lower())
            return list(s.scalars(q))

    # -- hops and steps
    def save_hop(self, job_id: int, hop_index: int, **fields: Any) -> None:
        with session_scope(self.engine) as s:
            row = s.get(HopRow, (job_id, hop_index))
            if row is None:
                s.add(HopRow(job_id=job_id, hop_index=hop_index, **fields))
            else:
                for key, value in fields.items():
                    setattr(row, key, value)

    def hops(self, job_id: int) -> list[HopRow]:
        with Session(self.engine, expire_on_commit=False) as s:
            return list(s.scalars(select(HopRow).where(HopRow.job_id == job_id).order_by(HopRow.hop_index)))

    def add_steps(self, job_id: int, steps: Sequence[StepRecord]) -> None:
        with session_scope(self.engine) as s:
            s.add_all(
                StepRow(
                    job_id=job_id,
                    hop_index=r.hop_index,
                    step_index=r.step_index,
                    start_pos=r.start_pos,
                    n_positions=r.n_positions,
                    input_hash=_hex(r.input_hash),
                    output_hash=_hex(r.output_hash),
                    replay=r.replay,
                )
                for r in steps
            )

    def steps(self, job_id: int) -> list[StepRow]:
        with Session(self.engine, expire_on_commit=False) as s:
            return list(s.scalars(select(StepRow).where(StepRow.job_id == job_id).order_by(StepRow.id)))

    # -- verification and slashing
    def add_verification(self, **fields: Any) -> None:
        with session_scope(self.engine) as s:
            s.add(VerificationRow(**fields))

    def verifications(self, job_id: int | None = None) -> list[VerificationRow]:
        with Session(self.engine, expire_on_commit=False) as s:
            q = select(VerificationRow).order_by(VerificationRow.id)
            if job_id is not None:
                q = q.where(VerificationRow.job_id == job_id)
            return list(s.scalars(q))

    def add_slash(
        self, *, job_id: int, node: str, evidence_hash: bytes, evidence: dict[str, Any], tx_hash: str | None
    ) -> None:
        with session_scope(self.engine) as s:
            s.add(
                SlashRow(
                    job_id=job_id,
                    node=node.lower(),
                    evidence_hash=_hex(evidence_hash),
                    evidence=json.dumps(evidence, sort_keys=True, separators=(",", ":")),
                    tx_hash=tx_hash,
                )
            )

    def slashes(self) -> list[SlashRow]:
        with Session(self.engine, expire_on_commit=False) as s:
            return list(s.scalars(select(SlashRow).order_by(SlashRow.id)))

    def slashed_nodes(self) -> set[str]:
        return {r.node for r in self.slashes()}
