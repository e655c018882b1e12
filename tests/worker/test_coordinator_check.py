"""The worker's cache of on-chain coordinator approvals: cached answers, and `forget` (on CoordinatorSet)
winning over a lookup that was already in flight."""

from __future__ import annotations

import threading

from worker.coordinator_check import CoordinatorCheck

A = "0x00000000000000000000000000000000000000Aa"


def test_answers_are_cached_until_forgotten() -> None:
    chain = {A.lower(): True}
    calls: list[str] = []

    def lookup(address: str) -> bool:
        calls.append(address)
        return chain.get(address.lower(), False)

    check = CoordinatorCheck(lookup, ttl_s=60.0)
    assert check(A) and check(A.lower()) and len(calls) == 1  # cached, whatever the address's case
    chain[A.lower()] = False  # revoked on chain: the cache still says yes ...
    assert check(A)
    check.forget(A)  # ... until CoordinatorSet makes the worker forget it
    assert not check(A) and len(calls) == 2


def test_a_lookup_in_flight_when_forget_is_called_does_not_store_its_stale_answer() -> None:
    started, release = threading.Event(), threading.Event()
    answers = iter([True, False])

    def slow_lookup(_address: str) -> bool:
        answer = next(answers)
        started.set()
        release.wait(5)
        return answer

    check = CoordinatorCheck(slow_lookup, ttl_s=60.0)
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(check(A)))
    thread.start()
    started.wait(5)
    check.forget(A)  # the revocation arrives while the old "yes" is on its way back
    release.set()
    thread.join(5)
    assert results == [True]
    assert check(A) is False  # asked the chain again instead of trusting the stale yes


def test_a_jobs_coordinator_is_remembered_from_events_and_the_cache_is_bounded() -> None:
    from worker.coordinator_check import JobCoordinatorCheck, job_refusal

    reads: list[int] = []

    def lookup(job_id: int) -> str:
        reads.append(job_id)
        return A

    check = JobCoordinatorCheck(lookup, max_cached=2)
    check.remember(1, A)  # pushed JobSubmitted events
    check.remember(2, A)
    assert check(1) == A and check(2) == A and reads == []  # no chain read
    check.remember(3, A)  # the oldest (1) is dropped
    assert check.cached(1) is None and check(1) == A and reads == [1]
    assert job_refusal(1, A.lower(), A) is None
    assert "the job names the coordinator" in (job_refusal(1, "0x" + "bb" * 20, A) or "")
    assert "the job is not on chain" in (job_refusal(1, A, None) or "")
