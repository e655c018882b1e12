"""Waiting for commitments is woken by CommitmentPosted events (not by polling getHops), within its bound."""

from __future__ import annotations

import asyncio
import time

from coordinator.commitments import RECHECK_S, CommitmentBoard
from shardnet.chain.registry import HopInfo


class _HopsOnChain:
    """The one view `CommitmentBoard.wait` reads (once): `getHops` of a job, counting the reads."""

    def __init__(self, committed: list[bool]) -> None:
        self.committed = committed
        self.reads = 0

    def get_hops(self, job_id: int) -> list[HopInfo]:
        self.reads += 1
        return [HopInfo(i, f"0x{i:040x}", 2 * i, 2 * i + 2, (b"\x01" if c else b"\x00") * 32)
                for i, c in enumerate(self.committed)]


def test_an_event_wakes_the_wait_at_once_and_hops_are_read_once() -> None:
    async def scenario() -> tuple[set[int], float, int]:
        board = CommitmentBoard()
        chain = _HopsOnChain([True, False, False])
        board.track(5)
        board.posted(9, 1)  # another coordinator's job: ignored

        async def post_later() -> None:
            await asyncio.sleep(0.05)
            board.posted(5, 1)
            await asyncio.sleep(0.05)
            board.posted(5, 2)

        t0 = time.perf_counter()
        poster = asyncio.ensure_future(post_later())
        committed = await board.wait(chain, 5, lambda i: True, timeout_s=30)  # type: ignore[arg-type]
        await poster
        return committed, time.perf_counter() - t0, chain.reads

    committed, seconds, reads = asyncio.run(scenario())
    assert committed == {0, 1, 2}
    assert seconds < RECHECK_S / 2  # woken by the events, not by the periodic re-check
    assert reads == 1


def test_the_wait_is_bounded_and_skips_hops_not_expected() -> None:
    async def scenario() -> tuple[set[int], float]:
        board = CommitmentBoard()
        chain = _HopsOnChain([False, False])
        t0 = time.perf_counter()
        committed = await board.wait(chain, 3, lambda i: i == 0, timeout_s=0.3)  # type: ignore[arg-type]
        return committed, time.perf_counter() - t0

    committed, seconds = asyncio.run(scenario())
    assert committed == set() and 0.3 <= seconds < 1.0

    async def nothing_expected() -> float:
        t0 = time.perf_counter()
        await CommitmentBoard().wait(_HopsOnChain([False]), 4, lambda i: False, timeout_s=30)  # type: ignore[arg-type]
        return time.perf_counter() - t0

    assert asyncio.run(nothing_expected()) < 0.1
