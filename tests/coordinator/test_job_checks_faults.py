"""Which verifiers a check's first stage skips (`coordinator.disputes.first_stage` as `JobChecks` wires it): those
with MAX_FAULTS verifier faults here, and no others - a node excluded from routing for another reason (a live
check's referee, which sybils can provoke) still judges first when drawn first, so colluders cannot empty the
first stage of honest verifiers to shield a cheat."""

from __future__ import annotations

from types import SimpleNamespace

from coordinator.directory import WorkerDirectory
from coordinator.disputes import first_stage
from coordinator.job_checks import MAX_FAULTS, JobChecks

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
