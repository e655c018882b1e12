"""A job's hops as the chain numbers them, and the token positions each one computed (what it is paid for)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from shardnet.chain.registry import Registry
from shardnet.span import LayerSpan


@dataclass
class JobHops:
    """The job's hops on chain (index = position in `getHops`), why each is there and the positions it computed.

    A hop the job does not have yet (a failover replacement, a re-run after a cheat) is added on chain with
    `addHop` through `registry` the first time it is asked for.
    """

    job_id: int
    registry: Registry
    hops: list[tuple[str, LayerSpan]]
    positions: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # why each hop is there: "route", "failover", "rerun"

    def __post_init__(self) -> None:
        self.positions = [0] * len(self.hops)
        self.reasons = ["route"] * len(self.hops)

    async def index_for(self, node: str, span: LayerSpan, reason: str = "route") -> int:
        """The hop index of (node, span), added on chain (addHop) if the job has no such hop yet."""
        for i, (n, s) in enumerate(self.hops):
            if n.lower() == node.lower() and s == span:
                return i
        result = await asyncio.to_thread(self.registry.add_hop, self.job_id, node, span)
        index = int(result.event("HopAdded").args["hopIndex"])
        while len(self.hops) <= index:
            self.hops.append((node, span))
            self.positions.append(0)
            self.reasons.append(reason)
        self.hops[index] = (node, span)
        self.reasons[index] = reason
        return index
