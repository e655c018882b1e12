"""Jobs settling close together share one settleJobs; a failing batch falls back to one job per transaction."""

from __future__ import annotations

import asyncio

import pytest

from coordinator.batching import SettlementBatcher


class _Chain:
    """Records each settleJobs call; refuses any batch (or single job) that contains a job in `bad`."""

    def __init__(self, bad: frozenset[int] = frozenset()) -> None:
        self.calls: list[list[int]] = []
        self.bad = bad

    async def settle_many(self, job_ids: list[int]) -> dict[int, str]:
        self.calls.append(list(job_ids))
        await asyncio.sleep(0.01)
        if self.bad & set(job_ids):
            raise RuntimeError(f"job {sorted(self.bad & set(job_ids))} reverted")
        tx = f"0xtx{len(self.calls)}"
        return {j: tx for j in job_ids}


def test_jobs_within_the_window_share_one_transaction() -> None:
    async def scenario() -> tuple[list[str], list[list[int]]]:
        chain = _Chain()
        batcher = SettlementBatcher(chain.settle_many, window_s=0.1)

        async def later(job_id: int, delay: float) -> str:
            await asyncio.sleep(delay)
            return await batcher.settle(job_id)

        txs = await asyncio.gather(later(1, 0), later(2, 0.03), later(3, 0.06), later(4, 0.3))
        return list(txs), chain.calls

    txs, calls = asyncio.run(scenario())
    assert calls == [[1, 2, 3], [4]]
    assert txs == ["0xtx1", "0xtx1", "0xtx1", "0xtx2"]


def test_a_full_batch_goes_at_once_and_a_bad_job_does_not_stall_the_others() -> None:
    async def scenario() -> tuple[list[object], list[list[int]]]:
        chain = _Chain(bad=frozenset({2}))
        batcher = SettlementBatcher(chain.settle_many, window_s=30, max_jobs=3)
        results = await asyncio.wait_for(
            asyncio.gather(*(batcher.settle(j) for j in (1, 2, 3)), return_exceptions=True), 5
        )
        return list(results), chain.calls

    results, calls = asyncio.run(scenario())
    assert calls == [[1, 2, 3], [1], [2], [3]]  # the full batch left without waiting 30 s, then each alone
    assert results[0] == "0xtx2" and results[2] == "0xtx4"
    assert isinstance(results[1], RuntimeError) and "reverted" in str(results[1])


def test_a_zero_window_settles_a_lone_job_at_once() -> None:
    async def scenario() -> str:
        return await SettlementBatcher(_Chain().settle_many, window_s=0).settle(7)

    assert asyncio.run(scenario()) == "0xtx1"
    with pytest.raises(RuntimeError):
        asyncio.run(SettlementBatcher(_Chain(bad=frozenset({7})).settle_many, window_s=0).settle(7))
