"""The coordinator's own check of a request before a verifier gets it (`DisputeRunner.request_error`): a 401 or 422
from a verifier serving the hop's span is a fault only because the coordinator made sure its request deserved
neither. Each way its own request could rightly be refused is caught here, and such a request goes to nobody."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from eth_account import Account
from eth_account.signers.local import LocalAccount

from coordinator.disputes import DisputeRunner, input_frame
from shardnet.chain.commitments import sign_commitment
from shardnet.chain.registry import JobRecord
from shardnet.span import LayerSpan
from shardnet.verify.package import StepWork, VerificationPackage
from shardnet.verify.tokens import ShownTokens
from shardnet.wire.commitment import merkle_root
from shardnet.wire.eip712 import Domain

DOMAIN = Domain(31337, "0x" + "22" * 20)
COORDINATOR = Account.from_key("0x" + "33" * 32)
WORKER = Account.from_key("0x" + "44" * 32)
STEPS = [StepWork(input_frame(torch.tensor([[1, 2, 3]]), None), b"\x05" * 32, b"\x06" * 16)]
ROOT = merkle_root([s.leaf() for s in STEPS])
LAST = LayerSpan(2, 4)  # the last hop of the job's 4 layers


def _record(coordinator: str = COORDINATOR.address) -> JobRecord:
    return JobRecord("0x" + "55" * 20, coordinator, 1, 8, 0, 0, 4, 1)


def _package(
    span: LayerSpan = LAST,
    positions: int = 3,
    signer: LocalAccount = WORKER,
    shown: ShownTokens | None = None,
) -> VerificationPackage:
    signed = sign_commitment(signer, DOMAIN, job_id=7, span=span, positions=positions, steps=1, root=ROOT)
    signed = replace(
        signed, node=WORKER.address
    )  # another key's signature over what names WORKER as its node
    return VerificationPackage(signed, STEPS, "float32", shown)


def _runner(approved: bool = True) -> DisputeRunner:
    registry = SimpleNamespace(is_coordinator=lambda _a: approved, domain=lambda: DOMAIN)
    return DisputeRunner(registry, COORDINATOR, lambda _a: None)  # type: ignore[arg-type]


def _error(runner: DisputeRunner, record: JobRecord, package: VerificationPackage) -> str | None:
    return runner.request_error(7, record, package, package.to_json())


def test_a_valid_request_passes() -> None:
    assert _error(_runner(), _record(), _package()) is None
    assert (
        _error(_runner(), _record(), _package(shown=ShownTokens([9]))) is None
    )  # the last hop: layers 2:4 of 4


@pytest.mark.parametrize(
    ("runner", "record", "package", "why"),
    [
        (_runner(), _record("0x" + "66" * 20), _package(), "names the coordinator"),
        (_runner(approved=False), _record(), _package(), "not approved"),
        (_runner(), _record(), _package(signer=Account.from_key("0x" + "77" * 32)), "not signed by"),
        (_runner(), _record(), _package(positions=4), "3 positions, the commitment 4"),
        (_runner(), _record(), _package(LayerSpan(0, 2), shown=ShownTokens([9])), "not the last hop"),
        (_runner(), _record(), _package(shown=ShownTokens([9], temperature=50.0)), "does not parse"),
    ],
)
def test_a_request_a_verifier_would_rightly_refuse_is_caught(
    runner: DisputeRunner, record: JobRecord, package: VerificationPackage, why: str
) -> None:
    error = _error(runner, record, package)
    assert error is not None and why in error, error


def test_such_a_request_is_sent_to_nobody() -> None:
    """Nobody drawn, nobody asked: the registry's draw is never even read."""
    runner = _runner(approved=False)
    package = _package()
    outcome = asyncio.run(
        runner.check_hop(7, _record(), 100, package.commitment, package.steps, "float32")
    )  # the fake registry has no draw_verifiers: reaching it would raise
    assert outcome.answers == [] and not outcome.slashed and "not approved" in outcome.note, outcome
