"""Steps reach the worker's one compute thread here; steps of concurrent sessions run batched.

A decode step (one new position), or the first step of a short prompt, waits up to `window_s` for others;
those that gathered (at most `max_batch`) run as batched forwards of the block
(`shardnet.model.batched.step_many`: the decode steps in one, the prompts in groups of similar length), each
session keeping its own KV cache; the results are then encoded, hashed and committed per session by the
`StepFinisher` (`worker.finishing`: the fingerprints of the whole batch in one pass, the same bytes as a
step run alone), and the batch's step records stored by `record` in one transaction, before any of its
outputs leaves. Steps that arrive while a batch computes form the next batch, which leaves as soon as the
compute thread is free (they have waited already). Long prompts, steps of several positions on a session
that holds some, every step when `max_batch` is 1, and the step of a session alone (no other stepped within
`ACTIVE_S`) go straight to the compute thread. One session's failure is its own: the others' results stand.
See docs/batching.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import torch

from shardnet import trace
from shardnet.model.batched import PREFILL_MAX_POSITIONS, step_many
from shardnet.model.session import BlockSession
from shardnet.peer.errors import WorkerUnavailable
from worker.finishing import StepFinisher, StepOutput
from worker.limits import ServerLimits
from worker.metrics import WorkerMetrics
from worker.sessions import Session

log = logging.getLogger(__name__)

ACTIVE_S = 1.0  # a session that stepped within this long may step again soon: batch with it

#: store the records (session id, step index, leaf, positions) of finished steps, all or none
RecordSteps = Callable[[list[tuple[str, int, bytes, int]]], None]


@dataclass
class PendingStep:
    session: Session
    x: torch.Tensor
    start_pos: int
    index: int
    input_hash: bytes
    future: asyncio.Future[StepOutput]


class StepBatcher:
    """Runs every inference step of a worker on `executor` (its single compute thread)."""

    def __init__(
        self,
        executor: Executor,
        finisher: StepFinisher,
        *,
        limits: ServerLimits,
        metrics: WorkerMetrics,
        record: RecordSteps | None = None,
    ) -> None:
        self.executor = executor
        self.metrics = metrics
        self.finisher = finisher
        self.record = record
        self.window_s = limits.batch_window_s
        self.max_batch = limits.max_batch
        self.batches = 0  # batched forwards run (2+ sessions)
        self.batched_steps = 0  # steps that ran in them
        self._pending: list[PendingStep] = []
        self._stepped: dict[str, float] = {}  # session id -> when it last stepped (sessions active now)
        self._full = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None

    async def run(
        self, session: Session, x: torch.Tensor, start_pos: int, index: int, input_hash: bytes
    ) -> StepOutput:
        """Compute one step of `session` and return its frame, step hash, leaf and fingerprint."""
        loop = asyncio.get_running_loop()
        lone = self._lone(session.session_id)
        if self.max_batch <= 1 or not _may_batch(x, start_pos) or (lone and not self._pending):
            return await loop.run_in_executor(
                self.executor, self.run_alone, session, x, start_pos, index, input_hash
            )
        future: asyncio.Future[StepOutput] = loop.create_future()
        self._pending.append(PendingStep(session, x, start_pos, index, input_hash, future))
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch())
        elif len(self._pending) >= self.max_batch:
            self._full.set()
        return await future

    def _lone(self, session_id: str) -> bool:
        """Note that `session_id` steps now; True when no other session stepped within `ACTIVE_S`: nothing
        is there to batch it with, so its step does not wait out the batching window (2 ms per hop and token
        for one session alone)."""
        now = time.monotonic()
        self._stepped[session_id] = now
        stale = [s for s, at in self._stepped.items() if now - at > ACTIVE_S]
        for s in stale:
            del self._stepped[s]
        return len(self._stepped) == 1

    def run_alone(
        self, session: Session, x: torch.Tensor, start_pos: int, index: int, input_hash: bytes
    ) -> StepOutput:
        """The single-sequence path (compute thread): the session's own `step`, then `finish` and `record`."""
        trace.mark("compute")
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = session.compute.step(x, start_pos)
        t1 = time.perf_counter()
        trace.mark("computed")
        try:
            result = self.finisher.finish(session, out, int(x.shape[1]), index, input_hash)
            if self.record is not None:
                self.record([(session.session_id, index, result[3], int(x.shape[1]))])
            return result
        finally:
            self._timed(t0, t1)
            trace.mark("finished")

    def _timed(self, t0: float, t1: float) -> None:
        """Count the compute thread's seconds: forward from t0 to t1, finishing the steps from t1 to now."""
        self.metrics.compute_seconds.labels("forward").inc(t1 - t0)
        self.metrics.compute_seconds.labels("finish").inc(time.perf_counter() - t1)

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        waited = False  # steps left over from a batch have waited already
        while self._pending:
            if not waited and self.window_s > 0 and len(self._pending) < self.max_batch:
                self._full.clear()
                try:
                    await asyncio.wait_for(self._full.wait(), self.window_s)
                except TimeoutError:
                    pass
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            try:
                results = await loop.run_in_executor(self.executor, self._run_batch, batch)
            except asyncio.CancelledError:
                _deliver(
                    batch, [WorkerUnavailable("the worker is shutting down: retry on another")] * len(batch)
                )
                raise
            except Exception as exc:  # the executor was shut down
                results = [exc] * len(batch)
            _deliver(batch, results)
            waited = True

    def _run_batch(self, batch: Sequence[PendingStep]) -> list[StepOutput | BaseException]:
        """On the compute thread: one batched forward of the steps, then each one's `finish`."""
        # only plain block sessions share a forward: a session with its own adapters (worker.adapter_sessions)
        # or any other compute runs alone, so nothing of one session ever leaks into another's step
        plain = [i for i, p in enumerate(batch) if type(p.session.compute) is BlockSession]
        results: list[StepOutput | BaseException | None] = [None] * len(batch)
        for i, p in enumerate(batch):
            if i not in plain:
                results[i] = _catch(self.run_alone, p.session, p.x, p.start_pos, p.index, p.input_hash)
        if len(plain) == 1:
            p = batch[plain[0]]
            results[plain[0]] = _catch(self.run_alone, p.session, p.x, p.start_pos, p.index, p.input_hash)
        elif plain:
            steps = [batch[i] for i in plain]
            computes = [p.session.compute for p in steps if isinstance(p.session.compute, BlockSession)]
            trace.mark(f"batch:{len(steps)}")
            t0 = time.perf_counter()
            outputs = step_many(computes, [p.x for p in steps], [p.start_pos for p in steps])
            t1 = time.perf_counter()
            trace.mark("batched")
            self.batches += 1
            self.batched_steps += len(steps)
            self.metrics.batch_size.observe(len(steps))
            computed = [
                (i, p, out)
                for i, p, out in zip(plain, steps, outputs, strict=True)
                if not isinstance(out, BaseException)
            ]
            for i, _p, out in zip(plain, steps, outputs, strict=True):
                if isinstance(out, BaseException):
                    results[i] = out
            try:
                finished = self.finisher.finish_many(
                    [(p.session, out, int(p.x.shape[1]), p.index, p.input_hash) for _, p, out in computed]
                )
            except Exception as exc:  # noqa: BLE001 - not finished: every one of them fails
                finished = [exc] * len(computed)
            for (i, _p, _out), result in zip(computed, finished, strict=True):
                results[i] = result
            self._record_all(
                batch, results, [i for i, _p, _out in computed if not isinstance(results[i], BaseException)]
            )
            self._timed(t0, t1)
            trace.mark("batch_finished")
        return [r if r is not None else RuntimeError("step not run") for r in results]

    def _record_all(
        self,
        batch: Sequence[PendingStep],
        results: list[StepOutput | BaseException | None],
        finished: list[int],
    ) -> None:
        """Store the finished steps' records in one transaction; if that fails, each of them fails."""
        if self.record is None or not finished:
            return
        rows = []
        for i in finished:
            result = results[i]
            assert result is not None and not isinstance(result, BaseException)
            p = batch[i]
            rows.append((p.session.session_id, p.index, result[3], int(p.x.shape[1])))
        try:
            self.record(rows)
        except Exception as exc:  # not recorded: none of these outputs may leave
            for i in finished:
                results[i] = exc


def _may_batch(x: torch.Tensor, start_pos: int) -> bool:
    """A decode step (one position), or a short prompt's first step (a prefill that may share a forward)."""
    n = int(x.shape[1])
    return n == 1 or (start_pos == 0 and n <= PREFILL_MAX_POSITIONS)


def _catch(fn: Callable[..., StepOutput], *args: Any) -> StepOutput | BaseException:
    try:
        return fn(*args)
    except Exception as exc:
        return exc


def _deliver(batch: Sequence[PendingStep], results: Sequence[StepOutput | BaseException]) -> None:
    for pending, result in zip(batch, results, strict=True):
        if pending.future.done():  # its request was cancelled meanwhile
            continue
        if isinstance(result, BaseException):
            pending.future.set_exception(result)
        else:
            pending.future.set_result(result)
