"""The worker's durable state (SQLAlchemy, through `shardnet.db`): sessions, step hashes, routed jobs, commitments.

What survives a crash: every step hash as it is produced, every session's open/close, every job the
chain routed to this worker and every commitment posted with its transaction hash. On restart, sessions
left open by the crash are closed as "lost" (their caches died with the process) and their jobs are
committed with the steps that were served.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import BigInteger, Float, Integer, String, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from shardnet.db import Base, session_scope

# commit_status values of a job
PENDING = "pending"  # routed here, commitment not yet posted
POSTED = "posted"  # this worker sent postCommitment (commit_tx)
ON_CHAIN = "on_chain"  # found already on chain (e.g. posted before a crash)
SKIPPED = "skipped"  # cannot be posted any more (job finalized/cancelled/failed); see note


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


class WorkerStepRow(Base):
    __tablename__ = "worker_step_hashes"

    worker: Mapped[str] = mapped_column(String(42), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    step_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    step_hash: Mapped[str] = mapped_column(String(66))


class WorkerJobRow(Base):
    __tablename__ = "worker_jobs"

    worker: Mapped[str] = mapped_column(String(42), primary_key=True)
    job_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hop_index: Mapped[int] = mapped_column(Integer)
    span_start: Mapped[int] = mapped_column(Integer)
    span_end: Mapped[int] = mapped_column(Integer)
    routed_block: Mapped[int] = mapped_column(BigInteger)
    commit_status: Mapped[str] = mapped_column(String(16), default=PENDING)
    commitment: Mapped[str | None] = mapped_column(String(66), nullable=True)
    commit_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)
    note: Mapped[str | None] = mapped_column(String(200), nullable=True)
    updated_at: Mapped[float] = mapped_column(Float)


@dataclass(frozen=True)
class JobToCommit:
    job_id: int
    step_hashes: list[bytes]


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
        self, session_id: str, job_id: int | None, coordinator: str, start: int, end: int
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
                )
            )

    def session_known(self, session_id: str) -> bool:
        with session_scope(self.engine) as db:
            return db.get(WorkerSessionRow, (self.worker, session_id)) is not None

    def step_recorded(self, session_id: str, step_index: int, step_hash: bytes) -> None:
        """Durably record one step's hash (called for every step, before its output leaves: kept cheap,
        one INSERT in its own transaction without the ORM; a step index is recorded once per session)."""
        with self.engine.begin() as conn:
            conn.execute(
                self._insert_step,
                {"worker": self.worker, "session_id": session_id, "step_index": step_index,
                 "step_hash": "0x" + step_hash.hex()},
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
                row.steps = len(self._hashes(db, row.session_id))
            return [r.session_id for r in rows]

    # -- jobs
    def job_routed(self, job_id: int, hop_index: int, start: int, end: int, block: int) -> bool:
        """Record that the chain routed `job_id` to this worker; False if already known (idempotent)."""
        with session_scope(self.engine) as db:
            return self.add_route(db, job_id, hop_index, start, end, block)

    def add_route(self, db: Session, job_id: int, hop_index: int, start: int, end: int, block: int) -> bool:
        """`job_routed` inside the caller's transaction (the event watcher's). One row per job: a second
        hop of the same job adds nothing, as the worker posts one commitment per job."""
        if db.get(WorkerJobRow, (self.worker, job_id)) is not None:
            return False
        db.add(
            WorkerJobRow(
                worker=self.worker,
                job_id=job_id,
                hop_index=hop_index,
                span_start=start,
                span_end=end,
                routed_block=block,
                commit_status=PENDING,
                updated_at=time.time(),
            )
        )
        return True

    def jobs_to_commit(self) -> list[JobToCommit]:
        """Jobs routed here, not committed, with at least one session and every session of theirs closed."""
        out: list[JobToCommit] = []
        with session_scope(self.engine) as db:
            jobs = db.scalars(
                select(WorkerJobRow)
                .where(WorkerJobRow.worker == self.worker, WorkerJobRow.commit_status == PENDING)
                .order_by(WorkerJobRow.job_id)
            ).all()
            for job in jobs:
                sessions = db.scalars(
                    select(WorkerSessionRow)
                    .where(WorkerSessionRow.worker == self.worker, WorkerSessionRow.job_id == job.job_id)
                    .order_by(WorkerSessionRow.opened_at, WorkerSessionRow.session_id)
                ).all()
                if not sessions or any(s.closed_at is None for s in sessions):
                    continue
                hashes = [h for s in sessions for h in self._hashes(db, s.session_id)]
                if hashes:
                    out.append(JobToCommit(job.job_id, hashes))
        return out

    def commitment_done(
        self,
        job_id: int,
        status: str,
        commitment: bytes | None,
        tx_hash: str | None = None,
        note: str | None = None,
    ) -> None:
        with session_scope(self.engine) as db:
            row = db.get(WorkerJobRow, (self.worker, job_id))
            if row is None:
                return
            row.commit_status = status
            row.commitment = "0x" + commitment.hex() if commitment else None
            row.commit_tx = tx_hash
            row.note = note[:200] if note else None
            row.updated_at = time.time()

    def jobs(self) -> list[WorkerJobRow]:
        with session_scope(self.engine) as db:
            rows = db.scalars(
                select(WorkerJobRow).where(WorkerJobRow.worker == self.worker).order_by(WorkerJobRow.job_id)
            ).all()
            return list(rows)

    def _hashes(self, db: Session, session_id: str) -> Sequence[bytes]:
        rows = db.scalars(
            select(WorkerStepRow.step_hash)
            .where(WorkerStepRow.worker == self.worker, WorkerStepRow.session_id == session_id)
            .order_by(WorkerStepRow.step_index)
        ).all()
        return [bytes.fromhex(h[2:]) for h in rows]
