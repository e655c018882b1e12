"""Admission control of the OpenAI API: a request is paid on chain only when there is capacity to serve it.

    plan, place = await service_admission.admit(check)   # raises Busy (429) or NoCapacity (503): nothing paid
    ...pay, run...
    place.release()                                       # when the job is over (its sessions are closed)

At most `max_running` API jobs are paid and running at once; up to `max_waiting` more requests wait (each at
most `wait_s`) for a place, in a bounded queue; beyond that a request is refused at once with 429. A place is
given only when `check(pending)` finds the route's workers with a free session each: their /health
`max_sessions - sessions`, less the sessions this coordinator has admitted there but not opened yet
(`pending`). A worker's 429 is "busy", never "down" (see `WorkerDirectory.mark_busy`).

Memory: a job's worst case (its positions, prompt plus max_tokens, times the bytes a position costs each worker of
its route, from their /health `memory`) must fit in each worker's free cache memory, less what this coordinator
has admitted there but not opened yet (`unopened_bytes`): an opened session reserves its worst case on the worker
itself (`max_positions` at open), so from then on the worker's own `free_bytes` counts it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

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


#: (job id, node, tick) -> whether the job's session on node opened at or before tick (`WorkerDirectory.opened_by`)
OpenedBy = Callable[[int, str, int], bool]


class Place:
    """An admitted request's place: holds a running slot, a session on each of its route's workers, and there the
    cache memory of its worst case (`memory`: node -> bytes) until its session on that worker opens."""

    def __init__(self, admission: Admission[Any], memory: dict[str, int]) -> None:
        self._admission = admission
        self.nodes = list(memory)
        self.memory = memory
        self.job_id: int | None = None  # known once paid
        self._released = False

    def bind(self, job_id: int) -> None:
        """The request was paid as job `job_id`: its sessions opened from now on are its own."""
        self.job_id = job_id

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
        self._places: set[Place] = set()
        self._decide = asyncio.Lock()  # one admission decision at a time, so two cannot take the same session
        self._freed = asyncio.Event()

    def pending(self, node: str) -> int:
        return self._pending.get(node.lower(), 0)

    def unopened_bytes(self, node: str, opened_by: OpenedBy, tick: int) -> int:
        """Cache memory admitted on `node` whose session had not opened there at `tick` (of `opened_by`): a
        worker's /health read after `tick` does not count it yet."""
        node = node.lower()
        return sum(
            p.memory.get(node, 0)
            for p in self._places
            if p.job_id is None or not opened_by(p.job_id, node, tick)
        )

    async def admit(
        self, check: Callable[[], Awaitable[tuple[T, Iterable[str] | Mapping[str, int]] | None]]
    ) -> tuple[T, Place]:
        """Wait (bounded) for a running slot and for `check()` to return (plan, route nodes) rather than None
        (no free session or memory on the route yet); the nodes may map to the cache bytes the job reserves
        there. Raises Busy when the queue is full, NoCapacity after `wait_s`; anything `check` raises goes to
        the caller."""
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
                            memory: dict[str, int] = {}
                            for n in nodes:
                                got = nodes[n] if isinstance(nodes, Mapping) else 0
                                memory[n.lower()] = memory.get(n.lower(), 0) + got
                            place = Place(self, memory)
                            self._places.add(place)
                            for n in place.nodes:
                                self._pending[n] = self._pending.get(n, 0) + 1
                            self.running += 1
                            self.admitted += 1
                            return plan, place
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    self.refused += 1
                    raise NoCapacity(
                        f"no worker session or cache memory came free within {self.wait_s:g} s ({self.running} "
                        "requests running): nothing was paid; retry later"
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
        self._places.discard(place)
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


def memory_needed(health: dict[str, object], positions: int) -> int | None:
    """The cache bytes `positions` cost a worker (its /health `memory.bytes_per_position`); None when it
    reports no memory (no limit known)."""
    memory = health.get("memory")
    if not isinstance(memory, dict):
        return None
    try:
        per_position = int(memory["bytes_per_position"])
    except (KeyError, TypeError, ValueError):
        return None
    return positions * max(per_position, 0)


def has_free_memory(health: dict[str, object], needed: int | None, unopened_here: int) -> bool:
    """Whether a worker's free cache memory (its /health `memory.free_bytes`), less what this coordinator
    admitted there but not opened yet, holds `needed` more bytes."""
    if needed is None:
        return True
    memory = health.get("memory")
    try:
        free = int(memory["free_bytes"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        return False
    return free - unopened_here >= needed
