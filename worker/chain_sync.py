"""Following the chain for this worker: jobs routed to it, and exactly one commitment posted per job served.

`ChainSync` runs an `EventWatcher` (durable cursor) in a thread. `JobRouted` and `HopAdded` naming this
worker are stored in the worker's database in the watcher's own transaction. After each poll, and when a
session closes, it posts `postCommitment(jobId, merkle_root(step hashes))` for every job that is both
routed here and has all its sessions closed. Before sending it reads the job's hops on chain, so a restart
(even after a crash between the transaction and the database update) never posts twice.

A job routed here that this worker never served (no step computed, no session open) expires instead of
staying pending for ever: as soon as it ends on chain (`JobFinalized`/`JobCancelled`/`JobFailed`, in the
watcher's transaction), or, checked every `expire_interval_s`, once the chain's clock is past its deadline
(or the chain says it ended). It is then marked skipped with a note saying why.

`CoordinatorSet` (a coordinator approved or revoked) goes to `on_coordinator_set(address, approved)`: the
server drops its cached approval, so a revoked coordinator's next ticket is refused within one poll.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shardnet.chain.errors import ChainError, ContractRevert
from shardnet.chain.registry import JobStatus, Registry
from shardnet.chain.tx import DecodedEvent, rpc
from shardnet.chain.watcher import EventHandler, EventWatcher
from shardnet.db import session_scope
from shardnet.retry import Backoff, retry_until_stopped
from shardnet.wire.commitment import merkle_root
from worker.state import (
    ON_CHAIN,
    PENDING,
    POSTED,
    SKIPPED,
    WorkerJobRow,
    WorkerSessionRow,
    WorkerState,
    WorkerStepRow,
)

#: Events that end a job on chain: a commitment can no longer be posted for it.
JOB_END_EVENTS = {
    "JobFinalized": JobStatus.Finalized,
    "JobCancelled": JobStatus.Cancelled,
    "JobFailed": JobStatus.Failed,
}

log = logging.getLogger(__name__)


class ChainSync:
    """The worker's chain follower and commitment poster (one thread sends all its transactions)."""

    def __init__(
        self,
        registry: Registry,
        state: WorkerState,
        *,
        poll_interval_s: float = 1.0,
        confirmations: int = 0,
        start_block: int | None = None,
        expire_interval_s: float = 30.0,
        on_coordinator_set: Callable[[str, bool], None] | None = None,
    ) -> None:
        assert registry.account is not None, "ChainSync sends transactions: give the registry an account"
        self.registry = registry
        self.state = state
        self.me = registry.account.address
        self.poll_interval_s = poll_interval_s
        self.expire_interval_s = expire_interval_s
        self._next_expiry = 0.0  # time.monotonic() of the next deadline check
        self._deadlines: dict[int, int] = {}  # job id -> deadline (unix time on the chain's clock), read once
        handlers: dict[str, EventHandler] = {"JobRouted": self._on_job_routed, "HopAdded": self._on_hop_added}
        handlers |= {name: self._on_job_ended for name in JOB_END_EVENTS}
        self._on_coordinator_set = on_coordinator_set
        if on_coordinator_set is not None:
            handlers["CoordinatorSet"] = self._coordinator_set
        self.watcher = EventWatcher(
            registry,
            state.engine,
            f"worker:{self.me}",
            handlers,
            confirmations=confirmations,
            poll_interval=poll_interval_s,
            start_block=start_block,
        )
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # -- event handlers (inside the watcher's transaction)
    def _on_job_routed(self, event: DecodedEvent, db: Session) -> None:
        args = event.args
        for hop_index, node in enumerate(args["nodes"]):
            if node == self.me:
                self._record(
                    db,
                    int(args["jobId"]),
                    hop_index,
                    int(args["starts"][hop_index]),
                    int(args["ends"][hop_index]),
                    event.block_number,
                )

    def _on_hop_added(self, event: DecodedEvent, db: Session) -> None:
        args = event.args
        if args["node"] == self.me:
            self._record(
                db,
                int(args["jobId"]),
                int(args["hopIndex"]),
                int(args["start"]),
                int(args["end"]),
                event.block_number,
            )

    def _record(self, db: Session, job_id: int, hop_index: int, start: int, end: int, block: int) -> None:
        if self.state.add_route(db, job_id, hop_index, start, end, block):
            log.info("job %d routed to this worker (hop %d, layers %d:%d)", job_id, hop_index, start, end)

    def _coordinator_set(self, event: DecodedEvent, _db: Session) -> None:
        """A coordinator was approved or revoked: the server's cached answer for it must go at once."""
        assert self._on_coordinator_set is not None
        address, approved = str(event.args["coordinator"]), bool(event.args["approved"])
        log.info("coordinator %s %s on chain", address, "approved" if approved else "revoked")
        self._on_coordinator_set(address, approved)

    def _on_job_ended(self, event: DecodedEvent, db: Session) -> None:
        job_id = int(event.args["jobId"])
        status = JOB_END_EVENTS[event.name]
        if self._unserved(db, job_id):
            self._expire(db, job_id, f"job {status.name.lower()} on chain; never served here")

    # -- expiry of jobs routed here but never served
    def _unserved(self, db: Session, job_id: int) -> bool:
        """Whether `job_id` is pending here with no session open and no step computed for it."""
        row = db.get(WorkerJobRow, (self.state.worker, job_id))
        if row is None or row.commit_status != PENDING:
            return False
        sessions = select(WorkerSessionRow.session_id).where(
            WorkerSessionRow.worker == self.state.worker, WorkerSessionRow.job_id == job_id
        )
        open_sessions = db.scalar(
            select(func.count()).select_from(sessions.where(WorkerSessionRow.closed_at.is_(None)).subquery())
        )
        steps = db.scalar(
            select(func.count()).where(
                WorkerStepRow.worker == self.state.worker, WorkerStepRow.session_id.in_(sessions)
            )
        )
        return not open_sessions and not steps

    def _expire(self, db: Session, job_id: int, note: str) -> None:
        row = db.get(WorkerJobRow, (self.state.worker, job_id))
        assert row is not None
        row.commit_status = SKIPPED
        row.note = note[:200]
        row.updated_at = time.time()
        self._deadlines.pop(job_id, None)
        log.info("job %d: %s; no commitment is due", job_id, note)

    def expire_unserved_jobs(self) -> int:
        """Expire the jobs routed here, never served, that ended on chain or are past their deadline.

        Reads each such job's deadline once (`getJob`) and the chain's clock once per call; returns how
        many jobs expired. Raises ChainError when the chain cannot be read (they are checked again later).
        """
        with session_scope(self.state.engine) as db:
            pending = db.scalars(
                select(WorkerJobRow.job_id).where(
                    WorkerJobRow.worker == self.state.worker, WorkerJobRow.commit_status == PENDING
                )
            ).all()
            unserved = [job_id for job_id in pending if self._unserved(db, job_id)]
        self._deadlines = {j: d for j, d in self._deadlines.items() if j in unserved}  # served ones leave
        if not unserved:
            return 0
        now = int(rpc(self.registry.w3, "eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
        expired: dict[int, str] = {}
        for job_id in unserved:
            if job_id not in self._deadlines:
                job = self.registry.get_job(job_id)
                if job.status not in (JobStatus.Submitted, JobStatus.Routed):
                    expired[job_id] = f"job {job.status.name.lower()} on chain; never served here"
                    continue
                self._deadlines[job_id] = job.deadline
            if now > self._deadlines[job_id]:
                expired[job_id] = f"past its deadline {self._deadlines[job_id]} (chain time {now}); never served here"
        done = 0
        with session_scope(self.state.engine) as db:
            for job_id, note in expired.items():
                if self._unserved(db, job_id):  # a session may have opened meanwhile
                    self._expire(db, job_id, note)
                    done += 1
        return done

    # -- commitments
    def post_pending_commitments(self) -> int:
        """Post the commitment of every job that is ready; returns how many were sent."""
        sent = 0
        for job in self.state.jobs_to_commit():
            root = merkle_root(job.step_hashes)
            try:
                hops = [h for h in self.registry.get_hops(job.job_id) if h.node == self.me]
                if any(h.committed for h in hops):
                    log.info("job %d: commitment already on chain", job.job_id)
                    self.state.commitment_done(
                        job.job_id, ON_CHAIN, next(h.commitment for h in hops if h.committed)
                    )
                    continue
                status = self.registry.get_job(job.job_id).status
                if status != JobStatus.Routed:
                    log.warning(
                        "job %d is %s: its commitment can no longer be posted", job.job_id, status.name
                    )
                    self.state.commitment_done(job.job_id, SKIPPED, root, note=f"job {status.name.lower()}")
                    continue
                tx = self.registry.post_commitment(job.job_id, root)
            except ContractRevert as exc:
                if exc.error == "ShardRegistryAlreadyCommitted":
                    self.state.commitment_done(job.job_id, ON_CHAIN, root)
                    continue
                log.error("job %d: postCommitment reverted: %s", job.job_id, exc)
                self.state.commitment_done(job.job_id, SKIPPED, root, note=str(exc))
                continue
            except ChainError as exc:  # node unreachable: try again on the next round
                log.warning("job %d: cannot post the commitment now (%s); will retry", job.job_id, exc)
                break
            self.state.commitment_done(job.job_id, POSTED, root, tx.tx_hash)
            log.info(
                "job %d: posted commitment 0x%s over %d steps (tx %s)",
                job.job_id,
                root.hex(),
                len(job.step_hashes),
                tx.tx_hash,
            )
            sent += 1
        return sent

    # -- thread
    def wake(self) -> None:
        """Ask for a commitment round soon (a session just closed)."""
        self._wake.set()

    def sync_once(self) -> None:
        """Catch up with the chain, post what is ready, and (every `expire_interval_s`) expire unserved jobs."""
        self.watcher.catch_up()
        self.post_pending_commitments()
        if time.monotonic() >= self._next_expiry:
            self.expire_unserved_jobs()
            self._next_expiry = time.monotonic() + self.expire_interval_s

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="worker-chain", daemon=True)
        self._thread.start()

    def stop(self, final_round: bool = True) -> None:
        """Stop the thread; with `final_round`, catch up and post what is ready one last time."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if final_round:
            try:
                self.sync_once()
            except Exception:
                log.exception("final commitment round failed; the next start will post what is missing")

    def _run(self) -> None:
        # keep following the chain through failures (the watcher rolled a failed range back)
        backoff = Backoff(first_s=self.poll_interval_s, max_s=max(30.0, self.poll_interval_s))
        while not self._stop.is_set():
            if retry_until_stopped(self._sync_round, stop=self._stop, backoff=backoff, what="chain sync") is None:
                break
            self._wake.wait(self.poll_interval_s)
            self._wake.clear()

    def _sync_round(self) -> bool:
        self.sync_once()
        return True
