"""Push mode: a token's data crosses each link once (docs/PROTOCOL.md "Data path").

The coordinator opens the route's sessions from the last hop to the first, each told where to forward (`next`:
the following session's URL, id and token), sends a step to the first worker only, and gets the last worker's
answer back through the chain with every hop's step hash (`X-Hop-Hashes`). n hops: n + 1 link traversals per
step instead of relay mode's 2n. For greedy jobs with `compact_answers`, the last worker answers with its top-k
logits and ids (`worker.push_links`), about 150 bytes instead of vocab x 4.

What the coordinator does not see on the way (the hidden states between workers) it reads afterwards from the
workers themselves: every middle worker keeps the frames it sent (`GET /v1/sessions/{id}/outputs`):

- Failover: a failed step's error names the failed worker (`failed_hop`); the hops before it have done the step.
  The dead hop's inputs are its upstream neighbour's kept outputs (or the coordinator's token ids for the first
  hop); they are replayed into a replacement chain (`X-Forward: 0`), the failed step goes on from the
  replacement to the next hop, and the upstream neighbour is re-linked to the replacement.
- Verification (`coordinator.push_checks`): at the end of the generation, the kept frames rebuild each hop's
  packages for the after-the-fact checks, each frame checked against the hash its sender stated in the step's
  answer, and the sampled shadow checks run over them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

import torch

from coordinator.directory import is_busy
from coordinator.hop_sessions import (
    GenerationError,
    OpenSession,
    PipelineContext,
    open_session,
    open_session_once,
)
from coordinator.hops import JobHops
from coordinator.pipeline import Pipeline
from coordinator.push_checks import PushedStep, finish_pushed, keeps_output, known_records
from coordinator.push_failover import inputs_of, link, replacement_chain
from coordinator.router import NoRouteError, RouteHop
from shardnet import trace
from shardnet.peer.client import StepResult
from shardnet.peer.errors import NextHopFailed, SessionConflict, WorkerAPIError, WorkerUnreachable
from shardnet.span import LayerSpan
from shardnet.verify.fingerprint import make_fingerprint

log = logging.getLogger(__name__)

HEALTH_PROBE_S = 1.0  # after a chain timed out: the least time each worker's /health gets to count as alive


def sparse_logits(top_k: torch.Tensor, k: int) -> torch.Tensor:
    """A compact answer's last position as logits: its top-k values at their ids, -inf elsewhere (the argmax,
    ties included, is the full logits' argmax)."""
    row = top_k.reshape(-1, 2 * k)[-1]
    values, ids = row[:k], row[k:].long()
    logits = torch.full((int(ids.max().item()) + 1,), float("-inf"))
    return logits.scatter_(0, ids, values)


class PushPipeline(Pipeline):
    """A generation's sessions linked worker to worker; the coordinator talks to the first and hears the last."""

    def __init__(self, *args: object, compact: bool = False, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.compact = compact  # greedy job with compact answers: the last worker answers with its top-k
        self.ids: list[tuple[int, torch.Tensor]] = []  # the token ids sent to the first hop, per step
        self.done: dict[OpenSession, list[PushedStep]] = {}  # each session's steps, in its order
        self.finished = False
        self._acks: set[asyncio.Future[StepResult]] = set()
        self.answer_key = secrets.token_hex(
            16
        )  # given to the last worker only: answers must carry it  # acknowledgements of directly answered steps

    # -- sessions
    def answer_kind(self, span: LayerSpan) -> str:
        """How the session over `span` answers: the last one of a compact job with its top-k logits."""
        return "top_k" if self.compact and span.end == self.num_layers else "full"

    def answer_url(self, span: LayerSpan) -> str | None:
        """The last session sends its answers straight to this coordinator (when it listens for them)."""
        answers = self.ctx.push_answers
        if answers is None or span.end != self.num_layers:
            return None
        return answers.answer_to(self.answer_key)

    async def open(self, route: list[RouteHop]) -> None:
        """Open the route's sessions from the last to the first, each linked to the next. A hop refused busy or
        down is replaced by another chain over its span (a busy one is waited for when nobody else serves it)."""
        pending = [(hop, self.reason) for hop in route]
        opened: list[OpenSession] = []
        tries = 0
        try:
            while pending:
                hop, reason = pending.pop()
                index = await self.job_hops.index_for(hop.address, hop.span, reason)
                nxt = link(opened[0]) if opened else None
                try:
                    slot = await open_session_once(
                        self.ctx, self.job_hops, hop.address, hop.endpoint, hop.span, index,
                        next_hop=nxt, answer=self.answer_kind(hop.span), answer_to=self.answer_url(hop.span),
                    )  # fmt: skip
                except WorkerAPIError as exc:
                    tries += 1
                    busy = is_busy(exc)
                    (self.directory.mark_busy if busy else self.directory.mark_down)(hop.address, str(exc))
                    try:
                        if tries > self.ctx.max_failovers:
                            raise NoRouteError(f"{tries} opens failed") from exc
                        sub = self.ctx.router.cover(
                            self.model_id, self.num_layers, hop.span, exclude={hop.address}
                        )
                    except NoRouteError:
                        if not busy:
                            raise GenerationError(
                                f"job {self.job_hops.job_id}: no live worker for layers {hop.span} (last error: "
                                f"{exc}); start another worker for that span"
                            ) from exc
                        slot = await open_session(
                            self.ctx, self.job_hops, hop.address, hop.endpoint, hop.span, index,
                            next_hop=nxt, answer=self.answer_kind(hop.span), answer_to=self.answer_url(hop.span),
                        )  # fmt: skip
                    else:
                        self.failovers.append(
                            {"dead": hop.address, "busy": busy, "span": str(hop.span),
                             "replacement": [h.address for h in sub], "replayed_steps": 0, "seconds": 0.0}
                        )  # fmt: skip
                        pending.extend((h, "failover") for h in sub)
                        continue
                opened.insert(0, slot)
        except BaseException:
            await asyncio.gather(*(self._close(s) for s in opened))
            raise
        self.slots = opened

    async def close(self) -> None:
        if not self.finished:  # an error ended the generation: record what is known of its steps
            self.records = known_records(self)
        if self._acks:  # the chain's last acknowledgements: a session closes after its steps are done
            await asyncio.wait(set(self._acks), timeout=self.ctx.step_timeout_s)
        await super().close()

    # -- stepping
    def note(self, slot: OpenSession, step: PushedStep) -> int:
        """Record a step `slot` computed (positions are what its hop is paid for); returns its index there."""
        steps = self.done.setdefault(slot, [])
        steps.append(step)
        if slot.hop_index is not None:
            self.job_hops.positions[slot.hop_index] += step.n
        return len(steps) - 1

    def _upstream_step(self, slot: OpenSession, source: OpenSession | None, source_at: int) -> int:
        pos, x = self.ids[-1]
        return self.note(
            slot, PushedStep(self.step_index, pos, int(x.shape[1]), source, source_at, None, False)
        )

    async def forward(self, x: torch.Tensor, pos: int) -> torch.Tensor:
        """One step through the linked chain: sent to the first hop, answered by the last."""
        self.ids.append((pos, x))
        entry: torch.Tensor = x
        source: OpenSession | None = None
        source_at = len(self.ids) - 1
        start = 0  # the chain position the step enters at (after a failover: the hop after the replacement)
        while True:
            head = self.slots[start]
            t0 = time.perf_counter()
            try:
                res = await self._send(head, entry, pos)
                chain = self.slots[start:]
                if len(res.hop_hashes) != len(chain):
                    raise NextHopFailed(
                        f"{len(res.hop_hashes)} hop hashes for a chain of {len(chain)}", url=head.endpoint
                    )
            except WorkerAPIError as exc:
                failed = await self._failed_position(exc, start)
                outcome = await self._failover_push(failed, start, source, source_at, exc)
                if isinstance(outcome, StepResult):
                    res, chain = outcome, []
                    break
                entry, source, source_at, start = outcome
                continue
            self._answered(chain, res, source, source_at, time.perf_counter() - t0)
            break
        trace.mark("token")
        self.step_index += 1
        if res.top_k:
            return sparse_logits(res.tensor, res.top_k)
        return res.tensor

    async def _send(self, head: OpenSession, entry: torch.Tensor, pos: int) -> StepResult:
        """Send a step into the chain at `head`; the answer comes straight from the last worker when it can
        (`coordinator.push_answers`), else back through the chain. The chain's acknowledgement of a direct answer
        arrives later, off the token's critical path (awaited at the close)."""
        trace.mark("step")
        answers = self.ctx.push_answers
        codec = self.codec_of(entry)
        # the request waits for every worker of the chain from `head` on, each within the step timeout
        timeout_s = self.ctx.step_timeout_s * (len(self.slots) - self.slots.index(head))
        if answers is None or answers.url is None:
            return await head.client.step_full(head.session_id, entry, pos, codec, timeout_s=timeout_s)
        answer_id = secrets.token_hex(16)
        answer = answers.expect(answer_id, self.answer_key)
        request = asyncio.ensure_future(
            head.client.step_full(
                head.session_id, entry, pos, codec, answer_id=answer_id, timeout_s=timeout_s
            )
        )
        try:
            await asyncio.wait({answer, request}, return_when=asyncio.FIRST_COMPLETED)
            if answer.done():
                self._acks.add(request)
                request.add_done_callback(self._acknowledged)
                return answer.result()
            res = request.result()  # the chain's error, or its answer when the last worker could not reach us
            if not res.answered_directly:
                return res
            return await asyncio.wait_for(answer, self.ctx.step_timeout_s)  # posted before it acknowledged
        finally:
            answers.forget(answer_id)

    def _acknowledged(self, request: asyncio.Future[StepResult]) -> None:
        self._acks.discard(request)
        if not request.cancelled() and request.exception() is not None:
            log.debug("job %d: a directly answered step's acknowledgement failed: %s",
                      self.job_hops.job_id, request.exception())  # fmt: skip

    def _answered(
        self, chain: list[OpenSession], res: StepResult, source: OpenSession | None, source_at: int, dt: float
    ) -> None:
        layers = sum(len(s.span) for s in chain)
        pos, x = self.ids[-1]
        for j, slot in enumerate(chain):
            self.directory.record_step(slot.node, dt * len(slot.span) / layers, len(slot.span))
            step = PushedStep(
                self.step_index, pos, int(x.shape[1]), source, source_at, res.hop_hashes[j], False
            )
            if j == len(chain) - 1:
                step.fingerprint = self.fingerprint(res)
                keep = not res.top_k and keeps_output(self, len(self.slots) - 1)
                step.output = res.tensor if keep else None
            source, source_at = slot, self.note(slot, step)

    def fingerprint(self, res: StepResult) -> asyncio.Future[bytes]:
        if res.fingerprint is not None:  # a compact answer: the fingerprint its worker bound in the leaf
            done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            done.set_result(res.fingerprint)
            return done
        return asyncio.get_running_loop().run_in_executor(
            self.ctx.fingerprint_pool, make_fingerprint, res.tensor
        )

    async def _failed_position(self, exc: WorkerAPIError, start: int) -> int:
        """Which chain position failed: the one a 502 names (`failed_hop`); after a timeout of the whole chain
        (a worker that hangs rather than dies), the first whose /health does not answer within the step timeout; else
        the one the step was sent to."""
        if isinstance(exc, NextHopFailed) and exc.url:
            named = exc.url.rstrip("/")
            for j in range(start + 1, len(self.slots)):
                if self.slots[j].endpoint.rstrip("/") == named:
                    return j
        if isinstance(exc, WorkerUnreachable) and isinstance(exc.__cause__, TimeoutError):
            chain = self.slots[start:]
            probe_s = max(
                HEALTH_PROBE_S, self.ctx.step_timeout_s
            )  # a loaded worker is slow, a hung one silent
            alive = await asyncio.gather(
                *(asyncio.wait_for(s.client.health(), probe_s) for s in chain), return_exceptions=True
            )
            for j, answer in enumerate(alive):
                if isinstance(answer, BaseException):
                    return start + j
        return start

    # -- failover
    async def _failover_push(
        self, k: int, start: int, source: OpenSession | None, source_at: int, exc: WorkerAPIError
    ) -> StepResult | tuple[torch.Tensor, OpenSession, int, int]:
        """Replace the chain position `k` that failed this step; hops start..k-1 have done it. Returns the
        last hop's answer (k was the last hop) or where the step goes on (input, its source, start)."""
        old = self.slots[k]
        t0 = time.perf_counter()
        log.warning("job %d: push step failed at %s (layers %s): %s; failing over",
                    self.job_hops.job_id, old.endpoint, old.span, exc)  # fmt: skip
        busy = is_busy(exc)
        if isinstance(exc, SessionConflict):
            # alive, but its session is ahead of the coordinator: the step went on past a worker that failed
            # before the answer came back (its answer went back the chain and was lost there). Replaced by a fresh
            # session, on this worker too, replaying its inputs; nobody is marked down.
            log.info("job %d: %s (layers %s) already has this step; opening a fresh session there",
                     self.job_hops.job_id, old.endpoint, old.span)  # fmt: skip
        else:
            (self.directory.mark_busy if busy else self.directory.mark_down)(old.node, str(exc))
        closing = asyncio.ensure_future(self._close(old))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        for j in range(start, k):  # they did this step before the failed hop
            source_at = self._upstream_step(self.slots[j], source, source_at)
            source = self.slots[j]
        history = await inputs_of(self, k)
        nxt = link(self.slots[k + 1]) if k + 1 < len(self.slots) else None
        new, last = await replacement_chain(self, old.span, history, nxt, avoid={old.node} if busy else set())
        if k > 0:  # the upstream neighbour now forwards to the replacement
            try:
                await self.slots[k - 1].client.set_next(self.slots[k - 1].session_id, link(new[0]))
            except WorkerAPIError as relink:
                raise GenerationError(
                    f"job {self.job_hops.job_id}: could not re-link {self.slots[k - 1].endpoint} to the replacement "
                    f"of layers {old.span} ({relink})"
                ) from relink
        self.slots[k : k + 1] = new
        self.failovers.append(
            {"dead": old.node, "span": str(old.span), "replacement": [s.node for s in new],
             "replayed_steps": len(history) - 1, "seconds": time.perf_counter() - t0}
        )  # fmt: skip
        tail = new[-1]
        if k + len(new) == len(self.slots):  # the replaced hop was the last: its answer is the step's
            assert last is not None
            return last
        assert tail.last is not None
        return tail.last.tensor, tail, len(self.done[tail]) - 1, k + len(new)

    async def close_one(self, slot: OpenSession) -> None:
        await self._close(slot)

    async def finish(self) -> None:
        """After the last token: the after-the-fact checks' packages and the sampled shadow checks."""
        await finish_pushed(self)
        self.finished = True


def make_pipeline(
    ctx: PipelineContext, job_hops: JobHops, *, model_id: int, num_layers: int, reason: str, greedy: bool
) -> Pipeline:
    """The pipeline of one generation attempt on the configured data path (`ctx.data_path`)."""
    if ctx.data_path == "push":
        compact = ctx.compact_answers and greedy  # a sampled draw needs every logit (the verifier redraws it)
        return PushPipeline(
            ctx, job_hops, model_id=model_id, num_layers=num_layers, reason=reason, compact=compact
        )
    return Pipeline(ctx, job_hops, model_id=model_id, num_layers=num_layers, reason=reason)
