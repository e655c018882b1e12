"""The bookkeeping of training sessions on a worker: kept steps, budget, eviction, idle expiry."""

from __future__ import annotations

import time

import pytest
import torch

from shardnet.peer.errors import (
    PayloadTooLarge,
    SessionConflict,
    SessionNotFound,
    TicketRejected,
    TooManySessions,
)
from worker.training_sessions import KeptStep, StepEvicted, TrainingLimits, TrainingSessions


def _step(batch: int, n: int = 4) -> KeptStep:
    hidden = torch.zeros(batch, n, 8)
    return KeptStep(hidden, {}, tuple(hidden.shape))  # batch * 128 bytes


def test_a_step_kept_until_its_backward_then_refused_twice() -> None:
    sessions = TrainingSessions(TrainingLimits(), idle_timeout_s=60)
    s = sessions.open("a", "0xc", 0)
    sessions.keep(s, 0, _step(1))
    with pytest.raises(SessionConflict, match="already ran forward"):
        sessions.keep(s, 0, _step(1))
    assert sessions.take(s, 0).output_shape == (1, 4, 8)
    sessions.finish(s, 0)
    with pytest.raises(SessionConflict, match="already ran backward"):
        sessions.take(s, 0)
    with pytest.raises(SessionConflict, match="never ran forward"):
        sessions.take(s, 1)
    with pytest.raises(TicketRejected):
        sessions.get("a", "wrong")


def test_budget_evicts_the_oldest_and_refuses_one_step_over_it() -> None:
    sessions = TrainingSessions(TrainingLimits(max_kept_bytes=1024, max_kept_steps=3), idle_timeout_s=60)
    s = sessions.open("a", "0xc", 0)
    for step in range(4):
        sessions.keep(s, step, _step(2))  # 256 bytes each: the step count (3) evicts first
    assert list(s.kept) == [1, 2, 3] and s.kept_bytes == 768
    sessions.keep(s, 4, _step(4))  # 512 more: 3 steps and 1280 bytes: the oldest goes (1024 fits exactly)
    assert list(s.kept) == [2, 3, 4] and s.kept_bytes == 1024
    with pytest.raises(StepEvicted, match="run its forward again"):
        sessions.take(s, 1)
    with pytest.raises(PayloadTooLarge, match="budget"):
        sessions.keep(s, 9, _step(9))
    assert list(s.kept) == [2, 3, 4]  # a refused step evicts nobody


def test_limits_on_sessions_and_idle_expiry() -> None:
    sessions = TrainingSessions(TrainingLimits(max_sessions=1), idle_timeout_s=0.05)
    s = sessions.open("a", "0xc", 0)
    with pytest.raises(TooManySessions):
        sessions.open("b", "0xc", 0)
    time.sleep(0.1)
    with pytest.raises(SessionNotFound, match="expired"):
        sessions.get("a", s.token)
    sessions.open("b", "0xc", 0)  # the expired one no longer counts
    with pytest.raises(SessionConflict, match="already opened"):
        sessions.open("a", "0xc", 0)
