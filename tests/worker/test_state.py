"""WorkerState on a real database (SQLite file, and PostgreSQL when installed): what a job's commitment covers,
that it is stored before it is handed out, and what survives a crash."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from eth_account import Account
from sqlalchemy.exc import IntegrityError

from shardnet.chain.commitments import sign_commitment
from shardnet.db import make_engine
from shardnet.span import LayerSpan
from shardnet.wire.commitment import merkle_root, step_hash
from shardnet.wire.eip712 import Domain
from worker.state import POSTED, SIGNED, JobWork, WorkerState

KEY = Account.create()
DOMAIN = Domain(31337, "0x" + "cd" * 20)
SPAN = LayerSpan(0, 2)


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


def _sign(st: WorkerState, job_id: int, handed_at: float = 1.0) -> None:
    work = st.job_work(job_id)
    assert work is not None
    signed = sign_commitment(
        KEY,
        DOMAIN,
        job_id=job_id,
        span=work.span,
        positions=work.positions,
        steps=len(work.step_hashes),
        root=work.root,
    )
    st.save_commitment(signed, work.ticket, handed_at)


def test_a_jobs_commitment_covers_all_its_sessions_in_order_with_their_positions(
    new_state: Callable[[], WorkerState],
) -> None:
    st = new_state()
    st.session_opened("s1", 7, "0xC", 0, 2, '{"t": 1}')
    st.step_recorded("s1", 0, _h(0), 5)  # the prompt
    st.step_recorded("s1", 1, _h(1), 1)
    st.session_opened("s2", 7, "0xC", 0, 2, '{"t": 2}')  # a second session of the same job (a re-run)
    st.step_recorded("s2", 0, _h(9), 6)
    st.session_opened("other", 8, "0xC", 0, 2)
    st.step_recorded("other", 0, _h(4), 1)
    work = st.job_work(7)
    assert work is not None
    assert (work.step_hashes, work.positions, work.ticket, work.span) == (
        [_h(0), _h(1), _h(9)],
        12,
        '{"t": 2}',
        SPAN,
    )
    assert work.root == merkle_root([_h(0), _h(1), _h(9)])
    assert st.job_work(99) is None
    _sign(st, 7)
    row = st.job(7)
    assert row is not None and (row.commit_status, row.steps, row.positions) == (SIGNED, 3, 12)
    assert row.signed(KEY.address).root == work.root
    st.commitment_done(7, POSTED, "0xabc")
    st.step_recorded("s2", 1, _h(10), 1)
    _sign(st, 7)  # a commitment posted on chain is never replaced by a later signature
    row = st.job(7)
    assert row is not None and (row.commit_status, row.commit_tx, row.steps) == (POSTED, "0xabc", 3)


def test_a_batch_of_step_records_is_stored_in_one_transaction_all_or_none(
    new_state: Callable[[], WorkerState],
) -> None:
    st = new_state()
    st.session_opened("a", 7, "0xC", 0, 2)
    st.session_opened("b", 7, "0xC", 0, 2)
    st.steps_recorded([("a", 0, _h(0), 5), ("b", 0, _h(1), 3)])  # two sessions' prefills, one batch
    st.steps_recorded([("a", 1, _h(2), 1), ("b", 1, _h(3), 1)])
    with pytest.raises(IntegrityError):  # step 1 of "b" again: the whole batch is refused
        st.steps_recorded([("a", 2, _h(4), 1), ("b", 1, _h(5), 1)])
    work = st.job_work(7)
    assert work is not None
    assert (work.step_hashes, work.positions) == ([_h(0), _h(2), _h(1), _h(3)], 10)


def test_commitments_are_due_after_they_were_handed_out(new_state: Callable[[], WorkerState]) -> None:
    st = new_state()
    for job_id, handed in ((1, 10.0), (2, 20.0)):
        st.session_opened(f"s{job_id}", job_id, "0xC", 0, 2)
        st.step_recorded(f"s{job_id}", 0, _h(job_id), 1)
        st.session_closed(f"s{job_id}", "closed", 1, None)
        _sign(st, job_id, handed)
    assert [r.job_id for r in st.commitments_due(15.0)] == [1]
    assert [r.job_id for r in st.commitments_due(25.0)] == [1, 2]
    st.commitment_done(1, POSTED, "0x1")
    assert [r.job_id for r in st.commitments_due(25.0)] == [2]


def test_restart_closes_lost_sessions_and_their_jobs_need_signing(
    new_state: Callable[[], WorkerState],
) -> None:
    st = new_state()
    st.session_opened("s1", 3, "0xC", 0, 2)
    st.step_recorded("s1", 0, _h(5), 4)
    del st  # the process dies with s1 open
    st = new_state()
    assert st.session_known("s1") and not st.session_known("s2")
    assert st.close_lost_sessions() == ["s1"]
    assert st.close_lost_sessions() == []
    assert st.uncommitted_jobs() == [3]
    _sign(st, 3, 0.0)
    assert st.uncommitted_jobs() == []


def test_sessions_without_steps_or_job_are_never_signed(new_state: Callable[[], WorkerState]) -> None:
    st = new_state()
    st.session_opened("empty", 1, "0xC", 0, 2)
    st.session_closed("empty", "closed", 0, None)
    st.session_opened("no-job", 0, "0xC", 0, 2)  # job 0: a session outside any job
    st.step_recorded("no-job", 0, _h(1), 1)
    st.session_closed("no-job", "closed", 1, None)
    assert st.uncommitted_jobs() == []
    assert st.job_work(1) is None


def test_a_commitment_never_bills_more_positions_than_its_ticket() -> None:
    ticket = json.dumps({"max_positions": 7})
    assert JobWork(1, LayerSpan(0, 2), [b"\x01" * 32], 9, ticket).billable_positions == 7
    assert JobWork(1, LayerSpan(0, 2), [b"\x01" * 32], 5, ticket).billable_positions == 5
    assert JobWork(1, LayerSpan(0, 2), [b"\x01" * 32], 9, None).billable_positions == 9
