"""The coordinator's off-chain check of a worker's signed commitment before it settles it (protocol v2), and the
board of commitments workers posted themselves."""

from __future__ import annotations

from dataclasses import replace

from eth_account import Account

from coordinator.commitments import CommitmentBoard
from coordinator.settlement import check_commitment
from shardnet.chain.commitments import sign_commitment
from shardnet.span import LayerSpan
from shardnet.wire.commitment import merkle_root, step_hash
from shardnet.wire.eip712 import Domain

WORKER = Account.create()
OTHER = Account.create()
DOMAIN = Domain(31337, "0x" + "12" * 20)
SPAN = LayerSpan(2, 4)
ROOT = merkle_root([step_hash(b"a"), step_hash(b"b")])


def _check(signed, **overrides) -> str | None:  # type: ignore[no-untyped-def]
    args = {
        "job_id": 5,
        "node": WORKER.address,
        "span": SPAN,
        "domain": DOMAIN,
        "max_positions": 20,
        "seen_positions": 7,
    }
    return check_commitment(signed, **{**args, **overrides})


def test_a_good_commitment_passes_and_every_flaw_is_named() -> None:
    good = sign_commitment(WORKER, DOMAIN, job_id=5, span=SPAN, positions=7, steps=2, root=ROOT)
    assert _check(good) is None
    assert "job 6" in str(
        _check(sign_commitment(WORKER, DOMAIN, job_id=6, span=SPAN, positions=7, steps=2, root=ROOT))
    )
    assert "does not recover" in str(_check(good, node=OTHER.address))  # signed by someone else
    forged = replace(good, node=OTHER.address)
    assert "does not recover" in str(_check(forged, node=OTHER.address))
    other_deployment = sign_commitment(
        WORKER, Domain(1, DOMAIN.registry), job_id=5, span=SPAN, positions=7, steps=2, root=ROOT
    )
    assert "does not recover" in str(_check(other_deployment))
    assert "layers" in str(_check(good, span=LayerSpan(0, 2)))
    assert "more than the job allows" in str(_check(good, max_positions=6))
    assert "more than this coordinator saw" in str(_check(good, seen_positions=6))
    inflated = replace(good, positions=8)  # the positions changed after signing: the signature breaks
    assert "does not recover" in str(_check(inflated, seen_positions=9))


def test_the_board_records_self_posted_commitments_of_tracked_jobs_only() -> None:
    board = CommitmentBoard()
    board.track(5)
    board.posted(5, "0xAbC")
    board.posted(9, "0xdef")  # another coordinator's job: ignored
    assert board.posted_by(5) == {"0xabc"} and board.posted_by(9) == set()
    board.forget(5)
    assert board.posted_by(5) == set()
