"""Settlement math: how many layer-tokens each hop computed, and how the escrow will be split.

A hop that served layers [a, b) and computed `positions` token positions (prompt positions in the
prefill, one per decode step, and the positions it replayed after a failover) is owed
(b - a) * positions layer-tokens, capped by what the contract accepts for the job:
(b - a) * (maxTokens + maxPromptTokens). The contract pays only hops settled with (or posted with) the
node's signed commitment; `check_commitment` is the coordinator's off-chain check of one before it settles it,
and `expected_split` mirrors the registry's split so a coordinator (and a test) can say what will happen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shardnet.chain.commitments import SignedCommitment, verify_commitment
from shardnet.span import LayerSpan
from shardnet.wire.eip712 import Domain

BPS = 10_000


@dataclass(frozen=True)
class HopWork:
    """What one hop of a job did: its span and how many token positions it computed."""

    span: LayerSpan
    positions: int


@dataclass(frozen=True)
class Split:
    """How `settleJobs` divides a job's escrow."""

    per_hop: tuple[int, ...]  # wei credited to each hop's node (0 for a hop without commitment)
    paid_to_nodes: int
    coordinator_fee: int
    refund: int


def layer_tokens(hops: Sequence[HopWork], *, max_tokens: int, max_prompt_tokens: int) -> list[int]:
    """Layer-tokens owed to each hop, in hop order, capped by the contract's per-hop maximum."""
    out = []
    for hop in hops:
        if hop.positions < 0:
            raise ValueError(f"a hop cannot compute a negative number of positions ({hop.positions})")
        cap = len(hop.span) * (max_tokens + max_prompt_tokens)
        out.append(min(len(hop.span) * hop.positions, cap))
    return out


def expected_split(
    tokens: Sequence[int],
    committed: Sequence[bool],
    *,
    price_per_layer_token: int,
    coordinator_fee_bps: int,
    escrow: int,
) -> Split:
    """The split `settleJobs` makes: committed hops paid by layer-tokens, the fee on that, the rest refunded."""
    if len(tokens) != len(committed):
        raise ValueError(f"{len(tokens)} layer-token counts for {len(committed)} hops")
    per_hop = tuple(t * price_per_layer_token if c else 0 for t, c in zip(tokens, committed, strict=True))
    paid = sum(per_hop)
    fee = paid * coordinator_fee_bps // BPS
    if paid + fee > escrow:
        raise ValueError(f"payout {paid + fee} wei exceeds the escrow of {escrow} wei")
    return Split(per_hop, paid, fee, escrow - paid - fee)


def check_commitment(
    signed: SignedCommitment,
    *,
    job_id: int,
    node: str,
    span: LayerSpan,
    domain: Domain,
    max_positions: int,
    seen_positions: int,
) -> str | None:
    """Why the registry would refuse (or this coordinator will not settle) a hop's signed commitment, or None when
    it is good: signed by the hop's node in the registry's domain for this job, over the hop's span, for no more
    positions than the job allows (`maxTokens + maxPromptTokens`) nor than this coordinator saw it compute."""
    if signed.job_id != job_id:
        return f"signed for job {signed.job_id}, not {job_id}"
    if signed.node.lower() != node.lower() or not verify_commitment(signed, domain, job_id=job_id):
        return f"the signature does not recover to the hop's node {node}"
    if signed.span != span:
        return f"signed for layers {signed.span}, but the hop served {span}"
    if signed.positions > max_positions:
        return f"{signed.positions} positions, more than the job allows ({max_positions})"
    if signed.positions > seen_positions:
        return f"{signed.positions} positions, more than this coordinator saw it compute ({seen_positions})"
    return None


def overlapping_hops(hops: Sequence[HopWork], candidates: Sequence[int]) -> set[int]:
    """Indices among `candidates` to leave out so the settled spans are disjoint (the registry pays no layer of a
    job twice): in layer order, a hop overlapping one kept before is dropped; of hops starting together, the one
    that computed more positions is kept. A dropped hop's worker can still post its own commitment."""
    kept_end = 0
    dropped: set[int] = set()
    for i in sorted(candidates, key=lambda i: (hops[i].span.start, -hops[i].positions, i)):
        if hops[i].span.start < kept_end:
            dropped.add(i)
        else:
            kept_end = hops[i].span.end
    return dropped
