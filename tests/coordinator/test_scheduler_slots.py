"""A job holds one of `--max-concurrent-jobs` slots while it generates, not while its settlement waits for other
jobs to share a settleJobs; a settlement that fails is tried again before the job is failed (its client may have
the answer already). Fakes stand for the chain and the workers: what is tested is the scheduler's and the runner's
own bookkeeping."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from coordinator import settling
from coordinator.jobs import GenerationResult
from coordinator.lifecycle import JobState
from coordinator.scheduler import JobScheduler
from coordinator.settling import JobSettler


class _Runner:
    """Job 1 generates, says so, then waits for `settled` (a slow settlement); `early=False`: it waits before
    saying so (still generating)."""

    def __init__(self, early: bool) -> None:
        self.early = early
        self.settled = asyncio.Event()
        self.order: list[str] = []

    async def run(self, job_id: int, *_args: Any, on_generated: Any = None, **_kw: Any) -> int:
        self.order.append(f"start {job_id}")
        if job_id == 1 and not self.early:
            await self.settled.wait()
        on_generated(GenerationResult([1], "length"))
        if job_id == 1:
            await self.settled.wait()
        self.order.append(f"end {job_id}")
        return job_id


def _scheduler(runner: _Runner) -> JobScheduler:
    rows = {j: SimpleNamespace(status=JobState.PROMPT, prompt="p", sampling="{}", model_id=1) for j in (1, 2)}
    lifecycle = SimpleNamespace(state=SimpleNamespace(get_job=rows.get))
    catalog = SimpleNamespace(get=lambda _model_id: "model")
    return JobScheduler(None, None, lifecycle, runner, catalog, max_concurrent_jobs=1)  # type: ignore[arg-type]


def test_a_settling_job_leaves_its_slot_to_the_next() -> None:
    async def scenario() -> list[str]:
        runner = _Runner(early=True)
        scheduler = _scheduler(runner)
        first, second = scheduler.schedule(1), scheduler.schedule(2)
        assert await asyncio.wait_for(second, 5) == 2  # ran in the one slot while job 1 was still settling
        assert not first.done()
        runner.settled.set()
        assert await asyncio.wait_for(first, 5) == 1
        return runner.order

    assert asyncio.run(scenario()) == ["start 1", "start 2", "end 2", "end 1"]


def test_a_generating_job_keeps_its_slot() -> None:
    async def scenario() -> list[str]:
        runner = _Runner(early=False)
        scheduler = _scheduler(runner)
        first, second = scheduler.schedule(1), scheduler.schedule(2)
        await asyncio.sleep(0.3)
        assert runner.order == ["start 1"]  # job 2 waits for the slot
        runner.settled.set()
        await asyncio.wait_for(asyncio.gather(first, second), 5)
        return runner.order

    assert asyncio.run(scenario()) == ["start 1", "end 1", "start 2", "end 2"]


class _Batcher:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def settle(self, job_id: int) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("the chain node did not answer")
        return f"0xtx{job_id}"


@pytest.mark.parametrize("failures", [0, 1, 3])
def test_a_failed_settlement_is_tried_again(monkeypatch: pytest.MonkeyPatch, failures: int) -> None:
    monkeypatch.setattr(settling, "SETTLE_RETRIES_S", (0.01, 0.01, 0.01))
    settler = object.__new__(JobSettler)
    settler.batcher = _Batcher(failures)  # type: ignore[assignment]
    assert asyncio.run(settler.settle(7)) == "0xtx7"
    assert settler.batcher.calls == failures + 1


def test_a_settlement_that_keeps_failing_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settling, "SETTLE_RETRIES_S", (0.0,))
    settler = object.__new__(JobSettler)
    settler.batcher = _Batcher(99)  # type: ignore[assignment]
    with pytest.raises(ConnectionError):
        asyncio.run(settler.settle(7))
    assert settler.batcher.calls == 2


def test_jobs_settled_after_a_restart_return_their_verification_share() -> None:
    """The restart path (`JobScheduler._settle`): each job its settleJobs settled is handed to the checks as
    unchecked, with its own transaction, so its verification share goes back to the client at once."""
    unchecked: list[tuple[int, str, str]] = []

    async def finish_settlements(job_ids: list[int]) -> dict[int, str]:
        return {j: f"0xtx{j}" for j in job_ids}

    runner = SimpleNamespace(
        settler=SimpleNamespace(finish_settlements=finish_settlements),
        checks=SimpleNamespace(unchecked=lambda *args: unchecked.append(args)),
    )
    scheduler = _scheduler(runner)  # type: ignore[arg-type]
    asyncio.run(scheduler._settle([4, 5]))
    assert [(j, tx) for j, tx, _why in unchecked] == [(4, "0xtx4"), (5, "0xtx5")]
    assert all("restart" in why for _j, _tx, why in unchecked)
