"""The worker's durable state (SQLAlchemy, through `shardnet.db`): sessions, step hashes, signed commitments.

What survives a crash: every step hash (and its positions) as it is produced, every session's open/close and
ticket, and every signed commitment, stored before it is handed out, with what became of it (settled by the
coordinator, posted by this worker, or skipped). On restart, sessions left open by the crash are closed as
"lost" (their caches died with the process) and their jobs are signed with the steps that were served.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import BigInteger, Float, Integer, String, Text, func, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from shardnet.chain.commitments import SignedCommitment
from shardnet.db import Base, session_scope
from shardnet.span import LayerSpan
from shardnet.wire.commitment import merkle_root
from shardnet.wire.eip712 import CompactSignature

# status values of a job's commitment (protocol v2)
SIGNED = "signed"  # signed and stored; handed to the coordinator (or due for the fallback post)
SETTLED = "settled"  # paid in the coordinator's settleJobs (JobSettled with this worker's hop paid)
POSTED = "posted"  # this worker posted it itself (postCommitment, commit_tx)
ON_CHAIN = "on_chain"  # found already posted on chain (e.g. posted before a crash)
PAID = "paid"  # posted and paid after its provisional window (collectPosted)
AWAITING_PAY = (POSTED, ON_CHAIN)  # posted: provisional until the registry's window passes, then collected
SKIPPED = "skipped"  # can no longer be paid (job closed without it, or past its deadline); see note
OPEN_STATUSES = (SIGNED,)


class WorkerSessionRow(Base):
    __tablename__ = "worker_sessions"

    worker: Mapped[str] = mapped_column(String(42), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    job_id: Mapped[int | None] = mapped_column(BigInteger, index=True, nullable=True)
    coordinator: Mapped[str] = mapped_column(String(42))
    span_start: Mapped[int] = mapped_column(Integer)
    span_end: Mapped[int] = mapped_column(Integer)
    opened_at: Mapped[float] = mapped_column(Float)
    closed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    close_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    steps: Mapped[int] = mapped_column(Integer, default=0)
    commitment: Mapped[str | None] = mapped_column(String(66), nullable=True)
    ticket: Mapped[str | None] = mapped_column(Text, nullable=True)  # the coordinator's signed ticket (JSON)


class WorkerStepRow(Base):
    __tablename__ = "worker_step_hashes"

    worker: Mapped[str] = mapped_column(String(42), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    step_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    step_hash: Mapped[str] = mapped_column(String(66))
    positions: Mapped[int] = mapped_column(Integer, default=1)  # token positions this step computed


class WorkerJobRow(Base):
    """One job this worker served: its signed commitment (protocol v2) and what became of it."""

    __tablename__ = "worker_commitments"

    worker: Mapped[str] = mapped_column(String(42), primary_key=True)
    job_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    span_start: Mapped[int] = mapped_column(Integer)
    span_end: Mapped[int] = mapped_column(Integer)
    positions: Mapped[int] = mapped_column(Integer)
    steps: Mapped[int] = mapped_column(Integer)
    commitment: Mapped[str] = mapped_column(String(66))  # Merkle root of the job's step hashes
    signature: Mapped[str] = mapped_column(String(130))  # EIP-2098 compact, hex
    ticket: Mapped[str | None] = mapped_column(
        Text, nullable=True
    )  # a ticket of the job (for postCommitment)
    handed_at: Mapped[float] = mapped_column(Float)  # when it was signed (and handed out): the window starts
    commit_status: Mapped[str] = mapped_column(String(16), default=SIGNED)
    commit_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)
    note: Mapped[str | None] = mapped_column(String(200), nullable=True)
    updated_at: Mapped[float] = mapped_column(Float)

    def signed(self, worker: str) -> SignedCommitment:
        return SignedCommitment(
            self.job_id,
            worker,
            self.span_start,
            self.span_end,
            self.positions,
            self.steps,
            bytes.fromhex(self.commitment[2:]),
            CompactSignature.from_hex(self.signature),
        )


@dataclass(frozen=True)
class JobWork:
    """Everything this worker computed for one job, over all its sessions (in the order they were opened)."""

    job_id: int
    span: LayerSpan
    step_hashes: list[bytes]
    positions: int
    ticket: str | None  # the ticket (JSON) of the job's last session

    @property
    def billable_positions(self) -> int:
        """The positions to commit to: what was computed, at most the ticket's max_positions (the registry refuses
        a post above it, and the coordinator bounded the job so)."""
        if self.ticket is None:
            return self.positions
        bound = json.loads(self.ticket).get("max_positions")
        return min(self.positions, bound) if isinstance(bound, int) and bound > 0 else self.positions

    @property
    def root(self) -> bytes:
        return merkle_root(self.step_hashes)


class WorkerState:
    """All reads and writes of the worker's tables; safe to call from several threads (a session per call)."""

    def __init__(self, engine: Engine, worker: str) -> None:
        self.engine = engine
        self.worker = worker
        names = (WorkerSessionRow.__tablename__, WorkerStepRow.__tablename__, WorkerJobRow.__tablename__)
        Base.metadata.create_all(engine, tables=[Base.metadata.tables[n] for n in names])
        self._insert_step = insert(WorkerStepRow)

    # -- sessions
    def session_opened(
        self,
        session_id: str,
        job_id: int | None,
        coordinator: str,
        start: int,
        end: int,
        ticket: str | None = None,
    ) -> None:
        with session_scope(self.engine) as db:
            db.add(
                WorkerSessionRow(
                    session_id=session_id,
                    worker=self.worker,
                    job_id=job_id,
                    coordinator=coordinator,
                    span_start=start,
                    span_end=end,
                    opened_at=time.time(),
                    steps=0,
                    ticket=ticket,
                )
            )

    def session_known(self, session_id: str) -> bool:
        with session_scope(self.engine) as db:
            return db.get(WorkerSessionRow, (self.worker, session_id)) is not None

    def step_recorded(self, session_id: str, step_index: int, step_hash: bytes, positions: int = 1) -> None:
        """Durably record one step's hash and how many positions it computed (called for every step, before its
        output leaves: kept cheap, one INSERT in its own transaction without the ORM; once per step index)."""
        self.steps_recorded([(session_id, step_index, step_hash, positions)])

    def steps_recorded(self, steps: Sequence[tuple[str, int, bytes, int]]) -> None:
        """`step_recorded` for (session id, step index, hash, positions) of many steps (a batch) in one
        transaction: all or none are stored."""
        if not steps:
            return
        with self.engine.begin() as conn:
            conn.execute(
                self._insert_step,
                [
                    {
                        "worker": self.worker,
                        "session_id": session_id,
                        "step_index": step_index,
                        "step_hash": "0x" + step_hash.hex(),
                        "positions": positions,
                    }
                    for session_id, step_index, step_hash, positions in steps
                ],
            )

    def session_closed(self, session_id: str, reason: str, steps: int, commitment: bytes | None) -> None:
        with session_scope(self.engine) as db:
            row = db.get(WorkerSessionRow, (self.worker, session_id))
            if row is None or row.closed_at is not None:
                return
            row.closed_at = time.time()
            row.close_reason = reason
            row.steps = steps
            row.commitment = "0x" + commitment.hex() if commitment else None

    def close_lost_sessions(self) -> list[str]:
        """Mark sessions a crash left open as closed ('lost'); returns their ids."""
        with session_scope(self.engine) as db:
            rows = db.scalars(
                select(WorkerSessionRow).where(
                    WorkerSessionRow.worker == self.worker, WorkerSessionRow.closed_at.is_(None)
                )
            ).all()
            for row in rows:
                row.closed_at = time.time()
                row.close_reason = "lost"
                row.steps = len(self._steps(db, row.session_id))
            return [r.session_id for r in rows]

    # -- jobs and their commitments
    def job_work(self, job_id: int) -> JobWork | None:
        """What this worker computed for `job_id` over all its sessions, or None if it computed nothing."""
        with session_scope(self.engine) as db:
            sessions = db.scalars(
                select(WorkerSessionRow)
                .where(WorkerSessionRow.worker == self.worker, WorkerSessionRow.job_id == job_id)
                .order_by(WorkerSessionRow.opened_at, WorkerSessionRow.session_id)
            ).all()
            steps = [st for s in sessions for st in self._steps(db, s.session_id)]
            if not steps:
                return None
            tickets = [s.ticket for s in sessions if s.ticket]
            return JobWork(
                job_id,
                LayerSpan(sessions[-1].span_start, sessions[-1].span_end),
                [h for h, _ in steps],
                sum(p for _, p in steps),
                tickets[-1] if tickets else None,
            )

    def uncommitted_jobs(self) -> list[int]:
        """Jobs with steps in closed sessions and no signed commitment covering all of them (after a crash)."""
        with session_scope(self.engine) as db:
            jobs = db.scalars(
                select(WorkerSessionRow.job_id)
                .where(
                    WorkerSessionRow.worker == self.worker,
                    WorkerSessionRow.job_id > 0,
                    WorkerSessionRow.closed_at.is_not(None),
                )
                .distinct()
            ).all()
            out = []
            for job_id in sorted(j for j in jobs if j is not None):
                row = db.get(WorkerJobRow, (self.worker, job_id))
                total = db.scalar(
                    select(func.count()).where(
                        WorkerStepRow.worker == self.worker,
                        WorkerStepRow.session_id.in_(
                            select(WorkerSessionRow.session_id).where(
                                WorkerSessionRow.worker == self.worker, WorkerSessionRow.job_id == job_id
                            )
                        ),
                    )
                )
                if total and (row is None or (row.commit_status == SIGNED and row.steps < total)):
                    out.append(job_id)
            return out

    def save_commitment(self, signed: SignedCommitment, ticket: str | None, handed_at: float) -> None:
        """Store the job's signed commitment (durably, before it is handed out). A later one of the same job (a
        second session) replaces it while it is neither paid nor posted."""
        with session_scope(self.engine) as db:
            row = db.get(WorkerJobRow, (self.worker, signed.job_id))
            if row is not None and row.commit_status != SIGNED:
                return
            if row is None:
                row = WorkerJobRow(worker=self.worker, job_id=signed.job_id)
                db.add(row)
            row.span_start, row.span_end = signed.start, signed.end
            row.positions, row.steps = signed.positions, signed.steps
            row.commitment = "0x" + signed.root.hex()
            row.signature = signed.signature.hex()
            row.ticket = ticket
            row.handed_at = handed_at
            row.commit_status = SIGNED
            row.updated_at = time.time()

    def posts_awaiting_pay(self) -> list[WorkerJobRow]:
        """This worker's posted commitments not yet known paid (or replaced by the coordinator's settlement)."""
        with session_scope(self.engine) as db:
            return list(
                db.scalars(
                    select(WorkerJobRow)
                    .where(WorkerJobRow.worker == self.worker, WorkerJobRow.commit_status.in_(AWAITING_PAY))
                    .order_by(WorkerJobRow.job_id)
                ).all()
            )

    def commitments_due(self, before: float) -> list[WorkerJobRow]:
        """Signed commitments handed out before `before` and not yet known paid: the fallback posts them."""
        with session_scope(self.engine) as db:
            return list(
                db.scalars(
                    select(WorkerJobRow)
                    .where(
                        WorkerJobRow.worker == self.worker,
                        WorkerJobRow.commit_status == SIGNED,
                        WorkerJobRow.handed_at <= before,
                    )
                    .order_by(WorkerJobRow.job_id)
                ).all()
            )

    def job(self, job_id: int) -> WorkerJobRow | None:
        with session_scope(self.engine) as db:
            return db.get(WorkerJobRow, (self.worker, job_id))

    def commitment_done(
        self,
        job_id: int,
        status: str,
        tx_hash: str | None = None,
        note: str | None = None,
        db: Session | None = None,
    ) -> None:
        """Record what became of a job's commitment (in the caller's transaction `db` if given)."""
        if db is None:
            with session_scope(self.engine) as own:
                self.commitment_done(job_id, status, tx_hash, note, own)
            return
        row = db.get(WorkerJobRow, (self.worker, job_id))
        if row is None:
            return
        row.commit_status = status
        row.commit_tx = tx_hash or row.commit_tx
        row.note = note[:200] if note else None
        row.updated_at = time.time()

    def jobs(self) -> list[WorkerJobRow]:
        with session_scope(self.engine) as db:
            rows = db.scalars(
                select(WorkerJobRow).where(WorkerJobRow.worker == self.worker).order_by(WorkerJobRow.job_id)
            ).all()
            return list(rows)

    def _steps(self, db: Session, session_id: str) -> Sequence[tuple[bytes, int]]:
        rows = db.execute(
            select(WorkerStepRow.step_hash, WorkerStepRow.positions)
            .where(WorkerStepRow.worker == self.worker, WorkerStepRow.session_id == session_id)
            .order_by(WorkerStepRow.step_index)
        ).all()
        return [(bytes.fromhex(h[2:]), int(p or 1)) for h, p in rows]
