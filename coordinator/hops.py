"""A job's hops (protocol v2: they live here, not on chain), the positions each computed and its signed commitment."""

from __future__ import annotations

from dataclasses import dataclass, field

from shardnet.chain.commitments import SignedCommitment
from shardnet.span import LayerSpan


@dataclass
class JobHops:
    """The job's hops (node, span) in the order they joined, why each is there, the positions it computed (what
    it is paid for) and the signed commitment its worker handed over when its session closed.

    A hop the job does not have yet (a failover replacement, a re-run after a cheat) is added the first time it is
    asked for; nothing goes on chain until the settlement.
    """

    job_id: int
    hops: list[tuple[str, LayerSpan]]
    max_positions: int = (
        0  # prompt plus max_tokens: what each session reserves on its worker at open (0: none)
    )
    positions: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # why each hop is there: "route", "failover", "rerun"
    commitments: dict[int, SignedCommitment] = field(
        default_factory=dict
    )  # hop index -> latest signed commitment

    def __post_init__(self) -> None:
        self.positions = [0] * len(self.hops)
        self.reasons = ["route"] * len(self.hops)

    async def index_for(self, node: str, span: LayerSpan, reason: str = "route") -> int:
        """The hop index of (node, span), added if the job has no such hop yet."""
        for i, (n, s) in enumerate(self.hops):
            if n.lower() == node.lower() and s == span:
                return i
        self.hops.append((node, span))
        self.positions.append(0)
        self.reasons.append(reason)
        return len(self.hops) - 1

    def handed(self, hop_index: int, signed: SignedCommitment | None) -> None:
        """A worker's close answer carried its signed commitment for the job (a later one covers more sessions)."""
        if signed is not None:
            self.commitments[hop_index] = signed
