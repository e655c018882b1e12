"""The job state machine without a network: legal and illegal moves, write-ahead of chain transactions,
the chain event and the prompt meeting in either order, and what a restart does with each state."""

from __future__ import annotations

from pathlib import Path

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
