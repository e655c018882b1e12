"""One generation's sessions along a route: stepping through the hops, failover, and sampled verification.

The coordinator drives every hop itself (no push mode): it sends a step's input to hop 0, that hop's
output to hop 1, and so on, so it holds each hop's whole input history with positions. That history
makes both recoveries cheap and exact:

- Failover: when a step to a worker fails or times out, the worker is marked down, a replacement chain
  for the same span is chosen by the router (a new hop of the job, off chain), the span's past inputs
  are replayed into it chunk by chunk with their original positions (so its KV cache is computed exactly
  as the dead worker's was), and the failed step is sent again. The output is identical to a fault-free
  run; the stall is one timeout (or a refused connection) plus the replay.
- Verification: a sampled (hop, step) is re-computed on a replica and, on disagreement, refereed
  (`coordinator.verification_runs`); a caught routed worker raises `CheatDetected` there, and the caller
  runs the job again on honest workers.

The sessions themselves (tickets, the busy retry on opening, closing) are `coordinator.hop_sessions`.
"""

from __future__ import annotations

import asyncio
import logging
import time

import torch

from coordinator.directory import is_busy
from coordinator.disputes import input_frame
from coordinator.hop_sessions import (
    GenerationError,
    OpenSession,
    PipelineContext,
    close_session,
    open_session,
    open_session_once,
)
from coordinator.hops import JobHops
from coordinator.router import NoRouteError, RouteHop
from coordinator.state import StepRecord
from coordinator.verification_runs import verify_last_step
from coordinator.verifier import should_verify
from shardnet.peer.client import StepResult
from shardnet.peer.errors import WorkerAPIError
from shardnet.span import LayerSpan
from shardnet.wire.commitment import step_hash

log = logging.getLogger(__name__)


class Pipeline:
    """The open sessions of one generation attempt of one job."""

    def __init__(
        self,
        ctx: PipelineContext,
        job_hops: JobHops,
        *,
        model_id: int,
        num_layers: int,
        reason: str = "route",
    ) -> None:
        self.ctx = ctx
        self.directory = ctx.router.directory
        self.reason = reason  # why this generation's new hops are added: "route", or "rerun" after a cheat
        self.job_hops = job_hops
        self.model_id = model_id
        self.num_layers = num_layers
        self.slots: list[OpenSession] = []
        self.records: list[StepRecord] = []
        self.step_index = 0
        self.failovers: list[dict[str, object]] = []  # what happened, for logs and the job record
        self.to_close: list[OpenSession] = []  # shadow / referee sessions to close
        self._closing: set[asyncio.Future[None]] = set()  # closes of failed sessions, in the background

    # -- sessions
    async def _open(self, node: str, endpoint: str, span: LayerSpan, hop_index: int | None) -> OpenSession:
        return await open_session(self.ctx, self.job_hops, node, endpoint, span, hop_index)

    async def _close(self, slot: OpenSession) -> None:
        await close_session(self.ctx, self.job_hops, slot)

    async def _open_now(
        self, node: str, endpoint: str, span: LayerSpan, hop_index: int | None
    ) -> OpenSession:
        """Open with one request: a busy refusal is raised at once (the caller routes around the worker)."""
        return await open_session_once(self.ctx, self.job_hops, node, endpoint, span, hop_index)

    async def open(self, route: list[RouteHop]) -> None:
        """Open a session on every hop of `route` (already recorded on chain), all at once; failing hops fail over.
        A hop refused as busy (the job may be paid already: another coordinator took the memory since our
        admission, or the worker's /health was wrong) is routed around at once when another worker serves its
        span; only when none does is the busy worker waited for (`busy_wait_s`)."""
        indexes = [await self.job_hops.index_for(hop.address, hop.span, self.reason) for hop in route]
        opened = await asyncio.gather(
            *(
                self._open_now(hop.address, hop.endpoint, hop.span, i)
                for hop, i in zip(route, indexes, strict=True)
            ),
            return_exceptions=True,
        )
        for hop, index, slot in zip(route, indexes, opened, strict=True):
            if isinstance(slot, OpenSession):
                self.slots.append(slot)
            elif isinstance(slot, WorkerAPIError) and is_busy(slot):
                self.directory.mark_busy(hop.address, str(slot))
                self.slots.extend(await self._around_busy(hop, index))
            elif isinstance(slot, WorkerAPIError):
                self.directory.mark_down(hop.address, str(slot))
                self.slots.extend(await self._replacement(hop.span, []))
            else:
                self.slots = []
                await asyncio.gather(*(self._close(s) for s in opened if isinstance(s, OpenSession)))
                raise slot

    async def _around_busy(self, hop: RouteHop, index: int) -> list[OpenSession]:
        """Sessions for a hop whose worker refused its open as busy: another chain over its span when one exists,
        else the busy worker itself, waited for (`busy_wait_s`)."""
        try:
            self.ctx.router.cover(self.model_id, self.num_layers, hop.span, exclude={hop.address})
        except NoRouteError:  # nobody else serves the span
            try:
                return [await self._open(hop.address, hop.endpoint, hop.span, index)]
            except WorkerAPIError:
                return await self._replacement(hop.span, [])
        t0 = time.perf_counter()
        new = await self._replacement(hop.span, [], avoid={hop.address})
        self.failovers.append(
            {
                "dead": hop.address,
                "busy": True,  # refused its open as busy: routed around, not marked down
                "span": str(hop.span),
                "replacement": [s.node for s in new],
                "replayed_steps": 0,
                "seconds": time.perf_counter() - t0,
            }
        )
        log.info("job %d: layers %s routed around busy %s", self.job_hops.job_id, hop.span, hop.address)
        return new

    async def close(self) -> None:
        """Close every session (each worker then commits to its steps)."""
        slots = self.slots + [s.shadow for s in self.slots if s.shadow] + self.to_close
        self.slots, self.to_close = [], []
        if self.ctx.coalescer is not None:  # no worker waits for this generation's steps any more
            self.ctx.coalescer.release(self)
        await asyncio.gather(*(self._close(s) for s in slots))

    async def finish(self) -> None:
        """After the last token, before the close (push mode reads back what it did not relay; here: nothing)."""

    # -- stepping
    def codec_of(self, x: torch.Tensor) -> str | None:
        return None if not x.dtype.is_floating_point else self.ctx.codec

    async def step_session(
        self, slot: OpenSession, x: torch.Tensor, pos: int, *, next_slot: OpenSession | None = None
    ) -> StepResult:
        """One step of `slot`. `next_slot`: the hop this generation steps next (a step of the route, not a replay
        or a check): the coalescer may hold that worker's other steps for this one (gathering)."""
        t0 = time.perf_counter()
        if self.ctx.coalescer is not None:  # with other jobs' steps toward the same worker
            res = await self.ctx.coalescer.step(
                slot.endpoint,
                slot.client,
                slot.session_id,
                x,
                pos,
                self.codec_of(x),
                flow=self if next_slot is not None else None,
                next_endpoint=next_slot.endpoint if next_slot is not None else None,
            )
        else:
            res = await slot.client.step_full(slot.session_id, x, pos, self.codec_of(x))
        self.directory.record_step(slot.node, time.perf_counter() - t0, len(slot.span))
        return res

    def _record(self, slot: OpenSession, x: torch.Tensor, pos: int, res: StepResult, replay: bool) -> None:
        slot.history.append((pos, x))
        slot.last = res
        if slot.hop_index is None:
            return
        n = int(x.shape[1])
        self.job_hops.positions[slot.hop_index] += n
        frame = input_frame(x, self.codec_of(x))
        self.job_hops.relay(slot.hop_index, frame, res.tensor, res.step_hash, self.ctx.fingerprint_pool)
        input_hash = step_hash(frame)
        self.records.append(
            StepRecord(slot.hop_index, self.step_index, pos, n, input_hash, res.step_hash, replay)
        )

    async def forward(self, x: torch.Tensor, pos: int) -> torch.Tensor:
        """Run one step (token ids at positions pos…pos+n-1) through every hop; returns the last hop's logits."""
        i = 0
        while i < len(self.slots):
            slot = self.slots[i]
            try:
                res = await self.step_session(slot, x, pos, next_slot=self.slots[(i + 1) % len(self.slots)])
            except WorkerAPIError as exc:
                await self._failover(i, exc)
                continue
            self._record(slot, x, pos, res, replay=False)
            if should_verify(
                self.ctx.verify_share,
                job_id=self.job_hops.job_id,
                hop_index=i,
                step_index=self.step_index,
                salt=self.ctx.salt,
            ):
                await verify_last_step(self, slot)
            x = res.tensor
            i += 1
        self.step_index += 1
        return x

    # -- failover
    async def _failover(self, i: int, exc: Exception) -> None:
        old = self.slots[i]
        t0 = time.perf_counter()
        log.warning(
            "job %d: step on %s (layers %s) failed: %s; failing over",
            self.job_hops.job_id,
            old.endpoint,
            old.span,
            exc,
        )
        if is_busy(exc):  # e.g. 503 memory_full on a session without a reservation: busy, not down
            self.directory.mark_busy(old.node, str(exc))
        else:
            self.directory.mark_down(old.node, str(exc))
        closing = asyncio.ensure_future(self._close(old))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        if old.shadow is not None:
            self.to_close.append(old.shadow)
        new = await self._replacement(old.span, old.history, avoid={old.node} if is_busy(exc) else set())
        self.slots[i : i + 1] = new
        self.failovers.append(
            {
                "dead": old.node,
                "span": str(old.span),
                "replacement": [s.node for s in new],
                "replayed_steps": len(old.history),
                "seconds": time.perf_counter() - t0,
            }
        )
        log.info(
            "job %d: layers %s now on %s after replaying %d steps in %.3f s",
            self.job_hops.job_id,
            old.span,
            ", ".join(s.endpoint for s in new),
            len(old.history),
            time.perf_counter() - t0,
        )

    async def _replacement(
        self, span: LayerSpan, history: list[tuple[int, torch.Tensor]], avoid: set[str] | None = None
    ) -> list[OpenSession]:
        """Open a chain of live workers covering `span` and replay `history` into it. Workers in `avoid` (busy) and
        those refusing as busy here are routed around while another chain covers the span; when none does, the
        cheapest chain is opened waiting for its busy workers (`busy_wait_s`)."""
        last_error: Exception | None = None
        avoid = {a.lower() for a in avoid or ()}
        for _ in range(self.ctx.max_failovers):
            try:
                route = self.ctx.router.cover(self.model_id, self.num_layers, span, exclude=avoid)
                open_hop = self._open_now if avoid else self._open
            except NoRouteError:
                if not avoid:
                    raise
                route = self.ctx.router.cover(self.model_id, self.num_layers, span)  # only busy ones: wait
                open_hop = self._open
            opened: list[OpenSession] = []
            current = route[0].address
            try:
                for hop in route:
                    current = hop.address
                    index = await self.job_hops.index_for(hop.address, hop.span, "failover")
                    opened.append(await open_hop(hop.address, hop.endpoint, hop.span, index))
                for pos, x in history:
                    y = x
                    for slot in opened:
                        current = slot.node
                        res = await self.step_session(slot, y, pos)
                        self._record(slot, y, pos, res, replay=True)
                        y = res.tensor
                return opened
            except WorkerAPIError as exc:
                last_error = exc
                if is_busy(exc):
                    self.directory.mark_busy(current, str(exc))
                    avoid.add(current.lower())
                else:
                    self.directory.mark_down(current, str(exc))
                await asyncio.gather(*(self._close(slot) for slot in opened))
        raise GenerationError(
            f"job {self.job_hops.job_id}: could not fail over layers {span} after {self.ctx.max_failovers} tries "
            f"(last error: {last_error}); start another worker for that span"
        )
