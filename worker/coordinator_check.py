"""Whether a ticket's signer is an approved coordinator on chain, cached, and forgotten at once when the
chain says a coordinator changed (`CoordinatorSet`, followed by `worker.chain_sync.ChainSync`)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from shardnet.errors import ShardnetError
from shardnet.peer.errors import TicketRejected

if TYPE_CHECKING:
    from worker.sessions import Session

log = logging.getLogger(__name__)

#: A job the chain does not know at a session's open is looked up once more after this many seconds.
JOB_LOOKUP_RETRY_S = 0.5


class CoordinatorCheck:
    """`is_coordinator(address)` on chain, cached (a yes for `ttl_s`, a no for a shorter time).

    `forget(address)` drops the cached answer (called from the chain thread on `CoordinatorSet`); a lookup
    that was already in flight when it was called does not store its (possibly stale) answer.
    """

    def __init__(
        self, lookup: Callable[[str], bool], ttl_s: float = 60.0, negative_ttl_s: float = 5.0
    ) -> None:
        self._lookup = lookup
        self._ttl_s = ttl_s
        self._negative_ttl_s = negative_ttl_s
        self._cache: dict[str, tuple[bool, float]] = {}
        self._generation = 0  # bumped by every forget: answers looked up before it are not cached
        self._lock = threading.Lock()

    def __call__(self, address: str) -> bool:
        key = address.lower()
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            generation = self._generation
        if hit is not None and now < hit[1]:
            return hit[0]
        ok = bool(self._lookup(address))
        with self._lock:
            if generation == self._generation:
                self._cache[key] = (ok, now + (self._ttl_s if ok else self._negative_ttl_s))
        return ok

    def forget(self, address: str | None = None) -> None:
        """Drop the cached answer for `address` (every answer with None): the next ticket asks the chain."""
        with self._lock:
            self._generation += 1
            if address is None:
                self._cache.clear()
            else:
                self._cache.pop(address.lower(), None)
        log.info("coordinator approval cache dropped for %s", address or "every coordinator")


class JobCoordinatorCheck:
    """The coordinator a job names on chain, cached (bounded, oldest dropped); None for a job not on chain.

    `remember` fills the cache from the JobSubmitted events the worker's chain follower is pushed
    (`worker.chain_sync.ChainSync`), so a session's check usually needs no chain read at all.
    """

    def __init__(self, lookup: Callable[[int], str], max_cached: int = 65_536) -> None:
        self._lookup = lookup
        self._max_cached = max_cached
        self._cache: OrderedDict[int, str] = OrderedDict()  # a job's coordinator never changes
        self._lock = threading.Lock()

    def cached(self, job_id: int) -> str | None:
        with self._lock:
            return self._cache.get(job_id)

    def remember(self, job_id: int, coordinator: str) -> None:
        with self._lock:
            self._cache[job_id] = coordinator
            self._cache.move_to_end(job_id)
            while len(self._cache) > self._max_cached:
                self._cache.popitem(last=False)

    def __call__(self, job_id: int) -> str | None:
        if (named := self.cached(job_id)) is not None:
            return named
        try:
            named = self._lookup(job_id)
        except ShardnetError:  # no such job (yet), or the chain cannot be read now
            return None
        self.remember(job_id, named)
        return named


def job_refusal(job_id: int, signer: str, named: str | None) -> str | None:
    """Why a ticket of `signer` for job `job_id` is refused when the chain names `named` (None: it is not)."""
    if named is not None and named.lower() == signer.lower():
        return None
    return (
        f"ticket for job {job_id} is signed by {signer}, but "
        + (f"the job names the coordinator {named}" if named else "the job is not on chain")
        + ": only the job's own coordinator can hand out its sessions"
    )


def start_job_check(
    check: Callable[[int], str | None], job_id: int, signer: str
) -> asyncio.Future[str | None] | None:
    """Check at a session's open that job `job_id` names `signer`, without making the open wait for the chain:
    a cached answer is judged now (raises TicketRejected); otherwise the lookup starts on a thread and its future
    is returned, for `finish_job_check` to judge before the session's first output leaves the worker."""
    cached = getattr(check, "cached", None)
    named = cached(job_id) if cached is not None else None
    if named is not None:
        if (why := job_refusal(job_id, signer, named)) is not None:
            raise TicketRejected(why)
        return None
    return asyncio.get_running_loop().run_in_executor(None, _look_up_twice, check, job_id)


def _look_up_twice(check: Callable[[int], str | None], job_id: int) -> str | None:
    """The lookup overlaps the first step's compute, so it can afford a second try: a chain node a block behind
    the coordinator's (a job mined a moment ago) is not taken for a job that does not exist."""
    named = check(job_id)
    if named is None:
        time.sleep(JOB_LOOKUP_RETRY_S)
        named = check(job_id)
    return named


async def finish_job_check(session: Session, close: Callable[[str, str], object]) -> None:
    """Wait for the session's pending job check (see `start_job_check`); on a refusal the session is closed
    unpaid (no job, so no commitment is signed for it) and TicketRejected raised: its output never leaves."""
    pending = session.job_check
    if pending is None:
        return
    named = await pending
    session.job_check = None
    if (why := job_refusal(session.job_id or 0, session.coordinator, named)) is not None:
        session.job_id = None
        close(session.session_id, "failed")
        raise TicketRejected(why)
