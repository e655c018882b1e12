"""WorkerState on a real database (SQLite file, and PostgreSQL when installed): what makes a job ready to
commit, and what survives a crash."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from shardnet.db import make_engine
from shardnet.wire.commitment import step_hash
from worker.state import ON_CHAIN, POSTED, WorkerState


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def new_state(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], WorkerState]:
    """`new_state()`: a WorkerState of one fresh worker address; calling it again reopens the same database."""
    url = (
        f"sqlite:///{tmp_path / 'w.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    me = (
        "0x" + os.urandom(20).hex()
    )  # tables may be shared with other tests (PostgreSQL): rows are per worker
    return lambda: WorkerState(make_engine(url), me)


def _h(i: int) -> bytes:
    return step_hash(bytes([i]))


def test_job_is_ready_only_when_routed_and_all_its_sessions_closed(
    new_state: Callable[[], WorkerState],
) -> None:
    st = new_state()
    st.session_opened("s1", 7, "0xC", 0, 2)
    st.step_recorded("s1", 0, _h(0))
    st.step_recorded("s1", 1, _h(1))
    assert st.jobs_to_commit() == []  # not routed yet
    assert st.job_routed(7, 0, 0, 2, block=5) is True
    assert st.job_routed(7, 0, 0, 2, block=5) is False  # idempotent by job id
    assert st.jobs_to_commit() == []  # session still open
    st.session_opened("s2", 7, "0xC", 0, 2)  # a second session of the same job (opened later)
    st.step_recorded("s2", 0, _h(9))
    st.session_closed("s1", "closed", 2, None)
    assert st.jobs_to_commit() == []  # s2 still open
    st.session_closed("s2", "closed", 1, None)
    [ready] = st.jobs_to_commit()
    assert ready.job_id == 7 and ready.step_hashes == [_h(0), _h(1), _h(9)]
    st.commitment_done(7, POSTED, b"\x01" * 32, "0xabc")
    assert st.jobs_to_commit() == []
    [job] = st.jobs()
    assert (job.commit_status, job.commit_tx, job.commitment) == (POSTED, "0xabc", "0x" + "01" * 32)


def test_restart_closes_lost_sessions_and_keeps_their_hashes(new_state: Callable[[], WorkerState]) -> None:
    st = new_state()
    st.session_opened("s1", 3, "0xC", 0, 2)
    st.step_recorded("s1", 0, _h(5))
    st.job_routed(3, 1, 0, 2, block=9)
    del st  # the process dies with s1 open
    st = new_state()
    assert st.session_known("s1") and not st.session_known("s2")
    assert st.close_lost_sessions() == ["s1"]
    assert st.close_lost_sessions() == []
    [ready] = st.jobs_to_commit()
    assert ready.step_hashes == [_h(5)]
    st.commitment_done(3, ON_CHAIN, None)
    assert st.jobs_to_commit() == []


def test_sessions_without_steps_or_route_are_never_committed(new_state: Callable[[], WorkerState]) -> None:
    st = new_state()
    st.session_opened("empty", 1, "0xC", 0, 2)
    st.session_closed("empty", "closed", 0, None)
    st.job_routed(1, 0, 0, 2, block=1)
    st.session_opened("unrouted", 2, "0xC", 0, 2)
    st.step_recorded("unrouted", 0, _h(1))
    st.session_closed("unrouted", "closed", 1, None)
    assert st.jobs_to_commit() == []
