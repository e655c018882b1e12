"""One hop's failed check is its own (`JobChecks.run`): an exception while judging hop i (a malformed answer
handled badly, a chain read failing) used to end the whole job's check, so the later hops were never judged and
the verifiers of the hops already judged never paid. A hostile verifier or node able to make one hop's check raise
shielded the others. Now the hop is reported unchecked with the reason, the other hops are judged and reported,
and the verdicts gathered are paid; a failure of the shared steps (the settlement's receipt) still fails the check.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from eth_account import Account

from coordinator import job_checks
from coordinator.corrections import CHECK_FAILED, PARTLY_VERIFIED, CheckReport
from coordinator.directory import WorkerDirectory
from coordinator.dispute_answers import DisputeOutcome, VerifierAnswer
from coordinator.hops import JobHops
from coordinator.job_checks import JobChecks
from shardnet.chain.commitments import SignedCommitment, sign_commitment, sign_innocent_verdict
from shardnet.chain.registry import HopVerdicts
from shardnet.span import LayerSpan
from shardnet.verify.package import StepWork
from shardnet.wire.commitment import merkle_root
from shardnet.wire.eip712 import Domain

DOMAIN = Domain(31337, "0x" + "22" * 20)
MODEL = 1
JOB = 7
SPANS = [LayerSpan(0, 2), LayerSpan(2, 4), LayerSpan(4, 6)]
NODES = [Account.from_key("0x" + f"{i + 1:02x}" * 32) for i in range(3)]
VERIFIERS = [Account.from_key("0x" + f"{i + 0x41:02x}" * 32) for i in range(2)]


def _directory() -> WorkerDirectory:
    """Each hop's node and the two verifiers on every span: each hop has 2 other live workers to be checked by."""
    directory = WorkerDirectory()
    aid = 0
    for node, span in zip(NODES, SPANS, strict=True):
        for address in [node.address] + [v.address for v in VERIFIERS]:
            aid += 1
            directory.announce(aid, address, MODEL, span)
            directory.set_endpoint(address, f"http://{address.lower()}.invalid")
    return directory


async def _hops() -> JobHops:
    hops = JobHops(JOB, [(n.address, s) for n, s in zip(NODES, SPANS, strict=True)], 64)
    loop = asyncio.get_running_loop()
    for i, (node, span) in enumerate(zip(NODES, SPANS, strict=True)):
        fingerprint: asyncio.Future[bytes] = loop.create_future()
        fingerprint.set_result(bytes([i]) * 8)
        hops.relayed[i] = [(b"frame %d" % i, bytes([i]) * 32, fingerprint)]
        hops.sessions[i] = 1
        root = merkle_root([StepWork(b"frame %d" % i, bytes([i]) * 32, bytes([i]) * 8).leaf()])
        hops.handed(i, sign_commitment(node, DOMAIN, job_id=JOB, span=span, positions=3, steps=1, root=root))
    return hops


def _checks(monkeypatch: pytest.MonkeyPatch, receipt: Any = None) -> tuple[JobChecks, list[Any], list[int]]:
    """A JobChecks over fakes of the chain (the receipt, the draw block, the pay) whose `check_hop` raises for the
    second hop; returns it, the hops sent to be paid (None: pay never called) and the hops recorded."""
    directory = _directory()
    recorded: list[int] = []
    registry = SimpleNamespace(
        w3=SimpleNamespace(eth=SimpleNamespace(get_block=lambda _n: {"hash": b"\x01" * 32})),
        job_record=lambda _job: "record",
    )
    ctx = SimpleNamespace(
        router=SimpleNamespace(directory=directory, replicas=directory.replicas),
        registry=registry,
        account=None,
        adapters=SimpleNamespace(for_job=lambda _job: None),
        state=SimpleNamespace(
            add_verification=lambda **kw: recorded.append(kw["hop_index"]), add_slash=lambda **_kw: None
        ),
    )
    checks = JobChecks(ctx, share=1.0)  # type: ignore[arg-type]
    paid: list[Any] = [None]

    async def pay(_job: int, _record: Any, _close: int, hops: list[HopVerdicts]) -> None:
        paid[0] = hops

    async def no_dtype(_endpoint: str | None) -> str:
        return "float32"

    async def drawn(_close: int) -> bool:
        return True

    async def check_hop(
        job_id: int, _record: Any, _close: int, signed: SignedCommitment, *_rest: Any
    ) -> DisputeOutcome:
        if signed.node == NODES[1].address:
            raise ValueError("a verifier's answer the check could not handle")
        answers = [
            VerifierAnswer(
                v.address,
                1,
                False,
                signature=sign_innocent_verdict(
                    v, DOMAIN, job_id=job_id, accused=signed.node, root=signed.root
                ),
            )
            for v in VERIFIERS
        ]
        return DisputeOutcome(signed.node, answers, False, note="innocent", drawn=2, picks=2)

    def wait_for_receipt(_w3: Any, _tx: str) -> Any:
        if receipt is None:
            raise ConnectionError("the chain node is gone")
        return receipt

    monkeypatch.setattr(checks.payer, "pay", pay)
    monkeypatch.setattr(job_checks, "worker_dtype", no_dtype)
    monkeypatch.setattr(job_checks, "wait_for_receipt", wait_for_receipt)
    monkeypatch.setattr(checks.disputes, "wait_for_draw", drawn)
    monkeypatch.setattr(checks.disputes, "check_hop", check_hop)
    return checks, paid, recorded


def test_a_hop_whose_check_raises_does_not_end_the_others_checks_nor_their_pay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checks, paid, recorded = _checks(monkeypatch, receipt={"blockNumber": "0x10"})

    async def go() -> CheckReport:
        checks.start(JOB, MODEL, await _hops(), "0xsettle")
        await checks.wait()
        return checks.reports[JOB]

    report = asyncio.run(go())
    assert report.status == PARTLY_VERIFIED, report
    assert report.hops_checked == 2 and report.verifier_passes == 4
    [why] = report.hops_unchecked
    assert why.startswith("hop 1: its check failed") and "could not handle" in why, why
    assert sorted(set(recorded)) == [0, 2]  # the hops after the failed one were judged and recorded
    assert paid[0] is not None, "the verifiers of the judged hops were never paid"
    assert [h.commitment.node for h in paid[0]] == [NODES[0].address, NODES[2].address]
    assert [len(h.verdicts) for h in paid[0]] == [2, 2]


def test_a_failure_of_the_shared_steps_still_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    checks, paid, recorded = _checks(monkeypatch, receipt=None)  # the settlement's receipt cannot be read

    async def go() -> CheckReport:
        checks.start(JOB, MODEL, await _hops(), "0xsettle")
        await checks.wait()
        return checks.reports[JOB]

    report = asyncio.run(go())
    assert report.status == CHECK_FAILED and "the chain node is gone" in report.note, report
    assert paid[0] is None and recorded == []
