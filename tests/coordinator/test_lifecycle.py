"""The job state machine without a network: legal and illegal moves, write-ahead of chain transactions,
the chain event and the prompt meeting in either order, and what a restart does with each state."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from coordinator.lifecycle import (
    TRANSITIONS,
    IllegalTransition,
    JobLifecycle,
    JobState,
    Recovery,
    recovery_action,
)
from coordinator.state import CoordinatorState
from shardnet.chain.registry import JobInfo, JobRecord, JobStatus
from shardnet.db import make_engine, session_scope

S = JobState


def _lifecycle(tmp_path: Path) -> JobLifecycle:
    return JobLifecycle(CoordinatorState(make_engine(f"sqlite:///{tmp_path / 'c.db'}")))


def _job(job_id: int) -> JobInfo:
    record = JobRecord("0x" + "c1" * 20, "0x" + "c0" * 20, 1, 8, 99, 100, 6, 1)
    return JobInfo(job_id, record, b"\x05" * 32, JobStatus.Open, 0, 0, 1)


def _submitted_event(lc: JobLifecycle, job_id: int) -> None:
    with session_scope(lc.state.engine) as s:
        lc.on_submitted(s, job_id, {"client": "0xc1", "model_id": 1, "max_tokens": 8, "deadline": 99})


def test_a_job_walks_the_happy_path_with_each_transaction_written_ahead(tmp_path: Path) -> None:
    lc = _lifecycle(tmp_path)
    _submitted_event(lc, 1)
    seen = [(lc.state.get_job(1).status, lc.state.get_job(1).chain_pending)]
    lc.take_prompt(_job(1), "hi", {"seed": 3})
    seen.append((lc.state.get_job(1).status, lc.state.get_job(1).chain_pending))
    lc.routed(1, 2, [("0xA", "http://a", 0, 3), ("0xB", "http://b", 3, 6)])
    seen.append((lc.state.get_job(1).status, lc.state.get_job(1).chain_pending))
    lc.advance(1, S.GENERATING)
    lc.advance(1, S.SETTLING, output="out", output_hash="0x" + "11" * 32)
    seen.append((lc.state.get_job(1).status, lc.state.get_job(1).chain_pending))
    lc.advance(1, S.FINALIZED, tx_finalize="0xtx")
    seen.append((lc.state.get_job(1).status, lc.state.get_job(1).chain_pending))
    # protocol v2: nothing goes on chain for a route; settleJobs is written ahead of the settlement
    assert seen == [
        ("submitted", None),
        ("prompt", None),
        ("routed", None),
        ("settling", "settleJobs"),
        ("finalized", None),
    ]
    assert [(h.node, h.span_start, h.span_end) for h in lc.state.hops(1)] == [("0xa", 0, 3), ("0xb", 3, 6)]
    assert lc.needing_recovery() == []


def test_illegal_moves_raise_and_change_nothing(tmp_path: Path) -> None:
    lc = _lifecycle(tmp_path)
    with pytest.raises(IllegalTransition, match="cannot go from unknown to generating"):
        lc.advance(7, S.GENERATING)
    assert lc.state.get_job(7) is None
    lc.take_prompt(_job(7), "p", {})
    with pytest.raises(IllegalTransition, match="from prompt to settling"):
        lc.advance(7, S.SETTLING)
    with pytest.raises(IllegalTransition, match="from prompt to prompt"):
        lc.take_prompt(_job(7), "a second hand-over", {})  # a second prompt does not replace the first
    assert lc.state.get_job(7).prompt == "p"
    lc.advance(7, S.FAILED, error="x")
    for target in JobState:
        with pytest.raises(IllegalTransition, match="it is over"):
            lc.advance(7, target)
    assert all(not TRANSITIONS[s] for s in (S.FINALIZED, S.FAILED, S.CANCELLED))


def test_the_prompt_may_come_before_the_chain_event_and_events_replay_harmlessly(tmp_path: Path) -> None:
    lc = _lifecycle(tmp_path)
    lc.take_prompt(_job(2), "first", {})
    _submitted_event(lc, 2)  # the watcher's event arrives after the prompt: the job is not entered twice
    _submitted_event(lc, 2)  # and a replayed range changes nothing
    row = lc.state.get_job(2)
    assert (row.status, row.prompt, row.deadline) == ("prompt", "first", 99)
    with session_scope(lc.state.engine) as s:
        lc.on_cancelled(s, 2)
    with session_scope(lc.state.engine) as s:
        lc.on_cancelled(s, 2)
    assert lc.state.get_job(2).status == "cancelled"


@pytest.mark.postgres
def test_the_prompt_and_the_chain_event_racing_to_enter_the_same_job_both_land(postgres_url: str) -> None:
    """Pushed events reach the watcher within milliseconds, while the client hands its prompt over: on PostgreSQL
    both transactions may find no row and insert it (SQLite's BEGIN IMMEDIATE serializes them). The prompt's
    transaction that loses (duplicate key) is tried again and finds the row."""
    engine = make_engine(postgres_url.replace("postgresql://", "postgresql+psycopg2://"))
    lc = JobLifecycle(CoordinatorState(engine))
    job_id = secrets.randbelow(2**40) + 2**40  # the server is shared by the session's tests
    enter = lc._row
    raced: list[int] = []

    @contextmanager
    def racing_row(job_id: int) -> Iterator[tuple[Any, Any]]:
        with enter(job_id) as (s, row):
            if not raced:  # between the prompt's read (no row) and its insert, the watcher enters the job
                raced.append(job_id)
                _submitted_event(lc, job_id)
            yield s, row

    lc._row = racing_row  # type: ignore[method-assign]
    try:
        lc.take_prompt(_job(job_id), "raced", {})
        row = lc.state.get_job(job_id)
        assert raced == [job_id]
        assert (row.status, row.prompt, row.deadline, row.client) == ("prompt", "raced", 99, "0x" + "c1" * 20)
    finally:
        engine.dispose()


def test_recovery_actions() -> None:
    Open, Done, Fail, Can = JobStatus.Open, JobStatus.Settled, JobStatus.Failed, JobStatus.Cancelled
    table = {
        (S.SUBMITTED, Open, None): Recovery.NOTHING,
        (S.PROMPT, Open, None): Recovery.RUN,
        (S.ROUTED, Open, None): Recovery.REROUTE,  # no session was opened yet: choose a route again
        (S.GENERATING, Open, None): Recovery.FAIL,
        (S.SETTLING, Open, "settleJobs"): Recovery.SETTLE,  # issue 11 item 8: pay the work, do not refund
        (S.SETTLING, Done, "settleJobs"): Recovery.MIRROR,  # settleJobs was mined just before the crash
        (S.GENERATING, Can, None): Recovery.MIRROR,
        (S.FAILED, Open, "failJob"): Recovery.RESEND_FAIL,
        (S.FAILED, Fail, "failJob"): Recovery.NOTHING,
        (S.FAILED, Open, None): Recovery.NOTHING,
        (S.FINALIZED, Done, None): Recovery.NOTHING,
    }
    assert {k: recovery_action(*k) for k in table} == table
