"""Inference sessions held by a worker: their KV caches, step hashes, outputs, and the limits on them.

`SessionManager` is plain, synchronous bookkeeping (the aiohttp handlers call it from the event loop):
it enforces the overall and per-coordinator session limits, the per-session length limit and a memory
budget, closes sessions idle past the timeout, and evicts the least recently used idle session when
full. A session opened with `max_positions` reserves its worst case (`max_positions x bytes_per_position`)
up front: it is refused at open (503 `memory_full`, busy) rather than failing mid-generation, its steps
within the reservation always find room, and it is never evicted to make room for another. A reservation
no step has touched within `unused_reservation_s` is closed (an approved coordinator cannot park memory it
never uses until the idle timeout). Session ids are single use: each is remembered until its ticket
expires (a ticket is refused after that anyway), at most `max_retired` of them. Every session
that leaves (closed, evicted, expired, drained) goes through `on_close`, so its
step hashes are persisted and its job can be committed.
"""

from __future__ import annotations

import asyncio
import heapq
import hmac
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from shardnet.peer.errors import (
    MEMORY_FULL,
    SESSIONS_FULL,
    PayloadTooLarge,
    SessionConflict,
    SessionNotFound,
    TicketRejected,
    TooManySessions,
    WorkerUnavailable,
)

log = logging.getLogger(__name__)


class ModelSession(Protocol):
    """What a worker needs from `shardnet.model`'s BlockSession."""

    @property
    def length(self) -> int: ...

    def step(self, x: Any, start_pos: int) -> Any: ...


@dataclass(frozen=True)
class NextHop:
    """Push mode: where a session forwards its outputs."""

    url: str
    session_id: str
    token: str  # the next worker's session token (X-Session-Token), given to the coordinator at its open


@dataclass(eq=False)
class Session:
    session_id: str
    coordinator: str
    job_id: int | None
    codec: str
    next_hop: NextHop | None
    compute: ModelSession
    opened_at: float
    last_used: float
    #: the ticket's bound on positions (prompt + max tokens): no step may go beyond it (0: no job, no bound)
    max_positions: int = 0
    step_hashes: list[bytes] = field(default_factory=list)  # of the frames sent (X-Step-Hash)
    leaves: list[bytes] = field(default_factory=list)  # committed per step (worker.verification.commit_step)
    committed: list[tuple[bytes, bytes]] = field(default_factory=list)  # (input hash, fingerprint) per step
    output_frames: list[bytes] = field(default_factory=list)
    output_bytes: int = 0
    reserved_bytes: int = 0  # the worst case reserved at open (max_positions x bytes_per_position), or 0
    busy: int = 0
    closed: bool = False
    compact: bool = False  # the last worker answers steps with the top-k frame (worker.push_links)
    answer_to: str | None = None  # the last worker: where it sends answers of steps with X-Answer-Id
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: the chain's answer to "does the job name this coordinator?", looked up while the first step computes
    job_check: asyncio.Future[str | None] | None = None
    #: the session's credential, returned only to the coordinator that opened it: /step, /outputs and
    #: DELETE need it in X-Session-Token, so a leaked session id alone reads or ends nothing
    token: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def length(self) -> int:
        return int(self.compute.length)

    @property
    def steps(self) -> int:
        return len(self.step_hashes)


CloseHook = Callable[[Session, str], None]


class SessionManager:
    """Sessions by id, in least-recently-used order."""

    def __init__(
        self,
        *,
        max_sessions: int,
        max_per_coordinator: int,
        max_length: int,
        max_memory_bytes: int,
        kv_bytes_per_token: int,
        idle_timeout_s: float,
        on_close: CloseHook,
        clock: Callable[[], float] = time.monotonic,
        output_bytes_per_position: int = 0,
        unused_reservation_s: float = 30.0,
        max_retired: int = 1_000_000,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_sessions = max_sessions
        self.max_per_coordinator = max_per_coordinator
        self.max_length = max_length
        self.max_memory_bytes = max_memory_bytes
        self.kv_bytes_per_token = kv_bytes_per_token
        self.output_bytes_per_position = output_bytes_per_position  # the most a position's kept output takes
        self.bytes_per_position = kv_bytes_per_token + output_bytes_per_position
        self.idle_timeout_s = idle_timeout_s
        self._on_close = on_close
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self.unused_reservation_s = unused_reservation_s  # a reservation with no step by then is closed
        self.max_retired = max_retired
        self._wall_clock = wall_clock  # tickets expire in unix time
        # ids used here, until their ticket expires: a ticket opens its session once. The heap orders them by
        # expiry (unix time), so forgetting the expired ones is O(log n) each and the set stays bounded.
        self._retired: set[str] = set()
        #: why recent sessions ended when it was not their owner's close (evicted, expired, drained, failed):
        #: a later step of one is told so (the newest 10,000)
        self._ended: OrderedDict[str, str] = OrderedDict()
        self._retired_by_expiry: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def memory_bytes(self, session: Session, extra_tokens: int = 0) -> int:
        """What `session` holds (after `extra_tokens` more positions): its cache and kept outputs, or its
        reservation while that is larger."""
        used = (session.length + extra_tokens) * self.kv_bytes_per_token + session.output_bytes
        used += extra_tokens * self.output_bytes_per_position
        return max(used, session.reserved_bytes)

    def total_memory_bytes(self) -> int:
        return sum(self.memory_bytes(s) for s in self._sessions.values())

    def free_memory_bytes(self) -> int:
        return max(0, self.max_memory_bytes - self.total_memory_bytes())

    # -- opening and closing
    def open(
        self,
        *,
        session_id: str,
        coordinator: str,
        job_id: int | None,
        codec: str,
        next_hop: NextHop | None,
        make_compute: Callable[[], ModelSession],
        max_positions: int = 0,
        reserve_positions: int = 0,
        expires_at: float | None = None,
    ) -> Session:
        """Open a session, evicting the least recently used idle one if the worker is full. `max_positions` is the
        ticket's bound (no step goes beyond it); with `reserve_positions` (capped by it), reserve the worst-case
        memory (503 `memory_full` when it does not fit now). `expires_at` (unix time) is the ticket's expiry: the id
        is remembered (refused again) until then; without it, for the idle timeout."""
        self._forget_expired_ids()
        if session_id in self._sessions or session_id in self._retired:
            raise SessionConflict(
                f"session {session_id!r} was already opened on this worker: ask for a new ticket"
            )
        self.expire_idle()
        held = sum(1 for s in self._sessions.values() if s.coordinator == coordinator)
        if held >= self.max_per_coordinator:
            raise TooManySessions(
                f"coordinator {coordinator} already holds {held} sessions here (limit "
                f"{self.max_per_coordinator}): close finished sessions first",
                code=SESSIONS_FULL,
            )
        if max_positions:
            reserve_positions = min(reserve_positions, max_positions)
        reserve = min(reserve_positions, self.max_length) * self.bytes_per_position
        if reserve > self.max_memory_bytes:
            raise PayloadTooLarge(
                f"{reserve_positions} positions need {reserve / 2**20:.2f} MiB of cache, more than this worker's "
                f"whole budget of {self.max_memory_bytes / 2**20:.2f} MiB: ask for fewer tokens"
            )
        if reserve and self.total_memory_bytes() + reserve > self.max_memory_bytes:
            raise WorkerUnavailable(
                f"this worker's cache memory is taken: {self.free_memory_bytes() / 2**20:.2f} MiB free, "
                f"{reserve_positions} positions need {reserve / 2**20:.2f} MiB; retry when a session closes",
                code=MEMORY_FULL,
            )
        if len(self._sessions) >= self.max_sessions and not self._evict_lru(
            f"full ({self.max_sessions} sessions)"
        ):
            raise WorkerUnavailable(
                f"worker is full: {len(self._sessions)} sessions, all busy; retry later or use another worker",
                code=SESSIONS_FULL,
            )
        now = self._clock()
        session = Session(
            session_id=session_id,
            coordinator=coordinator,
            job_id=job_id,
            codec=codec,
            next_hop=next_hop,
            compute=make_compute(),
            opened_at=now,
            last_used=now,
            max_positions=max_positions,
            reserved_bytes=reserve,
        )
        self._sessions[session_id] = session
        self._retire(
            session_id, self._wall_clock() + self.idle_timeout_s if expires_at is None else expires_at
        )
        return session

    def retired_ids(self) -> int:
        """How many used session ids are remembered now (bounded by their tickets' expiry and `max_retired`)."""
        return len(self._retired)

    def _retire(self, session_id: str, expires_at: float) -> None:
        self._retired.add(session_id)
        heapq.heappush(self._retired_by_expiry, (expires_at, session_id))
        while len(self._retired) > self.max_retired:  # the soonest to expire go first
            _, oldest = heapq.heappop(self._retired_by_expiry)
            self._retired.discard(oldest)
            log.warning(
                "forgetting used session id %s before its ticket expires (%d ids held)",
                oldest,
                len(self._retired),
            )

    def _forget_expired_ids(self) -> None:
        now = self._wall_clock()
        heap = self._retired_by_expiry
        while heap and heap[0][0] < now:  # its ticket is refused as expired from now on
            self._retired.discard(heapq.heappop(heap)[1])

    def get(self, session_id: str, token: str | None = None) -> Session:
        """The open session `session_id`, marked as just used. With `token` (what the caller sent), a
        wrong or missing one raises `TicketRejected` (401) and leaves the session untouched."""
        session = self._sessions.get(session_id)
        if session is None and session_id in self._ended:
            raise SessionNotFound(
                f"session {session_id!r} was {self._ended[session_id]}"
                + (
                    " (least recently used, idle and without a reservation, under memory pressure)"
                    if self._ended[session_id] == "evicted"
                    else ""
                )
                + ": open a new session, with max_positions to reserve its memory, and replay its tokens"
            )
        if session is None:
            raise SessionNotFound(
                f"no open session {session_id!r} on this worker (never opened, closed, or evicted after "
                f"{self.idle_timeout_s:g} s idle): open a new session and replay its tokens"
            )
        if token is not None and not hmac.compare_digest(token.encode(), session.token.encode()):
            raise TicketRejected(
                f"wrong or missing X-Session-Token for session {session_id!r}: only the coordinator that "
                "opened it may use it (send the session_token its open answered)"
            )
        session.last_used = self._clock()
        self._sessions.move_to_end(session_id)
        return session

    def close(self, session_id: str, reason: str = "closed") -> Session:
        session = self.get(session_id)
        self._remove(session, reason)
        return session

    def close_all(self, reason: str) -> list[Session]:
        sessions = list(self._sessions.values())
        for session in sessions:
            self._remove(session, reason)
        return sessions

    def expire_idle(self) -> list[Session]:
        """Close every session idle for longer than the timeout, and every reservation no step has used within
        `unused_reservation_s` of its open."""
        now = self._clock()
        stale = [
            s
            for s in self._sessions.values()
            if not s.busy
            and (
                now - s.last_used > self.idle_timeout_s
                or (s.reserved_bytes and not s.step_hashes and now - s.opened_at > self.unused_reservation_s)
            )
        ]
        for session in stale:
            self._remove(session, "expired")
        return stale

    # -- per-step checks
    def check_step(self, session: Session, start_pos: int, n_tokens: int) -> None:
        """Raise unless a step of `n_tokens` at `start_pos` fits the session's position and the limits."""
        if start_pos != session.length:
            raise SessionConflict(
                f"X-Start-Pos is {start_pos} but session {session.session_id!r} has {session.length} positions "
                f"cached: send position {session.length} next"
            )
        if session.max_positions and start_pos + n_tokens > session.max_positions:
            raise PayloadTooLarge(
                f"session {session.session_id!r} would reach {start_pos + n_tokens} positions, over its ticket's "
                f"max_positions {session.max_positions}: the coordinator bounded this job's positions"
            )
        if start_pos + n_tokens > self.max_length:
            raise PayloadTooLarge(
                f"session {session.session_id!r} would reach {start_pos + n_tokens} positions, over this "
                f"worker's max length {self.max_length}: start a new session"
            )
        before, after = self.memory_bytes(session), self.memory_bytes(session, n_tokens)
        needed = after - before  # 0 while the session stays within its reservation
        if after > self.max_memory_bytes:
            # no eviction can make room: refuse without closing anybody else's session
            raise PayloadTooLarge(
                f"this step needs {needed / 2**20:.2f} MiB of cache on top of the session's "
                f"{self.memory_bytes(session) / 2**20:.2f} MiB, over this worker's whole cache budget of "
                f"{self.max_memory_bytes / 2**20:.2f} MiB: send fewer tokens per step or use a worker with a "
                "larger --max-cache-mb"
            )
        while needed and self.total_memory_bytes() + needed > self.max_memory_bytes:
            if not self._evict_lru("memory budget", keep=session):
                raise WorkerUnavailable(
                    f"worker memory budget ({self.max_memory_bytes / 2**20:.2f} MiB for caches) is used up by "
                    "busy or reserved sessions: retry later or use another worker",
                    code=MEMORY_FULL,
                )

    # -- internals
    def _evict_lru(self, why: str, keep: Session | None = None) -> bool:
        for session in self._sessions.values():  # oldest use first
            if session is not keep and not session.busy and not session.reserved_bytes:  # a reservation holds
                log.info("evicting session %s (least recently used; %s)", session.session_id, why)
                self._remove(session, "evicted")
                return True
        return False

    def _remove(self, session: Session, reason: str) -> None:
        self._sessions.pop(session.session_id, None)
        if session.closed:
            return
        if reason != "closed":
            self._ended[session.session_id] = reason
            while len(self._ended) > 10_000:
                self._ended.popitem(last=False)
        session.closed = True
        try:
            self._on_close(session, reason)
        except Exception:  # the hook persists state; a failure there must not wedge the server
            log.exception("recording the close of session %s failed", session.session_id)
