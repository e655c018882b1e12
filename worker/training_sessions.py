"""Training sessions held by a worker: the inputs kept for each step's backward pass, and their limits.

A training step's forward keeps its input hidden states and the adapters the client sent (the backward
recomputes the forward with autograd, so nothing else is kept between the two calls). What a session
keeps is bounded by `TrainingLimits.max_kept_bytes` and `max_kept_steps`: a forward that would go over
evicts the session's oldest kept steps (their backward then gets 410 and says so), and one step larger
than the whole budget is refused (413). No optimizer state lives here: the client steps its optimizer.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from shardnet.peer.errors import (
    PayloadTooLarge,
    SessionConflict,
    SessionNotFound,
    TicketRejected,
    TooManySessions,
    WorkerAPIError,
)


class StepEvicted(WorkerAPIError):
    """The inputs of a step were evicted (memory budget) before its backward arrived."""

    status = 410


@dataclass(frozen=True)
class TrainingLimits:
    max_sessions: int = 4  # training sessions open at once on this worker
    max_kept_bytes: int = 256 << 20  # inputs and adapters kept for backward passes, per session
    max_kept_steps: int = 64  # forwards awaiting their backward, per session
    max_batch: int = 64  # sequences per step
    backward_factor: int = 2  # a backward position is paid as this many forward ones: the model manifest's


@dataclass
class KeptStep:
    """What a forward keeps for its backward: its input, the adapters, and the output's shape."""

    hidden: torch.Tensor
    adapters: dict[str, torch.Tensor]
    output_shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        tensors = [self.hidden, *self.adapters.values()]
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(eq=False)
class TrainingSession:
    session_id: str
    coordinator: str
    job_id: int
    last_used: float
    kept: OrderedDict[int, KeptStep] = field(default_factory=OrderedDict)
    evicted: set[int] = field(default_factory=set)
    done: set[int] = field(default_factory=set)  # steps whose backward ran (one backward per forward)
    forward_positions: int = 0
    backward_positions: int = 0
    max_positions: int = 0  # the ticket's bound on billed positions (forward + factor x backward); 0: none
    step_hashes: list[bytes] = field(default_factory=list)  # of every forward and backward answer, in order
    closed: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    token: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def kept_bytes(self) -> int:
        return sum(step.nbytes for step in self.kept.values())


class TrainingSessions:
    """Training sessions by id, with the per-session budget for kept steps."""

    def __init__(
        self,
        limits: TrainingLimits,
        idle_timeout_s: float,
        on_close: Callable[[TrainingSession, str], None] | None = None,
    ) -> None:
        self.limits = limits
        self.idle_timeout_s = idle_timeout_s
        self.on_close = on_close  # (session, reason: closed | expired | shutdown), after it is removed
        self._sessions: dict[str, TrainingSession] = {}
        self._retired: set[str] = set()

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, session_id: str, coordinator: str, job_id: int) -> TrainingSession:
        if session_id in self._retired:
            raise SessionConflict(
                f"session {session_id!r} was already opened on this worker: ask for a new ticket"
            )
        self.expire_idle()
        if len(self._sessions) >= self.limits.max_sessions:
            raise TooManySessions(
                f"this worker holds {len(self._sessions)} training sessions (limit {self.limits.max_sessions}): "
                "close finished ones or use another worker"
            )
        session = TrainingSession(session_id, coordinator, job_id, time.monotonic())
        self._sessions[session_id] = session
        self._retired.add(session_id)
        return session

    def get(self, session_id: str, token: str) -> TrainingSession:
        self.expire_idle()  # an abandoned session frees what it kept at the next call of anyone
        session = self._sessions.get(session_id)
        if session is None:
            raise SessionNotFound(
                f"no open training session {session_id!r} on this worker (never opened, closed, or expired "
                f"after {self.idle_timeout_s:g} s idle): open a new one with a new ticket"
            )
        if not hmac.compare_digest(token.encode(), session.token.encode()):
            raise TicketRejected(
                f"wrong or missing X-Session-Token for training session {session_id!r}: send the "
                "session_token its open answered"
            )
        session.last_used = time.monotonic()
        return session

    def close(self, session: TrainingSession, reason: str = "closed") -> None:
        if session.closed:
            return
        session.closed = True
        session.kept.clear()
        self._sessions.pop(session.session_id, None)
        if self.on_close is not None:
            self.on_close(session, reason)

    def close_all(self, reason: str = "shutdown") -> None:
        for session in list(self._sessions.values()):
            self.close(session, reason)

    def expire_idle(self) -> None:
        now = time.monotonic()
        for session in list(self._sessions.values()):
            if not session.lock.locked() and now - session.last_used > self.idle_timeout_s:
                self.close(session, "expired")

    # -- kept steps
    def keep(self, session: TrainingSession, step_id: int, step: KeptStep) -> None:
        """Keep `step` for its backward, evicting the session's oldest kept steps to stay in budget."""
        if step_id in session.kept or step_id in session.done or step_id in session.evicted:
            raise SessionConflict(
                f"step {step_id} already ran forward in training session {session.session_id!r}: "
                "number each step anew (X-Step-Id)"
            )
        budget = self.limits.max_kept_bytes
        if step.nbytes > budget:
            raise PayloadTooLarge(
                f"this step keeps {step.nbytes / 2**20:.2f} MiB for its backward, over the training "
                f"session's budget of {budget / 2**20:.2f} MiB: send fewer sequences or tokens per step"
            )
        while session.kept and (
            session.kept_bytes + step.nbytes > budget or len(session.kept) >= self.limits.max_kept_steps
        ):
            old_id, _old = session.kept.popitem(last=False)
            session.evicted.add(old_id)
        session.kept[step_id] = step

    def take(self, session: TrainingSession, step_id: int) -> KeptStep:
        """The kept step `step_id`, for its (one) backward; 409 never run or already done, 410 evicted."""
        if step_id in session.evicted:
            raise StepEvicted(
                f"the inputs of step {step_id} were evicted to keep training session {session.session_id!r} "
                f"within its budget ({self.limits.max_kept_bytes / 2**20:.2f} MiB, "
                f"{self.limits.max_kept_steps} steps): run its forward again, then its backward"
            )
        if step_id in session.done:
            raise SessionConflict(f"step {step_id} already ran backward: run a new forward first")
        step = session.kept.get(step_id)
        if step is None:
            raise SessionConflict(
                f"step {step_id} never ran forward in training session {session.session_id!r}: "
                "send its forward first (POST .../forward with the same X-Step-Id)"
            )
        return step

    def finish(self, session: TrainingSession, step_id: int) -> None:
        session.kept.pop(step_id, None)
        session.done.add(step_id)
