"""Settling jobs together: jobs that reach `settling` within `window_s` of each other go in one settleJobs.

A settlement of many jobs costs far less gas per job than one each (the registry checks every signature in one
transaction; see docs/gas.md). `SettlementBatcher.settle(job_id)` waits for the batch its job joined and returns
the transaction hash; if a batch of several reverts, each of its jobs is settled alone, so one bad job cannot
stall the others. The verifiers' payments of checked jobs (`payVerifiers`) are batched the same way
(`coordinator.verifier_pay.VerifierPayer`, `what="payVerifiers"`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

SettleMany = Callable[[list[int]], Awaitable[dict[int, str]]]


class SettlementBatcher:
    """Collects settling jobs for `window_s` (at most `max_jobs`), then settles them in one transaction."""

    def __init__(
        self, settle_many: SettleMany, *, window_s: float, max_jobs: int = 16, what: str = "settleJobs"
    ) -> None:
        self._settle_many = settle_many
        self.window_s = window_s
        self.max_jobs = max_jobs
        self.what = what  # the transaction's name, for the log
        self._pending: dict[int, asyncio.Future[str]] = {}
        self._timer: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def settle(self, job_id: int) -> str:
        """Send `job_id` with whatever else is waiting now; returns the transaction's hash."""
        future = self._pending.get(job_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._pending[job_id] = future
        if len(self._pending) >= self.max_jobs or self.window_s <= 0:
            self._flush_now()
        elif self._timer is None:
            self._timer = asyncio.ensure_future(self._after(self.window_s))
        return await asyncio.shield(future)

    async def _after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._timer = None
        self._flush_now()

    def _flush_now(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, {}
        if batch:
            task = asyncio.ensure_future(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: dict[int, asyncio.Future[str]]) -> None:
        if len(batch) > 1:
            try:
                txs = await self._settle_many(sorted(batch))
                for job_id, future in batch.items():
                    if not future.done():
                        future.set_result(txs[job_id])
                log.info("%d jobs in one %s (tx %s)", len(batch), self.what, next(iter(txs.values())))
                return
            except Exception as exc:  # noqa: BLE001 - each job is tried alone below, and errors reach its caller
                log.warning("a %s of %d jobs failed (%s); sending each job alone", self.what, len(batch), exc)
        for job_id, future in batch.items():
            if future.done():
                continue
            try:
                future.set_result((await self._settle_many([job_id]))[job_id])
            except Exception as exc:  # noqa: BLE001 - handed to the job's own caller
                future.set_exception(exc)
