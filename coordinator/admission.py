"""Admission control of the OpenAI API: a request is paid on chain only when there is capacity to serve it.

    plan, place = await service_admission.admit(check)   # raises Busy (429) or NoCapacity (503): nothing paid
    ...pay, run...
    place.release()                                       # when the job is over (its sessions are closed)

At most `max_running` API jobs are paid and running at once; up to `max_waiting` more requests wait (each at
most `wait_s`) for a place, in a bounded queue; beyond that a request is refused at once with 429. A place is
given only when `check(pending)` finds the route's workers with a free session each: their /health
`max_sessions - sessions`, less the sessions this coordinator has admitted there but not opened yet
(`pending`). A worker's 429 is "busy", never "down" (see `WorkerDirectory.mark_busy`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, TypeVar

from shardnet.errors import ShardnetError

log = logging.getLogger(__name__)

T = TypeVar("T")
RECHECK_S = 0.2  # how often a waiting request looks for capacity again (also woken by every release)


class Refused(ShardnetError):
    """Not admitted: nothing was paid. `status` is the HTTP answer (429 or 503)."""

    status = 503


class Busy(Refused):
    """The queue of waiting requests is full."""

    status = 429


class NoCapacity(Refused):
    """No place came free within the wait."""

    status = 503


class Place:
    """An admitted request's place: holds a running slot and a session on each of its route's workers."""

    def __init__(self, admission: Admission, nodes: list[str]) -> None:
        self._admission = admission
        self.nodes = nodes
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._admission._release(self)


class Admission(Generic[T]):
    def __init__(self, *, max_running: int, max_waiting: int, wait_s: float) -> None:
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.wait_s = wait_s
        self.running = 0
        self.waiting = 0
        self.admitted = 0
        self.refused = 0
        self._pending: dict[str, int] = {}  # node -> admitted jobs routed through it
        self._decide = asyncio.Lock()  # one admission decision at a time, so two cannot take the same session
        self._freed = asyncio.Event()

    def pending(self, node: str) -> int:
        return self._pending.get(node.lower(), 0)

    async def admit(self, check: Callable[[], Awaitable[tuple[T, Iterable[str]] | None]]) -> tuple[T, Place]:
        """Wait (bounded) for a running slot and for `check()` to return (plan, route nodes) rather than None
        (no free session on the route yet). Raises Busy when the queue is full, NoCapacity after `wait_s`;
        anything `check` raises goes to the caller."""
        if self.waiting >= self.max_waiting:
            self.refused += 1
            raise Busy(
                f"the coordinator is at capacity ({self.running} requests running, {self.waiting} waiting, "
                f"the queue's limit): nothing was paid; retry in a few seconds"
            )
        self.waiting += 1
        deadline = asyncio.get_running_loop().time() + self.wait_s
        try:
            while True:
                async with self._decide:
                    if self.running < self.max_running:
                        found = await check()
                        if found is not None:
                            plan, nodes = found
                            place = Place(self, [n.lower() for n in nodes])
                            for n in place.nodes:
                                self._pending[n] = self._pending.get(n, 0) + 1
                            self.running += 1
                            self.admitted += 1
                            return plan, place
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    self.refused += 1
                    raise NoCapacity(
                        f"no worker session came free within {self.wait_s:g} s ({self.running} requests "
                        "running): nothing was paid; retry later"
                    )
                self._freed.clear()
                try:
                    await asyncio.wait_for(self._freed.wait(), min(RECHECK_S, left))
                except TimeoutError:
                    pass
        finally:
            self.waiting -= 1

    def _release(self, place: Place) -> None:
        self.running -= 1
        for n in place.nodes:
            left = self._pending.get(n, 0) - 1
            if left > 0:
                self._pending[n] = left
            else:
                self._pending.pop(n, None)
        self._freed.set()

    def describe(self) -> dict[str, int]:
        return {
            "running": self.running,
            "waiting": self.waiting,
            "max_running": self.max_running,
            "max_waiting": self.max_waiting,
            "admitted": self.admitted,
            "refused": self.refused,
        }


def has_free_session(health: dict[str, object], pending_here: int, open_here: int) -> bool:
    """Whether a worker (its /health answer) can take one more session of ours: its free sessions, less the ones
    admitted to it that are not open yet (`pending_here` admitted, `open_here` of them already open)."""
    try:
        sessions = int(health.get("sessions", 0))  # type: ignore[call-overload]
        max_sessions = int(health.get("max_sessions", 0))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return False
    if max_sessions <= 0:
        return True  # a worker that states no limit
    not_open_yet = max(0, pending_here - open_here)
    return sessions + not_open_yet < max_sessions
