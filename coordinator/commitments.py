"""Waiting for a job's commitments, woken by the chain's `CommitmentPosted` events instead of polling `getHops`.

The service's watcher hands every `CommitmentPosted` event to `CommitmentBoard.posted` (on the event loop);
`wait` reads the hops once (commitments posted before it started, or before a restart, are on chain) and then
sleeps until an event for the job arrives, re-checking at least every `RECHECK_S` which hops it still expects
(a worker marked down meanwhile is not waited for), until every expected hop committed or the deadline passed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from shardnet.chain.registry import Registry

log = logging.getLogger(__name__)

RECHECK_S = 1.0  # a worker marked down while we wait is noticed this late at most


class CommitmentBoard:
    """Hops of the jobs being settled that posted their commitment, as the chain's events tell."""

    def __init__(self) -> None:
        self._posted: dict[int, set[int]] = {}
        self._wakeups: dict[int, asyncio.Event] = {}

    def track(self, job_id: int) -> None:
        """Start recording commitments of `job_id` (before its sessions close, so no event is missed)."""
        self._posted.setdefault(job_id, set())
        self._wakeups.setdefault(job_id, asyncio.Event())

    def forget(self, job_id: int) -> None:
        self._posted.pop(job_id, None)
        self._wakeups.pop(job_id, None)

    def posted(self, job_id: int, hop_index: int) -> None:
        """A CommitmentPosted event (ignored for jobs nobody tracks: other coordinators' jobs)."""
        if job_id in self._posted:
            self._posted[job_id].add(hop_index)
            self._wakeups[job_id].set()

    async def wait(self, registry: Registry, job_id: int, expected: Callable[[int], bool], timeout_s: float) -> set[int]:
        """Wait until every hop `i` with `expected(i)` committed, or `timeout_s`; returns the committed hop indexes."""
        self.track(job_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        hops = await asyncio.to_thread(registry.get_hops, job_id)
        self._posted[job_id].update(h.index for h in hops if h.committed)
        while True:
            committed = set(self._posted[job_id])
            waiting = [h.index for h in hops if h.index not in committed and expected(h.index)]
            left = deadline - loop.time()
            if not waiting or left <= 0:
                if waiting:
                    log.warning("job %d: hops %s did not commit within %.0f s; they will not be paid", job_id,
                                waiting, timeout_s)
                return committed
            wakeup = self._wakeups[job_id]
            wakeup.clear()
            try:
                await asyncio.wait_for(wakeup.wait(), min(left, RECHECK_S))
            except TimeoutError:
                pass
