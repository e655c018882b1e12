"""An in-process job through a chain of hops, recording what each hop received, sent and committed.

For calibration, the cheat sweep and tests: a hop is anything with `step(x, start_pos, step) -> output`
(an honest block session, or a cheat from `shardnet.verify.cheats`). Each hop fingerprints what it
sends (`make_fingerprint`), as a worker does before committing. The coordinator's part is the token:
the argmax of the last hop's logits, or the job's seeded draw.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import torch

from shardnet.model.block import Block
from shardnet.model.session import check_chain
from shardnet.verify.check import GREEDY, Sampling
from shardnet.verify.fingerprint import make_fingerprint
from shardnet.verify.sampler import sample_token


class Hop(Protocol):
    """One hop of a job as a worker serves it: a step's input in, the output it sends out."""

    def step(self, x: torch.Tensor, start_pos: int, step: int) -> torch.Tensor: ...

    def close(self) -> None: ...


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run with `count` torch threads (None: leave as is), restoring the count afterwards."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class HonestHop:
    """An honest worker: a block session, optionally at its own thread count."""

    def __init__(self, block: Block, max_length: int, threads: int | None = None) -> None:
        self.session = block.new_session(max_length=max_length)
        self.threads = threads

    def step(self, x: torch.Tensor, start_pos: int, step: int) -> torch.Tensor:
        with torch_threads(self.threads):
            return self.session.step(x, start_pos)

    def close(self) -> None:
        self.session.close()


@dataclass
class HopTrace:
    """What one hop received, sent and committed, step by step."""

    inputs: list[torch.Tensor] = field(default_factory=list)
    outputs: list[torch.Tensor] = field(default_factory=list)
    fingerprints: list[bytes] = field(default_factory=list)

    @property
    def positions(self) -> int:
        return sum(int(x.shape[1]) for x in self.inputs)


@dataclass
class JobTrace:
    """A job's hops and the tokens it emitted (one per step)."""

    hops: list[HopTrace]
    tokens: list[int]


HopFactory = Callable[[int], Hop]  # hop index -> a fresh hop for one job


def run_job(
    hop_factories: Sequence[HopFactory],
    prompt: torch.Tensor,
    steps: int,
    sampling: Sampling = GREEDY,
) -> JobTrace:
    """Generate `steps` tokens after `prompt` [1, p] through the hops; step 0 is the prompt."""
    hops = [make(i) for i, make in enumerate(hop_factories)]
    traces = [HopTrace() for _ in hops]
    tokens: list[int] = []
    x, pos = prompt, 0
    try:
        for s in range(steps):
            h = x
            for hop, trace in zip(hops, traces, strict=True):
                trace.inputs.append(h)
                h = hop.step(h, pos, s)
                trace.outputs.append(h)
                trace.fingerprints.append(make_fingerprint(h))
            pos += int(x.shape[1])
            logits = h[0, -1].float()
            if sampling.seed is None:
                token = int(torch.argmax(logits))
            else:
                token = sample_token(logits, sampling.seed, s, sampling.temperature)
            tokens.append(token)
            x = torch.tensor([[token]], dtype=torch.int64)
    finally:
        for hop in hops:
            hop.close()
    return JobTrace(traces, tokens)


def honest_factories(
    blocks: Sequence[Block], max_length: int, threads: int | None = None
) -> list[HopFactory]:
    """One honest hop factory per block of a chain."""
    check_chain(blocks)

    def factory(block: Block) -> HopFactory:
        return lambda _i: HonestHop(block, max_length, threads)

    return [factory(b) for b in blocks]
