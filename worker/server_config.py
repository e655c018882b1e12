"""What a worker's HTTP server is configured with: its limits, the block it serves, and the (cached) on-chain check
that a ticket's signer is an approved coordinator."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from shardnet.errors import ShardnetError
from shardnet.span import LayerSpan


@dataclass(frozen=True)
class ServerLimits:
    max_sessions: int = 16
    max_per_coordinator: int = 16
    max_length: int = 2048
    max_memory_bytes: int = 1 << 30
    idle_timeout_s: float = 300.0
    max_body_bytes: int = 64 << 20
    forward_timeout_s: float = 60.0


@dataclass(frozen=True)
class BlockInfo:
    """What the server must know about the block it serves (from `shardnet.model.Block` and the manifest)."""

    span: LayerSpan
    num_layers: int
    is_first: bool
    is_last: bool
    hidden_size: int
    vocab_size: int | None
    kv_bytes_per_token: int


class CoordinatorCheck:
    """`is_coordinator(address)` on chain, cached (a yes for `ttl_s`, a no for a shorter time)."""

    def __init__(
        self, lookup: Callable[[str], bool], ttl_s: float = 60.0, negative_ttl_s: float = 5.0
    ) -> None:
        self._lookup = lookup
        self._ttl_s = ttl_s
        self._negative_ttl_s = negative_ttl_s
        self._cache: dict[str, tuple[bool, float]] = {}

    def __call__(self, address: str) -> bool:
        hit = self._cache.get(address)
        now = time.monotonic()
        if hit is not None and now < hit[1]:
            return hit[0]
        ok = bool(self._lookup(address))
        self._cache[address] = (ok, now + (self._ttl_s if ok else self._negative_ttl_s))
        return ok


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
