"""Which verifiers a check's first stage skips (`coordinator.disputes.first_stage` as `JobChecks` wires it): those
with MAX_FAULTS verifier faults here, and no others - a node excluded from routing for another reason (a live
check's referee, which sybils can provoke) still judges first when drawn first, so colluders cannot empty the
first stage of honest verifiers to shield a cheat."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from coordinator import job_checks
from coordinator.directory import WorkerDirectory
from coordinator.dispute_answers import first_stage
from coordinator.job_checks import FAULT_WINDOW_S, MAX_FAULTS, JobChecks
from shardnet.span import LayerSpan

DRAWN = [("0xa", 1), ("0xb", 1), ("0xc", 1), ("0xd", 1)]


def test_only_a_verifier_with_max_faults_leaves_the_first_stage() -> None:
    directory = WorkerDirectory()
    ctx = SimpleNamespace(router=SimpleNamespace(directory=directory), registry=None, account=None)
    checks = JobChecks(ctx, share=1.0)  # type: ignore[arg-type]
    skip = checks.disputes.excluded
    assert first_stage(DRAWN, skip) == (DRAWN[:2], DRAWN[2:])
    directory.exclude("0xA")  # out of routing, not for its verdicts: still first when drawn first
    assert first_stage(DRAWN, skip) == (DRAWN[:2], DRAWN[2:])
    for _ in range(MAX_FAULTS - 1):
        checks._fault("0xB", "refused")
    assert first_stage(DRAWN, skip) == (DRAWN[:2], DRAWN[2:])
    checks._fault("0xB", "outvoted")
    assert first_stage(DRAWN, skip) == ([DRAWN[0], DRAWN[2]], [DRAWN[1], DRAWN[3]])  # asked only as a referee
    for node in ("0xa", "0xc", "0xd"):
        for _ in range(MAX_FAULTS):
            checks._fault(node, "refused")
    assert first_stage(DRAWN, skip) == (DRAWN[:2], DRAWN[2:])  # fewer than 2 left: the draw's own first two


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _checks(clock: Clock) -> tuple[JobChecks, WorkerDirectory]:
    directory = WorkerDirectory()
    directory.announce(1, "0xb", 1, LayerSpan(0, 2))
    directory.set_endpoint("0xb", "http://b.invalid")
    ctx = SimpleNamespace(router=SimpleNamespace(directory=directory), registry=None, account=None)
    return JobChecks(ctx, share=1.0, clock=clock), directory  # type: ignore[arg-type]


def _routed(directory: WorkerDirectory) -> bool:
    directory.record_health("0xb", True)  # its /health answers again: only the faults can keep it out
    return [w.address for w in directory.snapshot(1)] == ["0xb"]


def test_faults_expire_after_the_window() -> None:
    """An honest verifier that timed out 3 times over months (a restart, a slow moment) is not out for good: only
    MAX_FAULTS within FAULT_WINDOW_S count, for the first stage and for routing alike."""
    clock = Clock()
    checks, directory = _checks(clock)
    skip = checks.disputes.excluded
    for _ in range(MAX_FAULTS):  # months apart: never MAX_FAULTS within one window
        checks._fault("0xB", "timed out")
        assert not skip("0xb") and _routed(directory)
        clock.now += 30 * 24 * 3600
    for _ in range(MAX_FAULTS):  # within hours: out of the first stage and of routing
        clock.now += 3600
        checks._fault("0xB", "refused")
    assert skip("0xb") and not _routed(directory) and checks.fault_count("0xb") == MAX_FAULTS
    assert first_stage(DRAWN, skip) == ([DRAWN[0], DRAWN[2]], [DRAWN[1], DRAWN[3]])
    clock.now += FAULT_WINDOW_S - 2 * 3600 - 1  # the first of the three is still within the window
    assert skip("0xb") and not _routed(directory)
    clock.now += 2  # now it expired: 2 faults left
    assert not skip("0xb") and _routed(directory) and checks.fault_count("0xb") == MAX_FAULTS - 1
    assert first_stage(DRAWN, skip) == (DRAWN[:2], DRAWN[2:])
    checks._fault("0xb", "refused")  # one more within the window of the other two: out again
    assert skip("0xb") and not _routed(directory)


def test_the_faults_kept_are_bounded_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Faults are kept for at most MAX_TRACKED verifiers (the least recently faulted forgotten first), at most
    MAX_FAULTS times each, and a verifier whose faults all expired is forgotten."""
    monkeypatch.setattr(job_checks, "MAX_TRACKED", 16)
    clock = Clock()
    checks, _directory = _checks(clock)
    for _ in range(10):
        checks._fault("0xframer", "outvoted")
    assert checks.faults["0xframer"] == [clock.now] * MAX_FAULTS and checks._faulty("0xframer")
    for i in range(40):
        clock.now += 1
        checks._fault(f"0x{i:040x}", "timed out")
    assert len(checks.faults) == 16
    assert list(checks.faults) == [f"0x{i:040x}" for i in range(24, 40)]  # the 16 most recent kept
    clock.now += FAULT_WINDOW_S - 10  # 10 s later all but the last 10 are older than the window
    checks._fault("0xlate", "refused")
    assert list(checks.faults) == [f"0x{i:040x}" for i in range(30, 40)] + ["0xlate"]
