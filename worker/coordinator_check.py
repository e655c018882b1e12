"""Whether a ticket's signer is an approved coordinator on chain, cached, and forgotten at once when the
chain says a coordinator changed (`CoordinatorSet`, followed by `worker.chain_sync.ChainSync`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from shardnet.errors import ShardnetError

log = logging.getLogger(__name__)


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
    """The coordinator a job names on chain (from its JobSubmitted event), cached; None for a job not on chain."""

    def __init__(self, lookup: Callable[[int], str]) -> None:
        self._lookup = lookup
        self._cache: dict[int, str] = {}  # a job's coordinator never changes

    def __call__(self, job_id: int) -> str | None:
        if job_id not in self._cache:
            try:
                self._cache[job_id] = self._lookup(job_id)
            except ShardnetError:  # no such job (yet), or the chain cannot be read now
                return None
        return self._cache[job_id]
