"""A session alone on a worker does not wait out the batching window: its decode step goes straight to the
compute thread; a step while another session is active still waits to be batched with it."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from worker.batching import StepBatcher
from worker.finishing import StepOutput
from worker.limits import ServerLimits
from worker.metrics import WorkerMetrics
from worker.sessions import Session

HOUR = 3600.0


class _Compute:
    def step(self, x: torch.Tensor, start_pos: int) -> torch.Tensor:
        return x * 2


class _Finisher:
    def finish(self, session: Session, out: Any, n: int, index: int, input_hash: bytes) -> StepOutput:
        return (b"frame", b"kept", b"h" * 32, b"l" * 32, b"fp")


def _session(session_id: str) -> Session:
    return Session(session_id, "0xC", 1, "fp32", None, _Compute(), 0.0, 0.0)  # type: ignore[arg-type]


def test_a_lone_session_runs_at_once_and_a_second_one_waits_for_a_batch() -> None:
    async def scenario() -> tuple[StepOutput, int]:
        pool = ThreadPoolExecutor(max_workers=1)
        batcher = StepBatcher(
            pool,
            _Finisher(),  # type: ignore[arg-type]
            limits=ServerLimits(batch_window_s=HOUR),  # a step that waited for the window would not return
            metrics=WorkerMetrics(),
        )
        x = torch.ones(1, 1, 4)
        alone = await asyncio.wait_for(batcher.run(_session("a"), x, 5, 0, b"i" * 32), 60)
        # "a" stepped just now: a step of "b" waits for the window (or a full batch) to batch with it
        waiting = asyncio.ensure_future(batcher.run(_session("b"), x, 5, 0, b"i" * 32))
        await asyncio.sleep(0)
        pending = len(batcher._pending)
        waiting.cancel()
        pool.shutdown(wait=True)
        return alone, pending

    alone, pending = asyncio.run(scenario())
    assert alone[0] == b"frame"
    assert pending == 1
