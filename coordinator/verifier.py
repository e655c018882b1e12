"""Verification: re-run a share of the steps on a replica of the same span and compare within a tolerance.

Honest workers on different hardware or thread counts produce slightly different floats, so outputs are
never compared by hash: hidden states by relative error (||claimed - reference|| / ||reference||), the
last hop's logits by whether the claimed distribution's top token is within the reference's top-k (as
Bittensor's Targon validator does). A disagreement is settled by a third worker, the referee: whichever
of the two disagrees with the referee is the outlier. The evidence of a slash is a JSON record of the
step (job, hop, step, positions, the input's hash and both outputs' hashes), whose keccak goes on chain.

This module holds the decisions (pure functions); `coordinator.verification_runs` runs the re-computations.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from typing import Any

import torch
from eth_utils import keccak


@dataclass(frozen=True)
class Tolerance:
    """How close a replica's output must be to count as the same computation."""

    rel_error: float = 1e-3  # hidden states: largest accepted ||a - b|| / ||b||
    top_k: int = 5  # last hop: the claimed top token must be among the reference's top-k


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing a claimed output with a reference computation of the same step."""

    agree: bool
    metric: float  # relative error (hidden states) or rank of the claimed top token (logits)
    kind: str  # "hidden" or "logits"


def relative_error(claimed: torch.Tensor, reference: torch.Tensor) -> float:
    """||claimed - reference|| / ||reference|| in float64 (inf on a shape mismatch or non-finite values)."""
    if claimed.shape != reference.shape:
        return float("inf")
    a = claimed.to(torch.float64)
    b = reference.to(torch.float64)
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return float("inf")
    denom = max(float(torch.linalg.vector_norm(b)), 1e-12)
    return float(torch.linalg.vector_norm(a - b)) / denom


def token_rank(token: int, reference_logits: torch.Tensor) -> int:
    """0-based rank of `token` in the reference logits (0 = the reference's own top token)."""
    scores = reference_logits.reshape(-1).to(torch.float64)
    return int((scores > scores[token]).sum().item())


def compare(claimed: torch.Tensor, reference: torch.Tensor, *, is_logits: bool, tol: Tolerance) -> Comparison:
    """Compare one step's claimed output with a reference computation of it."""
    if is_logits:
        flat = claimed.reshape(-1)
        if flat.shape != reference.reshape(-1).shape or not torch.isfinite(flat).all():
            return Comparison(False, float("inf"), "logits")
        rank = token_rank(int(torch.argmax(flat).item()), reference)
        return Comparison(rank < tol.top_k, float(rank), "logits")
    err = relative_error(claimed, reference)
    return Comparison(err <= tol.rel_error, err, "hidden")


def pick_outlier(worker_vs_referee: Comparison, replica_vs_referee: Comparison) -> str | None:
    """Who the referee proves wrong: "worker", "replica", or None when it cannot tell (both or neither agree)."""
    if worker_vs_referee.agree and not replica_vs_referee.agree:
        return "replica"
    if replica_vs_referee.agree and not worker_vs_referee.agree:
        return "worker"
    return None


def should_verify(share: float, *, job_id: int, hop_index: int, step_index: int, salt: bytes) -> bool:
    """Whether to verify a step: a deterministic draw (from a secret salt) with probability `share`.

    A worker cannot predict which of its steps are checked without the coordinator's salt.
    """
    if share >= 1.0:
        return True
    if share <= 0.0:
        return False
    seed = keccak(salt + f"{job_id}:{hop_index}:{step_index}".encode())
    return random.Random(seed).random() < share


def evidence_record(
    *,
    job_id: int,
    node: str,
    hop_index: int,
    step_index: int,
    span: tuple[int, int],
    start_pos: int,
    input_hash: bytes,
    claimed_hash: bytes,
    replica: str,
    replica_hash: bytes,
    referee: str,
    referee_hash: bytes,
    metric: float,
) -> dict[str, Any]:
    """The JSON-able record of a proven disagreement; its keccak (`evidence_hash`) goes on chain."""
    return {
        "format": "shardnet-evidence/1",
        "job_id": job_id,
        "node": node.lower(),
        "hop_index": hop_index,
        "step_index": step_index,
        "span": list(span),
        "start_pos": start_pos,
        "input_hash": "0x" + input_hash.hex(),
        "claimed_output_hash": "0x" + claimed_hash.hex(),
        "replica": replica.lower(),
        "replica_output_hash": "0x" + replica_hash.hex(),
        "referee": referee.lower(),
        "referee_output_hash": "0x" + referee_hash.hex(),
        # a shape mismatch or NaN/inf output compares as an infinite metric: JSON has no Infinity, so say it in words
        "metric": metric if math.isfinite(metric) else str(metric),
    }


def canonical_json(record: dict[str, Any]) -> bytes:
    """Sorted keys, no spaces, strict JSON (NaN and Infinity are refused: any parser can check the hash)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def evidence_hash(record: dict[str, Any]) -> bytes:
    """keccak256 of the record's canonical JSON (sorted keys, no spaces)."""
    return keccak(canonical_json(record))
