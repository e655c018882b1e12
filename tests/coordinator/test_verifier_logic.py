"""The verifier's decisions: tolerant comparison, referee outcome, sampling share, evidence hashing."""

from __future__ import annotations

import json

import pytest
import torch
from eth_utils import keccak

from coordinator.verifier import (
    Comparison,
    Tolerance,
    canonical_json,
    compare,
    evidence_hash,
    evidence_record,
    pick_outlier,
    relative_error,
    should_verify,
    token_rank,
)

TOL = Tolerance(rel_error=1e-3, top_k=3)


def test_hidden_states_within_tolerance_agree() -> None:
    torch.manual_seed(0)
    ref = torch.randn(1, 4, 16)
    noisy = ref + 1e-6 * torch.randn_like(ref)
    c = compare(noisy, ref, is_logits=False, tol=TOL)
    assert c.agree and c.kind == "hidden" and 0 < c.metric < 1e-5
    bad = ref + 0.1 * torch.randn_like(ref)
    c = compare(bad, ref, is_logits=False, tol=TOL)
    assert not c.agree and c.metric > 1e-2


def test_shape_mismatch_and_nan_never_agree() -> None:
    ref = torch.ones(1, 2, 4)
    assert relative_error(torch.ones(1, 3, 4), ref) == float("inf")
    nan = ref.clone()
    nan[0, 0, 0] = float("nan")
    assert not compare(nan, ref, is_logits=False, tol=TOL).agree
    assert not compare(
        torch.full((1, 1, 8), float("nan")), torch.zeros(1, 1, 8), is_logits=True, tol=TOL
    ).agree


def test_logits_agree_when_claimed_top_token_is_in_reference_top_k() -> None:
    ref = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    assert token_rank(0, ref) == 0 and token_rank(3, ref) == 3
    claimed_top2 = torch.tensor([0.0, 0.0, 9.0, 0.0, 0.0, 0.0])
    c = compare(claimed_top2, ref, is_logits=True, tol=TOL)
    assert c.agree and c.metric == 2.0
    claimed_top4 = torch.tensor([0.0, 0.0, 0.0, 0.0, 9.0, 0.0])
    c = compare(claimed_top4, ref, is_logits=True, tol=TOL)
    assert not c.agree and c.metric == 4.0


def test_referee_names_the_outlier() -> None:
    yes, no = Comparison(True, 0.0, "hidden"), Comparison(False, 1.0, "hidden")
    assert pick_outlier(no, yes) == "worker"
    assert pick_outlier(yes, no) == "replica"
    assert pick_outlier(yes, yes) is None
    assert pick_outlier(no, no) is None


def test_should_verify_share() -> None:
    salt = b"s" * 16
    assert all(should_verify(1.0, job_id=1, hop_index=0, step_index=i, salt=salt) for i in range(50))
    assert not any(should_verify(0.0, job_id=1, hop_index=0, step_index=i, salt=salt) for i in range(50))
    draws = [
        should_verify(0.3, job_id=1, hop_index=h, step_index=i, salt=salt)
        for h in range(4)
        for i in range(250)
    ]
    assert 200 < sum(draws) < 400
    again = [
        should_verify(0.3, job_id=1, hop_index=h, step_index=i, salt=salt)
        for h in range(4)
        for i in range(250)
    ]
    assert draws == again
    other = [
        should_verify(0.3, job_id=1, hop_index=h, step_index=i, salt=b"t" * 16)
        for h in range(4)
        for i in range(250)
    ]
    assert draws != other


def test_evidence_hash_is_keccak_of_canonical_json() -> None:
    rec = evidence_record(
        job_id=3,
        node="0xABC",
        hop_index=1,
        step_index=4,
        span=(2, 4),
        start_pos=7,
        input_hash=b"\x01" * 32,
        claimed_hash=b"\x02" * 32,
        replica="0xDEF",
        replica_hash=b"\x03" * 32,
        referee="0x123",
        referee_hash=b"\x04" * 32,
        metric=0.5,
    )
    assert rec["node"] == "0xabc" and rec["span"] == [2, 4]
    data = canonical_json(rec)
    assert json.loads(data) == rec
    assert evidence_hash(rec) == keccak(data)
    rec2 = dict(rec, step_index=5)
    assert evidence_hash(rec2) != evidence_hash(rec)


@pytest.mark.parametrize("metric", [float("inf"), float("nan")])
def test_evidence_of_a_non_finite_metric_is_strict_json(metric: float) -> None:
    """Evidence whose comparison was infinite (shape mismatch, NaN output) still hashes as standard JSON."""
    import json

    from eth_utils import keccak

    from coordinator.verifier import canonical_json, evidence_hash, evidence_record

    record = evidence_record(
        job_id=1,
        node="0xA",
        hop_index=0,
        step_index=2,
        span=(0, 2),
        start_pos=5,
        input_hash=b"\x01" * 32,
        claimed_hash=b"\x02" * 32,
        replica="0xB",
        replica_hash=b"\x03" * 32,
        referee="0xC",
        referee_hash=b"\x04" * 32,
        metric=metric,
    )
    data = canonical_json(record)
    assert b"Infinity" not in data and b"NaN" not in data
    assert json.loads(data, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}")) == record
    assert evidence_hash(record) == keccak(data)
