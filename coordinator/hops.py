"""A job's hops (protocol v2: they live here, not on chain), the positions each computed and its signed commitment."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass, field

import torch

from shardnet.chain.commitments import SignedCommitment
from shardnet.span import LayerSpan
from shardnet.verify.fingerprint import make_fingerprint
from shardnet.verify.package import StepWork


@dataclass
class JobHops:
    """The job's hops (node, span) in the order they joined, why each is there, the positions it computed (what
    it is paid for) and the signed commitment its worker handed over when its session closed.

    A hop the job does not have yet (a failover replacement, a re-run after a cheat) is added the first time it is
    asked for; nothing goes on chain until the settlement.
    """

    job_id: int
    hops: list[tuple[str, LayerSpan]]
    max_positions: int  # prompt tokens + max tokens: what each hop's ticket lets it compute and bill, and what its session reserves at open
    positions: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # why each hop is there: "route", "failover", "rerun"
    commitments: dict[int, SignedCommitment] = field(
        default_factory=dict
    )  # hop index -> latest signed commitment
    #: hop index -> each step as relayed (input frame, output hash, fingerprint being computed): the after-the-fact
    #: checks' packages (`step_work`)
    relayed: dict[int, list[tuple[bytes, bytes, asyncio.Future[bytes]]]] = field(default_factory=dict)
    #: the tokens the finished run drew (step s of a last hop made token s; an end-of-sequence included), how many
    #: steps each hop did in that run, and its sampling parameters: the last hop's check also checks these tokens
    drawn: list[int] = field(default_factory=list)
    #: hop index -> sessions opened on it for this job (a failover or re-run may come back to the same hop)
    sessions: dict[int, int] = field(default_factory=dict)
    final_steps: dict[int, int] = field(default_factory=dict)
    sampling: dict[str, object] = field(default_factory=dict)

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

    def relay(
        self, hop_index: int, frame: bytes, output: torch.Tensor, output_hash: bytes, pool: Executor
    ) -> None:
        """Record a relayed step; the fingerprint of the output (~ms for a vocabulary of logits) is computed on
        `pool`, off the event loop and off the token's critical path."""
        future = asyncio.get_running_loop().run_in_executor(pool, make_fingerprint, output)
        self.relayed.setdefault(hop_index, []).append((frame, output_hash, future))

    async def step_work(self, hop_index: int) -> list[StepWork]:
        """The hop's relayed steps with their fingerprints (in relay order)."""
        steps = self.relayed.get(hop_index, [])
        fingerprints = await asyncio.gather(*(f for _, _, f in steps))
        return [StepWork(frame, out, fp) for (frame, out, _), fp in zip(steps, fingerprints, strict=True)]

    def handed(self, hop_index: int, signed: SignedCommitment | None) -> None:
        """A worker's close answer carried its signed commitment for the job (a later one covers more sessions)."""
        if signed is not None:
            self.commitments[hop_index] = signed

    def shown(self, drawn: list[int], final_steps: dict[int, int], sampling: dict[str, object]) -> None:
        """The finished run drew `drawn` (the client was shown them); hop i did `final_steps[i]` steps in it."""
        self.drawn, self.final_steps, self.sampling = list(drawn), dict(final_steps), dict(sampling)

    def tokens_of(self, hop_index: int, last_layer: int) -> list[int] | None:
        """The tokens drawn from a last hop's steps (step s made token s), or None when the hop is not a last
        hop of the finished run or also served another run (its steps are then not one token each)."""
        steps = len(self.relayed.get(hop_index, []))
        if (
            self.hops[hop_index][1].end != last_layer
            or self.final_steps.get(hop_index) != steps
            or not 0 < steps <= len(self.drawn)
        ):
            return None
        return self.drawn[:steps]
