"""Settlement math: how many layer-tokens each hop computed, and how the escrow will be split.

A hop that served layers [a, b) and computed `positions` token positions (prompt positions in the
prefill, one per decode step, and the positions it replayed after a failover) is owed
(b - a) * positions layer-tokens, capped by what the contract accepts for the job:
(b - a) * (maxTokens + maxPromptTokens). The contract pays only hops whose commitment is on chain;
`expected_split` mirrors `finalizeJob` so a coordinator (and a test) can say what will happen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shardnet.span import LayerSpan

BPS = 10_000


@dataclass(frozen=True)
class HopWork:
    """What one hop of a job did: its span and how many token positions it computed."""

    span: LayerSpan
    positions: int


@dataclass(frozen=True)
class Split:
    """How `finalizeJob` divides a job's escrow."""

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
    """The split `finalizeJob` makes: committed hops paid by layer-tokens, the fee on that, the rest refunded."""
    if len(tokens) != len(committed):
        raise ValueError(f"{len(tokens)} layer-token counts for {len(committed)} hops")
    per_hop = tuple(t * price_per_layer_token if c else 0 for t, c in zip(tokens, committed, strict=True))
    paid = sum(per_hop)
    fee = paid * coordinator_fee_bps // BPS
    if paid + fee > escrow:
        raise ValueError(f"payout {paid + fee} wei exceeds the escrow of {escrow} wei")
    return Split(per_hop, paid, fee, escrow - paid - fee)
