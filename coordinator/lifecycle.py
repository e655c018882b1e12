"""A job's life in the coordinator: its states, the only legal moves between them, and their persistence.

Every change of a job's status goes through `JobLifecycle.advance` (or `on_submitted` / `on_cancelled`
for the chain's events), which refuses an illegal move (`IllegalTransition`) and commits the new state,
with the facts it needs, to the database *before* the chain transaction it leads to is sent. The
transaction's name is kept in `JobRow.chain_pending` until it is confirmed, so a restarted coordinator
knows exactly what it was doing (`recovery_action`) and repeats it idempotently:

    JobSubmitted event ──► submitted ──► prompt ◄── prompt handed over (POST /v1/jobs/{id}/prompt, or an
    (naming this coordinator)              │        OpenAI request paid by the coordinator itself)
                              route chosen │ (saved; protocol v2 sends nothing on chain for it)
                                           ▼
                                        routed ──── sessions opening ───► generating
                                                                               │ output known and the workers'
                                                                               ▼ signed commitments checked
                            finalized ◄──── settleJobs mined ───────────── settling   (write-ahead: settleJobs)
    any open state ── error, stop, or restart mid-generation ──► failed   (write-ahead: failJob; the client gets
                                                                           back what posted commitments left)
    any open state ── JobCancelled event (client, after the deadline) ──► cancelled
"""

from __future__ import annotations

import enum
import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from coordinator.state import CoordinatorState, JobRow
from shardnet.chain.registry import JobInfo, JobStatus
from shardnet.db import session_scope
from shardnet.errors import ShardnetError

log = logging.getLogger(__name__)


class JobState(enum.StrEnum):
    SUBMITTED = "submitted"  # known from the chain's JobSubmitted; its prompt is not here yet
    PROMPT = "prompt"  # prompt held (hash checked), waiting for a route
    ROUTED = "routed"  # route chosen and saved (nothing on chain)
    GENERATING = "generating"  # tokens are being generated through the workers
    SETTLING = "settling"  # output hash and the workers' checked signed commitments saved; settleJobs next
    FINALIZED = "finalized"  # settleJobs mined: workers, coordinator and client paid
    FAILED = "failed"  # failJob (the client gets back what posted commitments did not take)
    CANCELLED = "cancelled"  # the client cancelled it on chain after its deadline


S = JobState
#: The states a job may move to from each state; the states a new job row may start in are under None.
TRANSITIONS: dict[JobState | None, frozenset[JobState]] = {
    None: frozenset({S.SUBMITTED, S.PROMPT}),
    S.SUBMITTED: frozenset({S.PROMPT, S.FAILED, S.CANCELLED}),
    S.PROMPT: frozenset({S.ROUTED, S.FAILED, S.CANCELLED}),
    S.ROUTED: frozenset({S.GENERATING, S.PROMPT, S.FAILED, S.CANCELLED}),  # -> PROMPT: no session opened yet
    S.GENERATING: frozenset({S.SETTLING, S.FAILED, S.CANCELLED}),
    S.SETTLING: frozenset({S.FINALIZED, S.FAILED, S.CANCELLED}),
    S.FINALIZED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}
TERMINAL = frozenset({S.FINALIZED, S.FAILED, S.CANCELLED})
OUTPUT_KNOWN = frozenset({S.SETTLING, S.FINALIZED})

#: The chain transaction each state leads to (kept in `chain_pending` until it is confirmed).
WRITE_AHEAD = {S.SETTLING: "settleJobs", S.FAILED: "failJob"}


class IllegalTransition(ShardnetError):
    """A job was asked to move between two states that are not connected (a bug, or a stale request)."""


class Recovery(enum.Enum):
    """What a restarted coordinator does with a job it finds in the database (see `recovery_action`)."""

    NOTHING = "nothing"  # nothing to do (waiting for its prompt, or already settled)
    RUN = "run"  # prompt held and the job is still open on chain: run it
    REROUTE = "reroute"  # a route was chosen but no session opened: back to `prompt`, then run it
    FAIL = "fail"  # its worker sessions died with the old process: fail it on chain (refund)
    SETTLE = "settle"  # the output was generated and saved: finish the settlement (pay the workers)
    RESEND_FAIL = "resend_fail"  # it was failed here but failJob may not have been mined: send it again
    MIRROR = "mirror"  # the chain already decided (Settled / Failed / Cancelled): take its verdict


def recovery_action(state: JobState, chain: JobStatus, pending: str | None) -> Recovery:
    """The pure decision a restart makes for one job, from its saved state and its status on chain."""
    open_on_chain = chain == JobStatus.Open
    if state in TERMINAL:
        return Recovery.RESEND_FAIL if state == S.FAILED and pending and open_on_chain else Recovery.NOTHING
    if not open_on_chain:
        return Recovery.MIRROR
    if state == S.SUBMITTED:
        return Recovery.NOTHING
    if state == S.PROMPT:
        return Recovery.RUN
    if state == S.ROUTED:
        return Recovery.REROUTE
    if state == S.SETTLING:
        return Recovery.SETTLE
    return Recovery.FAIL


def mirrored_state(chain: JobStatus) -> JobState:
    """The local state that matches a job the chain has closed."""
    return {JobStatus.Settled: S.FINALIZED, JobStatus.Cancelled: S.CANCELLED}.get(chain, S.FAILED)


def _check(job_id: int, current: str | None, target: JobState) -> None:
    now = None if current is None else JobState(current)
    if target not in TRANSITIONS[now]:
        allowed = ", ".join(sorted(TRANSITIONS[now])) or "nothing (it is over)"
        raise IllegalTransition(
            f"job {job_id} cannot go from {now or 'unknown'} to {target}; from "
            f"{now or 'unknown'} it may go to {allowed}"
        )


class JobLifecycle:
    """The one writer of job states; every method is one short database transaction."""

    def __init__(self, state: CoordinatorState) -> None:
        self.state = state

    @contextmanager
    def _row(self, job_id: int) -> Iterator[tuple[Session, JobRow | None]]:
        with session_scope(self.state.engine) as s:
            yield s, s.get(JobRow, job_id)

    def _move(
        self, s: Session, row: JobRow | None, job_id: int, target: JobState, fields: dict[str, Any]
    ) -> JobRow:
        _check(job_id, None if row is None else row.status, target)
        if row is None:
            row = JobRow(job_id=job_id)
            s.add(row)
        for key, value in fields.items():
            setattr(row, key, value)
        row.status = target.value
        row.chain_pending = WRITE_AHEAD.get(target)
        row.updated_at = time.time()
        log.debug("job %d -> %s", job_id, target)
        return row

    def advance(self, job_id: int, target: JobState, **fields: Any) -> JobRow:
        """Move job `job_id` to `target`, setting `fields` with it; raises IllegalTransition."""
        with self._row(job_id) as (s, row):
            return self._move(s, row, job_id, target, fields)

    def confirmed(self, job_id: int) -> None:
        """The chain transaction the job's state led to was mined (or is no longer needed)."""
        self.state.set_job_fields(job_id, chain_pending=None)

    # -- entering: the chain event and the prompt meet here, in either order
    def on_submitted(self, s: Session, job_id: int, facts: dict[str, Any]) -> None:
        """A JobSubmitted event (in the watcher's transaction): record the job, or complete a row the prompt made."""
        row = s.get(JobRow, job_id)
        if row is None:
            self._move(s, None, job_id, S.SUBMITTED, facts)
        else:  # the prompt (or our own API request) came first, or the watcher replays a range
            for key, value in facts.items():
                setattr(row, key, value)

    def on_cancelled(self, s: Session, job_id: int) -> None:
        """A JobCancelled event (in the watcher's transaction)."""
        row = s.get(JobRow, job_id)
        if row is not None and JobState(row.status) not in TERMINAL:
            self._move(s, row, job_id, S.CANCELLED, {"error": "cancelled by its client after the deadline"})

    def take_prompt(
        self, job: JobInfo, prompt: str, sampling: dict[str, Any], *, source: str = "chain"
    ) -> JobRow:
        """The prompt of `job` (its hash already checked against the chain): the job is ready to be routed.

        The chain's JobSubmitted (pushed within milliseconds of the block) may insert the job's row in the
        watcher's transaction at the same moment: the loser of that race (a duplicate key, on PostgreSQL) is tried
        once more and then finds the row (a watcher that lost rolls its range back and replays it)."""
        try:
            return self._take_prompt(job, prompt, sampling, source)
        except IntegrityError:
            log.info("job %d: its JobSubmitted was recorded meanwhile; taking the prompt again", job.job_id)
            return self._take_prompt(job, prompt, sampling, source)

    def _take_prompt(self, job: JobInfo, prompt: str, sampling: dict[str, Any], source: str) -> JobRow:
        with self._row(job.job_id) as (s, row):
            return self._move(
                s,
                row,
                job.job_id,
                S.PROMPT,
                {
                    "prompt": prompt,
                    "sampling": json.dumps(sampling),
                    "source": source,
                    "client": job.client.lower(),
                    "model_id": job.model_id,
                    "input_hash": "0x" + job.input_hash.hex(),
                    "max_tokens": job.max_tokens,
                    "escrow_wei": str(job.escrow),
                    "deadline": job.deadline or None,
                    "error": None,
                },
            )

    def routed(self, job_id: int, prompt_tokens: int, hops: Sequence[tuple[str, str, int, int]]) -> None:
        """The route is chosen (node, endpoint, start, end per hop): saved before any session opens."""
        with self._row(job_id) as (s, row):
            self._move(s, row, job_id, S.ROUTED, {"prompt_tokens": prompt_tokens})
        for i, (node, endpoint, start, end) in enumerate(hops):
            self.state.save_hop(
                job_id,
                i,
                node=node.lower(),
                endpoint=endpoint,
                span_start=start,
                span_end=end,
                positions=0,
                layer_tokens=None,
                commitment=None,
                reason="route",
            )

    def rows(self, states: Sequence[JobState] | None = None) -> list[JobRow]:
        return self.state.jobs(statuses=[s.value for s in states] if states else None)

    def needing_recovery(self) -> list[JobRow]:
        """Open jobs, and closed ones whose last transaction may not have been mined."""
        return self.state.unsettled_jobs([s.value for s in TERMINAL])
