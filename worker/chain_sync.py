"""Following the chain for this worker (protocol v2): is each job it served paid, and if not, post it itself.

The worker signs its commitment for a job when the coordinator closes a session of it (worker/job_commitment.py, called by worker/server.py) and
stores it before handing it out. `ChainSync` runs an `EventWatcher` (durable cursor) in a thread and, in the
watcher's transaction, records what the chain did with each such job: `JobSettled` with this worker's hop paid
(read from the settlement's calldata and `paidHops`) -> settled; `CommitmentPosted` by this worker -> on chain;
`JobSettled` without it, `JobFailed`, `JobCancelled` -> skipped (the job is closed: nothing can pay it any more).

Fallback (committed work is paid): a commitment still unpaid `settle_window_s` after it was handed out is posted
by the worker itself with `postCommitment` and the coordinator's ticket, while the job is open and before its
deadline. A post is provisional for the registry's dispute window (the coordinator's settlement of the same hop
replaces it); after that this worker collects it (`collectPosted`). At start, jobs whose sessions a crash cut are signed from the stored step hashes and are due at once
(the coordinator never got them). A restart resumes from the cursor and the database, so nothing is posted twice.

`CoordinatorSet` (a coordinator approved or revoked) goes to `on_coordinator_set(address, approved)`: the
server drops its cached approval, so a revoked coordinator's next ticket is refused within one poll.
`JobSubmitted` goes to `on_job_submitted(job_id, coordinator)`: the server's job check then needs no chain read.
New blocks pushed over `ws_url` (`shardnet.chain.heads`) wake this follower at once; it polls as the fallback.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.orm import Session

from shardnet.chain.commitments import SignedCommitment, sign_commitment, sign_verdict
from shardnet.chain.errors import ChainError, ContractRevert
from shardnet.chain.heads import HeadSubscription
from shardnet.chain.registry import JobStatus, Registry
from shardnet.chain.tx import DecodedEvent
from shardnet.chain.watcher import EventHandler, EventWatcher
from shardnet.retry import Backoff, retry_until_stopped
from shardnet.span import LayerSpan
from shardnet.wire.eip712 import CompactSignature, Domain
from shardnet.wire.tickets import ticket_proof
from worker.state import ON_CHAIN, PAID, POSTED, SETTLED, SIGNED, SKIPPED, WorkerJobRow, WorkerState

#: States of a posted commitment in the registry (postedCommitment): provisional, paid, voided by the settlement.
POST_PENDING, POST_PAID, POST_VOIDED = 1, 2, 3

#: Events that close a job on chain without paying this worker's hop (JobSettled is checked hop by hop).
JOB_END_EVENTS = {"JobCancelled": JobStatus.Cancelled, "JobFailed": JobStatus.Failed}

log = logging.getLogger(__name__)


class ChainSync:
    """The worker's chain follower, commitment signer and fallback poster (one thread sends all its transactions)."""

    def __init__(
        self,
        registry: Registry,
        state: WorkerState,
        *,
        poll_interval_s: float = 1.0,
        confirmations: int = 0,
        start_block: int | None = None,
        settle_window_s: float = 60.0,
        domain: Domain | None = None,
        on_coordinator_set: Callable[[str, bool], None] | None = None,
        ws_url: str | None = None,
        on_job_submitted: Callable[[int, str], None] | None = None,
    ) -> None:
        assert registry.account is not None, (
            "ChainSync signs and sends transactions: give the registry an account"
        )
        self.registry = registry
        self.state = state
        self.account = registry.account
        self.me = registry.account.address
        self.poll_interval_s = poll_interval_s
        self.settle_window_s = settle_window_s
        self._domain = domain
        handlers: dict[str, EventHandler] = {
            "JobSettled": self._on_job_settled,
            "CommitmentPosted": self._on_commitment_posted,
        }
        handlers |= {name: self._on_job_ended for name in JOB_END_EVENTS}
        self._on_coordinator_set = on_coordinator_set
        if on_coordinator_set is not None:
            handlers["CoordinatorSet"] = self._coordinator_set
        self._on_job_submitted = on_job_submitted
        if on_job_submitted is not None:
            handlers["JobSubmitted"] = self._job_submitted
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
        self.ws_url = ws_url  # new blocks pushed over it wake the follower at once (polling is the fallback)
        self.heads: HeadSubscription | None = None

    @property
    def domain(self) -> Domain:
        """The registry's EIP-712 domain (read once)."""
        if self._domain is None:
            self._domain = self.registry.domain()
        return self._domain

    def sign(self, job_id: int, span: LayerSpan, positions: int, steps: int, root: bytes) -> SignedCommitment:
        """This worker's EIP-712 signed commitment (the server's `CommitmentSigner`)."""
        return sign_commitment(
            self.account, self.domain, job_id=job_id, span=span, positions=positions, steps=steps, root=root
        )

    def sign_verdict(
        self, job_id: int, accused: str, root: bytes, leaf_index: int, leaf: bytes
    ) -> CompactSignature:
        """This worker's EIP-712 guilty verdict on another node's leaf (the server's `VerdictSigner`)."""
        return sign_verdict(
            self.account,
            self.domain,
            job_id=job_id,
            accused=accused,
            root=root,
            leaf_index=leaf_index,
            leaf=leaf,
        )

    # -- event handlers (inside the watcher's transaction)
    def _mine(self, db: Session, job_id: int) -> WorkerJobRow | None:
        row = db.get(WorkerJobRow, (self.state.worker, job_id))
        return row if row is not None and row.commit_status == SIGNED else None

    def _on_job_settled(self, event: DecodedEvent, db: Session) -> None:
        job_id = int(event.args["jobId"])
        row = self._mine(db, job_id)
        if row is None:
            return
        settlements = [s for s in self.registry.settlements_in(event.tx_hash) if s.job_id == job_id]
        paid_bits = int(event.args["paidHops"])
        hops = settlements[0].sorted_hops() if settlements else []
        mine = [i for i, h in enumerate(hops) if h.node.lower() == self.me.lower()]
        if any(paid_bits >> i & 1 for i in mine):
            self.state.commitment_done(job_id, SETTLED, event.tx_hash, db=db)
            log.info("job %d: paid in the coordinator's settlement (tx %s)", job_id, event.tx_hash)
        else:
            note = (
                "settled with this worker's hop but not paid (stake, jail or escrow)"
                if mine
                else "settled without this worker's commitment: the coordinator left it out"
            )
            self.state.commitment_done(job_id, SKIPPED, event.tx_hash, note=note, db=db)
            log.warning("job %d: %s", job_id, note)

    def _on_commitment_posted(self, event: DecodedEvent, db: Session) -> None:
        if str(event.args["node"]).lower() != self.me.lower():
            return
        job_id = int(event.args["jobId"])
        if self._mine(db, job_id) is not None:
            self.state.commitment_done(job_id, ON_CHAIN, event.tx_hash, db=db)

    def _coordinator_set(self, event: DecodedEvent, _db: Session) -> None:
        """A coordinator was approved or revoked: the server's cached answer for it must go at once."""
        assert self._on_coordinator_set is not None
        address, approved = str(event.args["coordinator"]), bool(event.args["approved"])
        log.info("coordinator %s %s on chain", address, "approved" if approved else "revoked")
        self._on_coordinator_set(address, approved)

    def _job_submitted(self, event: DecodedEvent, _db: Session) -> None:
        assert self._on_job_submitted is not None
        self._on_job_submitted(int(event.args["jobId"]), str(event.args["coordinator"]))

    def _on_job_ended(self, event: DecodedEvent, db: Session) -> None:
        job_id = int(event.args["jobId"])
        if self._mine(db, job_id) is not None:
            status = JOB_END_EVENTS[event.name]
            self.state.commitment_done(
                job_id, SKIPPED, note=f"job {status.name.lower()} on chain before it was paid", db=db
            )

    # -- signing what a crash left unsigned
    def sign_uncommitted(self) -> int:
        """Sign (and store, due at once) the commitment of every job whose served steps no commitment covers."""
        done = 0
        for job_id in self.state.uncommitted_jobs():
            work = self.state.job_work(job_id)
            if work is None:
                continue
            signed = self.sign(job_id, work.span, work.billable_positions, len(work.step_hashes), work.root)
            self.state.save_commitment(signed, work.ticket, 0.0)  # never handed out: post it without waiting
            log.info(
                "job %d: signed its commitment over %d steps left by an earlier run", job_id, signed.steps
            )
            done += 1
        return done

    # -- the fallback
    def post_due_commitments(self, now: float | None = None) -> int:
        """Post every commitment still unpaid `settle_window_s` after it was handed out; returns how many were sent."""
        sent = 0
        before = (time.time() if now is None else now) - self.settle_window_s
        for row in self.state.commitments_due(before):
            try:
                sent += self._post(row)
            except ChainError as exc:  # node unreachable: try again on the next round
                log.warning("job %d: cannot post the commitment now (%s); will retry", row.job_id, exc)
                break
        return sent

    def _post(self, row: WorkerJobRow) -> int:
        job_id = row.job_id
        status, _, _ = self.registry.job_state(job_id)
        if status == JobStatus.NoJob:
            self.state.commitment_done(job_id, SKIPPED, note=f"no job {job_id} on chain")
            return 0
        if status != JobStatus.Open:  # closed before this commitment could be paid (its event came first)
            self.state.commitment_done(
                job_id, SKIPPED, note=f"job {status.name.lower()} on chain before it was paid"
            )
            return 0
        if row.ticket is None:
            self.state.commitment_done(
                job_id, SKIPPED, note="no coordinator ticket stored: cannot prove the job"
            )
            return 0
        try:
            tx = self.registry.post_commitment(
                (job_id, self.registry.job_record(job_id)),
                row.signed(self.me),
                ticket_proof(json.loads(row.ticket)),
            )
        except ContractRevert as exc:
            if exc.error == "ShardRegistryAlreadyCommitted":
                self.state.commitment_done(job_id, ON_CHAIN)
            else:
                log.error("job %d: postCommitment reverted: %s", job_id, exc)
                self.state.commitment_done(job_id, SKIPPED, note=str(exc))
            return 0
        self.state.commitment_done(job_id, POSTED, tx.tx_hash)
        log.info(
            "job %d: posted its own commitment 0x%s over %d steps (tx %s)",
            job_id,
            row.commitment[2:],
            row.steps,
            tx.tx_hash,
        )
        return 1

    def collect_due_posts(self) -> int:
        """Collect this worker's posted commitments whose provisional window is over; returns how many were paid."""
        paid = 0
        for row in self.state.posts_awaiting_pay():
            span = LayerSpan(row.span_start, row.span_end)
            try:
                _, payable_at, state = self.registry.posted_commitment(row.job_id, self.me, span)
                if state == POST_VOIDED:
                    note = "the coordinator's settlement paid this hop and replaced the post"
                    self.state.commitment_done(row.job_id, SETTLED, note=note)
                elif state == POST_PAID:
                    self.state.commitment_done(row.job_id, PAID)
                elif (
                    state == POST_PENDING and max(time.time(), self.registry.latest_timestamp()) >= payable_at
                ):
                    tx = self.registry.collect_posted(row.job_id, self.me, span)
                    self.state.commitment_done(row.job_id, PAID, tx.tx_hash)
                    log.info("job %d: collected its posted commitment (tx %s)", row.job_id, tx.tx_hash)
                    paid += 1
            except ChainError as exc:  # node unreachable or a race: try again on the next round
                log.warning("job %d: cannot collect the posted commitment now (%s)", row.job_id, exc)
                break
        return paid

    # -- thread
    def wake(self) -> None:
        """Ask for a round soon (a session just closed)."""
        self._wake.set()

    def sync_once(self) -> None:
        """Catch up with the chain, then post the commitments whose settlement window passed."""
        self.watcher.catch_up()
        self.post_due_commitments()
        self.collect_due_posts()

    def start(self) -> None:
        self.sign_uncommitted()
        self._thread = threading.Thread(target=self._run, name="worker-chain", daemon=True)
        self._thread.start()
        if self.ws_url is not None:
            self.heads = HeadSubscription(
                self.ws_url, lambda _n: self._wake.set(), name="worker chain"
            ).start()

    def stop(self, final_round: bool = True) -> None:
        """Stop the thread; with `final_round`, catch up and post what is due one last time."""
        self._stop.set()
        self._wake.set()
        if self.heads is not None:
            self.heads.stop()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if final_round:
            try:
                self.sync_once()
            except Exception:
                log.exception("final commitment round failed; the next start will post what is due")

    def _run(self) -> None:
        # keep following the chain through failures (the watcher rolled a failed range back)
        backoff = Backoff(first_s=self.poll_interval_s, max_s=max(30.0, self.poll_interval_s))
        while not self._stop.is_set():
            if (
                retry_until_stopped(self._sync_round, stop=self._stop, backoff=backoff, what="chain sync")
                is None
            ):
                break
            self._wake.wait(self.poll_interval_s)
            self._wake.clear()

    def _sync_round(self) -> bool:
        self.sync_once()
        return True
