"""SessionManager bookkeeping: limits, LRU eviction, idle expiry, positions, memory budget."""

from __future__ import annotations

from typing import Any

import pytest

from shardnet.peer.errors import (
    PayloadTooLarge,
    SessionConflict,
    SessionNotFound,
    TooManySessions,
    WorkerUnavailable,
)
from worker.sessions import Session, SessionManager


class _Cache:
    """Stands in for a BlockSession: only its cached length matters to the manager."""

    def __init__(self) -> None:
        self.length = 0

    def step(self, x: Any, start_pos: int) -> Any:
        self.length += int(x)
        return x


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _manager(clock: _Clock, closed: list[tuple[str, str]], **kw: Any) -> SessionManager:
    args: dict[str, Any] = dict(
        max_sessions=3,
        max_per_coordinator=2,
        max_length=100,
        max_memory_bytes=10_000,
        kv_bytes_per_token=10,
        idle_timeout_s=60.0,
    )
    args.update(kw)
    return SessionManager(**args, on_close=lambda s, why: closed.append((s.session_id, why)), clock=clock)


def _open(m: SessionManager, sid: str, coordinator: str = "0xA") -> Session:
    return m.open(
        session_id=sid, coordinator=coordinator, job_id=1, codec="fp32", next_hop=None, make_compute=_Cache
    )


def test_full_worker_evicts_least_recently_used_idle_session() -> None:
    clock, closed = _Clock(), []
    m = _manager(clock, closed)
    _open(m, "a", "0xA"), _open(m, "b", "0xB"), _open(m, "c", "0xC")
    clock.now += 1
    m.get("a")  # a is now the most recently used
    _open(m, "d", "0xD")
    assert closed == [("b", "evicted")]
    assert sorted(s.session_id for s in m.sessions()) == ["a", "c", "d"]


def test_full_of_busy_sessions_answers_503() -> None:
    clock, closed = _Clock(), []
    m = _manager(clock, closed, max_sessions=2)
    for sid, c in (("a", "0xA"), ("b", "0xB")):
        _open(m, sid, c).busy = 1
    with pytest.raises(WorkerUnavailable, match="full"):
        _open(m, "c", "0xC")
    assert closed == []


def test_per_coordinator_limit_is_429() -> None:
    m = _manager(_Clock(), [])
    _open(m, "a"), _open(m, "b")
    with pytest.raises(TooManySessions) as err:
        _open(m, "c")
    assert err.value.status == 429


def test_session_ids_are_single_use() -> None:
    closed: list[tuple[str, str]] = []
    m = _manager(_Clock(), closed)
    _open(m, "a")
    m.close("a")
    assert closed == [("a", "closed")]
    with pytest.raises(SessionConflict):
        _open(m, "a")
    with pytest.raises(SessionNotFound):
        m.get("a")


def test_idle_sessions_expire_but_busy_ones_do_not() -> None:
    clock, closed = _Clock(), []
    m = _manager(clock, closed)
    _open(m, "a"), _open(m, "b")
    m.get("b").busy = 1
    clock.now += 61
    assert [s.session_id for s in m.expire_idle()] == ["a"]
    assert closed == [("a", "expired")] and "b" in m


def test_step_checks_position_length_and_memory() -> None:
    clock, closed = _Clock(), []
    m = _manager(clock, closed, max_memory_bytes=500)
    a = _open(m, "a", "0xA")
    a.compute.step(10, 0)
    with pytest.raises(SessionConflict, match="send position 10"):
        m.check_step(a, 3, 1)
    with pytest.raises(PayloadTooLarge, match="max length 100"):
        m.check_step(a, 10, 91)
    m.check_step(a, 10, 40)  # 50 tokens * 10 bytes = 500 bytes: fits exactly
    b = _open(m, "b", "0xB")
    b.compute.step(30, 0)  # 300 bytes
    m.check_step(a, 10, 20)  # 100 cached + 300 (b) + 200 new > 500: evicts b (idle), not a
    assert closed == [("b", "evicted")]
    a.busy = 1
    c = _open(m, "c", "0xC")
    with pytest.raises(WorkerUnavailable, match="memory budget"):
        m.check_step(c, 0, 41)  # a (busy) holds 100 bytes, 410 more exceed 500, nothing idle to evict
    assert "a" in m


def test_a_step_larger_than_the_whole_budget_is_refused_without_evicting_anyone() -> None:
    clock, closed = _Clock(), []
    m = _manager(clock, closed, max_memory_bytes=500)
    a = _open(m, "a", "0xA")
    a.compute.step(10, 0)  # 100 bytes, idle
    b = _open(m, "b", "0xB")
    with pytest.raises(PayloadTooLarge, match="whole cache budget"):
        m.check_step(b, 0, 51)  # 510 bytes could never fit, even alone
    assert closed == [] and "a" in m and "b" in m
    m.check_step(b, 0, 40)  # 400 + a's 100 = 500: fits exactly, a stays
    assert closed == []


def _reserve(m: SessionManager, sid: str, positions: int, coordinator: str = "0xA") -> Session:
    return m.open(
        session_id=sid,
        coordinator=coordinator,
        job_id=1,
        codec="fp32",
        next_hop=None,
        make_compute=_Cache,
        max_positions=positions,
        reserve_positions=positions,
    )


def test_a_reservation_is_the_sessions_worst_case_refused_at_open_as_busy_when_it_does_not_fit() -> None:
    clock, closed = _Clock(), []
    m = _manager(clock, closed, max_memory_bytes=1000, output_bytes_per_position=10)  # 20 bytes a position
    assert m.bytes_per_position == 20
    a = _reserve(m, "a", 30)  # 600 bytes held from the open on
    assert m.total_memory_bytes() == 600 and m.free_memory_bytes() == 400
    with pytest.raises(WorkerUnavailable, match="retry when a session closes") as refused:
        _reserve(m, "b", 30, "0xB")  # 600 more do not fit: refused before anything runs
    assert refused.value.code == "memory_full" and refused.value.status == 503
    with pytest.raises(PayloadTooLarge, match="whole budget"):
        _reserve(m, "c", 51, "0xC")  # more than the whole budget can ever hold
    a.compute.step(10, 0)
    m.check_step(a, 10, 20)  # within its reservation: needs nothing more
    assert m.total_memory_bytes() == 600
    b = _reserve(m, "b2", 20, "0xB")  # 400: fits exactly
    clock.now += 1
    other = _open(m, "x", "0xC")  # no reservation
    with pytest.raises(WorkerUnavailable, match="busy or reserved") as full:
        m.check_step(other, 0, 1)  # reserved sessions are never evicted to make room
    assert full.value.code == "memory_full" and closed == []
    m.close(b.session_id)
    m.check_step(other, 0, 1)
    assert m.free_memory_bytes() == 400  # b's reservation given back; x has computed nothing yet


def test_the_session_limits_name_their_code() -> None:
    m = _manager(_Clock(), [], max_sessions=1)
    _reserve(m, "a", 1)
    with pytest.raises(WorkerUnavailable) as full:
        _open(m, "b", "0xB")  # the reserved session is not evicted
    assert full.value.code == "sessions_full"
    m2 = _manager(_Clock(), [], max_per_coordinator=1)
    _open(m2, "a")
    with pytest.raises(TooManySessions) as mine:
        _open(m2, "b")
    assert mine.value.code == "sessions_full"


def test_a_step_beyond_the_tickets_max_positions_is_refused() -> None:
    m = _manager(_Clock(), [])
    s = m.open(
        session_id="bounded",
        coordinator="0xA",
        job_id=1,
        codec="fp32",
        next_hop=None,
        make_compute=_Cache,
        max_positions=12,  # the coordinator bounded the job: prompt + max tokens
    )
    m.check_step(s, 0, 12)  # exactly the bound
    with pytest.raises(PayloadTooLarge, match="max_positions 12"):
        m.check_step(s, 0, 13)
    assert (
        m.open(
            session_id="job0", coordinator="0xB", job_id=0, codec="fp32", next_hop=None, make_compute=_Cache
        ).max_positions
        == 0
    )  # no bound given: only the worker's max length applies


def test_a_reservation_no_step_uses_is_closed_after_unused_reservation_s() -> None:
    clock, closed = _Clock(), []
    m = _manager(clock, closed, unused_reservation_s=5.0)
    parked = _reserve(m, "parked", 50)
    used = _reserve(m, "used", 50, coordinator="0xB")
    plain = _open(m, "plain", coordinator="0xC")  # no reservation: only the idle timeout closes it
    m.check_step(used, 0, 3)
    used.compute.step(3, 0)
    used.step_hashes.append(b"h")
    clock.now += 6
    assert [s.session_id for s in m.expire_idle()] == ["parked"]
    assert closed == [("parked", "expired")]
    assert "used" in m and "plain" in m and "parked" not in m and not plain.closed
    assert (
        parked.closed and m.total_memory_bytes() == 50 * 10
    )  # the used reservation holds, the parked one is free


def test_used_session_ids_are_forgotten_when_their_ticket_expires_and_capped() -> None:
    clock, closed = _Clock(), []
    wall = _Clock()
    m = _manager(clock, closed, max_sessions=100, max_per_coordinator=100, max_retired=3, wall_clock=wall)

    def once(sid: str, expires_at: float) -> None:
        m.open(
            session_id=sid,
            coordinator="0xA",
            job_id=1,
            codec="fp32",
            next_hop=None,
            make_compute=_Cache,
            expires_at=expires_at,
        )
        m.close(sid)

    once("a", wall.now + 10)
    once("b", wall.now + 100)
    with pytest.raises(SessionConflict):  # single use while its ticket is valid
        once("a", wall.now + 10)
    wall.now += 11  # a's ticket expired: a replay of it is refused as expired, so the id need not be kept
    once("c", wall.now + 100)
    assert m.retired_ids() == 2
    for i in range(
        10
    ):  # a flood of long-lived tickets: the soonest to expire are forgotten first, never more than 3
        once(f"x{i}", wall.now + 1000 + i)
        assert m.retired_ids() <= 3
    with pytest.raises(SessionConflict):
        once("x9", wall.now + 1009)
