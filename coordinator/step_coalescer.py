"""Coalescing the steps of concurrent jobs toward each worker: one `POST /v1/steps` carries many sessions' steps.

Each job's pipeline steps its hops one at a time, so without help each worker sees its sessions' steps one
request at a time and its batching window (`worker.batching`) catches few of them. Here a step toward a
worker joins that worker's queue; whatever queued in the same turn of the event loop, or while the
worker's requests were in flight, leaves together (at most `max_steps` steps per request, at most
`max_in_flight` requests per worker: with 1, every group of sessions that reaches a worker while it computes
joins the next request, so groups merge into fuller batches instead of staying out of phase). A lone step goes through `POST /v1/sessions/{id}/step` as before,
so one session alone runs exactly as without coalescing. Each step's answer is its own: one session's
error raises in that session's pipeline alone (which fails over or fails its job), the others go on.

Queueing here is also the admission of work to a worker: at most `max_positions_in_flight` positions
(a prefill counts its prompt, a decode step 1) are in flight to one worker, so 64 prefills arriving at
once queue here, where no step timeout runs, instead of timing out one after another in the worker's
compute queue. The step timeout measures only a request actually sent.

Gathering (`gather_s` > 0): each step names its flow (the job's generation) and the worker its flow goes to
next (the next hop; after the last hop, the first one, for the next token). An idle worker that awaits a
flow whose step is in flight to another worker (sent, so it arrives within about one forward) holds its
queue for it, at most `gather_s` after the oldest queued step (only sent steps are awaited: two idle
workers never hold their queues for each other). Groups of sessions one
hop apart then merge, and concurrent jobs move in lock step: each worker batches all of them in one
forward instead of paying a forward per group out of phase. A flow is no longer expected once it is queued
at that worker, when its generation ends (`release`), or after `EXPECTED_S`; one job alone never waits.
See docs/batching.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import aiohttp
import torch

from shardnet.peer.client import StepResult, WorkerClient
from shardnet.peer.errors import WorkerAPIError
from shardnet.wire.frames import encode_frame
from shardnet.wire.multi_step import StepItem

log = logging.getLogger(__name__)

EXPECTED_S = 2.0  # a flow announced to a worker this long ago and not arrived is no longer waited for


@dataclass
class _Queued:
    client: WorkerClient  # the session's own client (holds its token; sends a lone step)
    session_id: str
    x: torch.Tensor
    start_pos: int
    codec: str
    future: asyncio.Future[StepResult]
    flow: object = None
    next_endpoint: str | None = None
    queued_at: float = field(default_factory=time.monotonic)

    @property
    def positions(self) -> int:
        return int(self.x.shape[1])


@dataclass
class _Worker:
    http: (
        aiohttp.ClientSession
    )  # every request of this coordinator to the worker: one bounded connection pool
    client: WorkerClient  # sends this worker's multi-step requests
    queue: list[_Queued] = field(default_factory=list)
    in_flight: int = 0  # requests
    positions_in_flight: int = 0
    kick_scheduled: bool = False
    multi: bool = True  # False once the worker answered 404/405 to POST /v1/steps (an older worker)
    expected: dict[object, float] = field(default_factory=dict)  # flows on their way here -> since when
    gather_timer: asyncio.TimerHandle | None = None


@dataclass
class CoalescerStats:
    requests: int = 0  # requests sent (single and multi)
    steps: int = 0  # steps sent in them
    largest: int = 0  # most steps in one request
    gathered: int = 0  # times an idle worker's queue was held for flows on their way (gathering)


class StepCoalescer:
    """Per worker endpoint, the steps of every job toward it, sent together."""

    def __init__(
        self,
        *,
        timeout_s: float,
        max_steps: int = 16,
        max_in_flight: int = 1,
        max_positions_in_flight: int = 256,
        max_connections: int = 16,
        gather_s: float = 0.0,
    ) -> None:
        self.timeout_s = timeout_s
        self.max_steps = max_steps
        self.max_in_flight = max_in_flight
        self.max_positions_in_flight = max_positions_in_flight
        self.max_connections = max_connections
        self.gather_s = gather_s
        self.stats = CoalescerStats()
        self._workers: dict[str, _Worker] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def step(
        self,
        endpoint: str,
        client: WorkerClient,
        session_id: str,
        x: torch.Tensor,
        start_pos: int,
        codec: str | None,
        *,
        flow: object = None,
        next_endpoint: str | None = None,
    ) -> StepResult:
        """Step `session_id` (opened through `client`) on the worker at `endpoint`; raises its own error.
        `flow`: what the step belongs to (a job's generation; None: a step now and then, e.g. of a check), whose
        next step goes to `next_endpoint` (None: none foreseen): steps there may wait for it (gathering)."""
        worker = self._worker(endpoint)
        future: asyncio.Future[StepResult] = asyncio.get_running_loop().create_future()
        if codec is None:
            codec = "fp32" if x.dtype.is_floating_point else "int64"
        queued = _Queued(client, session_id, x, start_pos, codec, future, flow, next_endpoint)
        if flow is not None:
            worker.expected.pop(flow, None)  # arrived
        worker.queue.append(queued)
        self._schedule_kick(worker)  # steps queued in this turn of the loop leave together
        return await future

    def release(self, flow: object) -> None:
        """The flow ends (its generation is over): no worker waits for it any more."""
        for worker in self._workers.values():
            if worker.expected.pop(flow, None) is not None and worker.queue:
                self._schedule_kick(worker)

    def _schedule_kick(self, worker: _Worker) -> None:
        if not worker.kick_scheduled:
            worker.kick_scheduled = True
            asyncio.get_running_loop().call_soon(self._kick, worker)

    def _hold_for_gathering(self, worker: _Worker) -> bool:
        """True while an idle worker's queue should wait for flows on their way to it (and a kick is then
        scheduled for when the oldest queued step has waited `gather_s`)."""
        if self.gather_s <= 0 or worker.in_flight or not worker.queue:
            return False
        now = time.monotonic()
        deadline = worker.queue[0].queued_at + self.gather_s
        if now >= deadline:
            return False
        for flow, since in list(worker.expected.items()):
            if now - since > EXPECTED_S:
                del worker.expected[flow]
        if not worker.expected or len(worker.queue) >= self.max_steps:
            return False
        if worker.gather_timer is None:
            self.stats.gathered += 1
            worker.gather_timer = asyncio.get_running_loop().call_later(
                deadline - now, self._gather_expired, worker
            )
        return True

    def _gather_expired(self, worker: _Worker) -> None:
        worker.gather_timer = None
        self._kick(worker)

    def request_timeout_s(self, steps: int) -> float:
        """How long a request of `steps` steps may take: the step timeout, plus a quarter of it per further step
        (the worker computes them as one batch, but encodes, hashes and records each; 16 steps: 4.75x)."""
        return self.timeout_s * (1 + (steps - 1) / 4)

    def http_session(self, endpoint: str) -> aiohttp.ClientSession:
        """The connection pool of every request to the worker at `endpoint` (opens, steps, closes): at most
        `max_connections` connections, so many jobs never exceed a worker's connections per IP."""
        return self._worker(endpoint).http

    def _worker(self, endpoint: str) -> _Worker:
        worker = self._workers.get(endpoint)
        if worker is None:
            http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(limit=self.max_connections),
            )
            worker = self._workers[endpoint] = _Worker(http, WorkerClient(endpoint, session=http))
        return worker

    def _kick(self, worker: _Worker) -> None:
        worker.kick_scheduled = False
        if self._hold_for_gathering(worker):
            return
        if worker.gather_timer is not None:
            worker.gather_timer.cancel()
            worker.gather_timer = None
        while worker.queue and worker.in_flight < self.max_in_flight:
            batch: list[_Queued] = []
            positions = worker.positions_in_flight
            for q in worker.queue:
                if len(batch) >= self.max_steps or any(b.session_id == q.session_id for b in batch):
                    break  # full, or a session's next step (it goes after this one's answer)
                if batch or positions:  # the first step of an idle worker always leaves, however long
                    if positions + q.positions > self.max_positions_in_flight:
                        break
                batch.append(q)
                positions += q.positions
            if not batch:
                return  # the worker has enough positions in flight: the rest wait for an answer
            worker.queue = worker.queue[len(batch) :]
            if self.gather_s > 0:  # their next workers may wait for them
                now = time.monotonic()
                for q in batch:
                    if q.flow is not None and q.next_endpoint is not None:
                        self._worker(q.next_endpoint).expected[q.flow] = now
            sent = sum(q.positions for q in batch)
            worker.in_flight += 1
            worker.positions_in_flight += sent
            task = asyncio.ensure_future(self._send(worker, batch, sent))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, worker: _Worker, batch: list[_Queued], positions: int) -> None:
        self.stats.requests += 1
        self.stats.steps += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        try:
            results = await self._request(worker, batch)
        except Exception as exc:  # noqa: BLE001 - the whole request failed: every step in it fails with it
            results = [exc] * len(batch)
        finally:
            worker.in_flight -= 1
            worker.positions_in_flight -= positions
            if worker.queue:
                self._schedule_kick(worker)
        for q, result in zip(batch, results, strict=True):
            if q.future.done():  # its caller was cancelled meanwhile
                continue
            if isinstance(result, BaseException):
                q.future.set_exception(result)
            else:
                q.future.set_result(result)

    async def _request(self, worker: _Worker, batch: list[_Queued]) -> list[StepResult | BaseException]:
        if len(batch) == 1 or not worker.multi:  # alone: the single-step endpoint, as without coalescing
            return list(
                await asyncio.gather(
                    *(q.client.step_full(q.session_id, q.x, q.start_pos, q.codec) for q in batch),
                    return_exceptions=True,
                )
            )
        items = [
            StepItem(
                q.session_id, q.client.session_token(q.session_id), q.start_pos, encode_frame(q.x, q.codec)
            )
            for q in batch
        ]
        try:
            answers: list[StepResult | WorkerAPIError] = await worker.client.steps(
                items, timeout_s=self.request_timeout_s(len(items))
            )
        except WorkerAPIError as exc:
            if exc.status not in (404, 405):
                raise
            log.info(
                "worker %s has no POST /v1/steps (%s): stepping its sessions one by one",
                worker.client.url,
                exc,
            )
            worker.multi = False
            return await self._request(worker, batch)
        return list(answers)

    async def aclose(self) -> None:
        for worker in self._workers.values():
            if worker.gather_timer is not None:
                worker.gather_timer.cancel()
            await worker.http.close()
        self._workers.clear()
