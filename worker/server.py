"""The worker's HTTP API (aiohttp), exactly as docs/PROTOCOL.md "Worker HTTP API".

`WorkerServer` owns the block, sessions and metrics. Compute (steps; checks of others' work: `worker.verification`)
runs on one thread, database writes on another, in order. Errors leave as `{"error": "..."}` (`shardnet.peer.errors`)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import torch
from aiohttp import web

from shardnet import trace
from shardnet.model.adapters import ModelError
from shardnet.peer.errors import DRAINING, InvalidTensor, SessionConflict, TicketRejected, WorkerUnavailable
from shardnet.span import LayerSpan
from shardnet.wire.commitment import merkle_root, step_hash
from shardnet.wire.tickets import TicketError, ticket_max_positions, verify_ticket
from worker import memory
from worker.batching import StepBatcher
from worker.coordinator_check import CoordinatorCheck, finish_job_check, start_job_check
from worker.finishing import StepFinisher
from worker.forwarding import SESSION_TOKEN_HEADER
from worker.http_errors import errors_as_json, read_body
from worker.inputs import (
    MAX_OPEN_JSON_BYTES,
    check_job_id,
    check_session_id,
    decode_step_input,
    parse_open_request,
    parse_start_pos,
)
from worker.job_commitment import CommitmentSigner, JobCommitments
from worker.limits import BlockInfo, ServerLimits
from worker.metrics import WorkerMetrics
from worker.multi_step import MultiStepEndpoint
from worker.push_links import forward, forwards, set_next_hop, step_answer
from worker.sessions import ModelSession, Session
from worker.state import WorkerState
from worker.verification import CommittedSteps, VerdictSigner, VerifyEndpoint

log = logging.getLogger(__name__)

__all__ = ["BlockInfo", "CoordinatorCheck", "ServerLimits", "WorkerServer", "SESSION_TOKEN_HEADER"]


class WorkerServer:
    """One worker's sessions behind the HTTP API. Build with `app()`, stop with `drain()` then `shutdown()`."""

    def __init__(
        self,
        *,
        address: str,
        model_name: str,
        model_id: int | None,
        block: Any,
        info: BlockInfo,
        is_coordinator: Callable[[str], bool],
        state: WorkerState | None = None,
        limits: ServerLimits | None = None,
        extra_routes: Iterable[web.AbstractRouteDef] = (),
        perturb_outputs: float = 0.0,
        on_session_closed: Callable[[], None] | None = None,
        chain_id: int = 0,
        registry_address: str = "",
        signer: CommitmentSigner | None = None,
        job_coordinator: Callable[[int], str | None] | None = None,
        verdict_signer: VerdictSigner | None = None,
    ) -> None:
        self.address = address
        self.model_name = model_name
        self.model_id = model_id
        self.block = block
        self.info = info
        self.limits = limits or ServerLimits()
        self.state = state
        self.perturb_outputs = perturb_outputs
        self.draining = False
        self.metrics = WorkerMetrics()
        self._is_coordinator = is_coordinator
        self.chain_id = chain_id
        self.registry_address = registry_address
        self.commitments = JobCommitments(signer, state, info.span)
        self._job_coordinator = job_coordinator
        self.committed = CommittedSteps()  # each closed job's input hashes and fingerprints, for disputes
        self._verify = VerifyEndpoint(self, verdict_signer)
        self._on_session_closed = on_session_closed
        self._extra_routes = list(extra_routes)
        self._compute = ThreadPoolExecutor(max_workers=1, thread_name_prefix="worker-compute")
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="worker-db")
        self.batcher = StepBatcher(
            self._compute,
            StepFinisher(info, perturb_outputs),
            limits=self.limits,
            metrics=self.metrics,
            record=self.state.steps_recorded if self.state is not None else None,
        )
        self.http: aiohttp.ClientSession | None = None  # push mode: forwards, direct answers
        self._janitor: asyncio.Task[None] | None = None
        self.sessions = memory.session_manager(self.limits, info, on_close=self._session_closed)
        self._trimmer = memory.MemoryTrimmer()
        self.top_k = memory.top_k_of(info)  # logits a compact answer carries per position

    # -- application
    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.limits.max_body_bytes,
            middlewares=[errors_as_json(self.metrics, self.limits.max_body_bytes)],
        )
        app.add_routes(
            [
                web.post("/v1/sessions", self.open_session),
                web.post("/v1/sessions/{session_id}/step", self.step),
                web.get("/v1/sessions/{session_id}/outputs", self.outputs),
                web.post("/v1/sessions/{session_id}/next", lambda request: set_next_hop(self, request)),
                web.delete("/v1/sessions/{session_id}", self.close_session),
                web.get("/health", self.health),
                web.get("/metrics", self.metrics_page),
                *self._verify.routes(),
                *MultiStepEndpoint(self).routes(),  # many sessions' steps in one request
                *self._extra_routes,
            ]
        )
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, _app: web.Application) -> None:
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.limits.forward_timeout_s))
        self._janitor = asyncio.create_task(self._expire_loop())

    async def _on_cleanup(self, _app: web.Application) -> None:
        if self._janitor is not None:
            self._janitor.cancel()
        self.sessions.close_all("shutdown")
        if self.http is not None:
            await self.http.close()
        self._compute.shutdown(wait=True)
        self._db.shutdown(wait=True)

    async def _expire_loop(self) -> None:
        period = max(0.05, min(5.0, self.limits.idle_timeout_s / 4, self.limits.unused_reservation_s / 4))
        while True:
            await asyncio.sleep(period)
            self.sessions.expire_idle()

    # -- handlers
    async def open_session(self, request: web.Request) -> web.Response:
        if self.draining:
            raise WorkerUnavailable("worker is shutting down (draining): use another worker", code=DRAINING)
        req = parse_open_request(
            await self._read_body(request, MAX_OPEN_JSON_BYTES), is_last=self.info.is_last
        )
        loop = asyncio.get_running_loop()
        raw_job_id = req.ticket.get("job_id")
        if isinstance(raw_job_id, int) and not isinstance(raw_job_id, bool):
            check_job_id(raw_job_id)  # before the signature: an id beyond uint256 must not reach the encoder
        try:
            signer = verify_ticket(
                req.ticket, worker=self.address, chain_id=self.chain_id, registry=self.registry_address
            )
        except TicketError as exc:
            raise TicketRejected(str(exc)) from exc
        job_id = check_job_id(req.ticket["job_id"])
        if not await loop.run_in_executor(None, self._is_coordinator, signer):
            raise TicketRejected(
                f"ticket is signed by {signer}, which is not an approved coordinator on chain: "
                "ask the registry owner to approve it with setCoordinator"
            )
        span = LayerSpan(*req.ticket["span"])
        if span != self.info.span:
            raise InvalidTensor(
                f"ticket asks for layers {span} but this worker serves layers {self.info.span}"
            )
        session_id = check_session_id(req.ticket["session_id"])
        if self.state is not None and await loop.run_in_executor(
            self._db, self.state.session_known, session_id
        ):
            raise SessionConflict(
                f"session {session_id!r} was already opened on this worker: ask for a new ticket"
            )
        job_check = None  # job 0: a session outside any job, never paid; else judged before any output leaves
        if job_id and self._job_coordinator is not None:
            job_check = start_job_check(self._job_coordinator, job_id, signer)
        session = self.sessions.open(
            session_id=session_id,
            coordinator=signer,
            job_id=job_id,
            codec=req.codec,
            next_hop=req.next_hop,
            make_compute=self._new_compute_session,
            max_positions=ticket_max_positions(req.ticket),
            reserve_positions=req.max_positions,
            expires_at=req.ticket["expires_at"],
        )
        session.compact, session.answer_to = req.answer == "top_k", req.answer_to
        session.job_check = job_check
        self.metrics.sessions_open.set(len(self.sessions))
        if self.state is not None:
            try:
                await loop.run_in_executor(
                    self._db,
                    self.state.session_opened,
                    session_id,
                    session.job_id,
                    signer,
                    span.start,
                    span.end,
                    json.dumps(req.ticket),
                )
            except BaseException:  # not recorded: the session must not stay open (nor its memory held)
                self.sessions.close(session_id, "failed")
                raise
        log.info("session %s opened for job %s by %s", session_id, session.job_id, signer)
        return web.json_response(
            {
                "session_id": session_id,
                "span": [span.start, span.end],
                "max_length": self.limits.max_length,
                "session_token": session.token,
            }
        )

    async def step(self, request: web.Request) -> web.Response:
        trace.mark("recv")
        session = self._session(request)
        session.busy += 1
        try:
            start_pos = parse_start_pos(request.headers.get("X-Start-Pos"))
            body = await self._read_body(request, self.limits.max_body_bytes)
            x = decode_step_input(
                body,
                is_first=self.info.is_first,
                hidden_size=self.info.hidden_size,
                vocab_size=self.info.vocab_size,
                max_length=self.limits.max_length,
            )
            async with session.lock:
                if session.closed:
                    raise SessionConflict(f"session {session.session_id!r} was closed while this step waited")
                self.sessions.check_step(session, start_pos, int(x.shape[1]))
                frame, digest, index = await self._compute_step(session, x, start_pos, step_hash(body))
                await finish_job_check(session, self.sessions.close)  # before its first output leaves
                if not forwards(session, request):
                    return await step_answer(self, session, request, frame, digest, index)
            # outside the lock: a session's next step comes only after this one's answer, which needs every
            # worker after this one to have received it; waiting for the acknowledgement holds nothing up
            return await forward(self, session, request, frame, digest, start_pos)
        finally:
            session.busy -= 1
            session.last_used = time.monotonic()

    async def outputs(self, request: web.Request) -> web.Response:
        session = self._session(request)
        body, headers = memory.outputs_answer(list(session.output_frames), self.info, session.codec)
        return web.Response(body=body, headers=headers, content_type="application/octet-stream")

    async def close_session(self, request: web.Request) -> web.Response:
        session = self._session(request)
        async with session.lock:  # let a step in flight finish first
            if not session.closed:
                self.sessions.close(session.session_id, "closed")
        body: dict[str, Any] = {
            "steps": session.steps,
            "commitment": "0x" + merkle_root(session.leaves).hex(),
        }
        if self.commitments.due(session):
            # signed and stored (after the close queued above, on the same database thread) before it leaves
            signed = await asyncio.get_running_loop().run_in_executor(
                self._db, self.commitments.sign, session
            )
            if signed is not None:
                body["job_commitment"] = signed.to_json()
        return web.json_response(body)

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "address": self.address,
                "model": self.model_name,
                "model_id": self.model_id,
                "span": [self.info.span.start, self.info.span.end],
                "num_layers": self.info.num_layers,
                "sessions": len(self.sessions),
                "max_sessions": self.limits.max_sessions,
                "max_length": self.limits.max_length,
                "max_verify_positions": self.limits.verify_positions,  # a check (POST /v1/verify) holds this many
                "draining": self.draining,
                "dtype": str(getattr(self.block, "dtype", "float32")).removeprefix("torch."),
                "device": str(getattr(self.block, "device", "cpu")),  # memory.budget_bytes is of this device
                "memory": memory.memory_health(self.sessions),
            }
        )

    async def metrics_page(self, _request: web.Request) -> web.Response:
        body, content_type = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    def begin_drain(self) -> None:
        self.draining = True

    async def drain(self, grace_s: float) -> int:
        """Refuse new sessions, wait up to `grace_s` for open ones to close, then close the rest. Returns how many were cut."""
        self.begin_drain()
        deadline = time.monotonic() + grace_s
        while len(self.sessions) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        cut = self.sessions.close_all("drained")
        if cut:
            log.warning("closed %d sessions still open after the %.0f s grace period", len(cut), grace_s)
        await asyncio.get_running_loop().run_in_executor(self._db, lambda: None)  # flush queued writes
        return len(cut)

    # -- internals
    def _session(self, request: web.Request) -> Session:
        """The session the path names, if the request carries its token (404 unknown, 401 wrong token)."""
        return self.sessions.get(
            request.match_info["session_id"], token=request.headers.get(SESSION_TOKEN_HEADER, "")
        )

    async def _read_body(self, request: web.Request, max_bytes: int) -> bytes:
        """The body, or 413 (too large) / 408 (not sent within `body_timeout_s`)."""
        return await read_body(request, max_bytes, self.limits.body_timeout_s)

    def _new_compute_session(self) -> ModelSession:
        session: ModelSession = self.block.new_session()
        return session

    async def _compute_step(
        self, session: Session, x: torch.Tensor, start_pos: int, input_hash: bytes
    ) -> tuple[bytes, bytes, int]:
        t0 = time.perf_counter()
        index = len(session.step_hashes)  # the session's lock is held: no other step of it runs meanwhile
        try:
            frame, kept, digest, step_leaf, fingerprint = await self.batcher.run(
                session, x, start_pos, index, input_hash
            )
        except ModelError as exc:  # inputs are checked first, so this is rare; the session cannot go on
            self.sessions.close(session.session_id, "failed")
            raise InvalidTensor(
                f"the model refused this step ({exc}); open a new session and replay"
            ) from exc
        self.metrics.step_seconds.observe(time.perf_counter() - t0)
        self.metrics.tokens_processed.inc(int(x.shape[1]))
        session.step_hashes.append(digest)
        session.leaves.append(step_leaf)
        session.committed.append((input_hash, fingerprint))
        session.output_frames.append(kept)
        session.output_bytes += len(kept) + memory.OBJECT_OVERHEAD
        return frame, digest, index

    def _session_closed(self, session: Session, reason: str) -> None:
        close = getattr(session.compute, "close", None)
        if close is not None and not session.busy:
            close()  # frees the KV cache now rather than at garbage collection
        session.output_frames = []  # nothing reads them after the close
        self._trimmer.after_close(len(self.sessions))  # hand what was freed back to the system
        self.metrics.sessions_open.set(len(self.sessions))
        self.metrics.sessions_closed.labels(reason).inc()
        log.info("session %s %s after %d steps", session.session_id, reason, session.steps)
        if session.job_id:
            self.committed.add(session.job_id, session.committed)
        if self.state is not None:
            root = merkle_root(session.leaves) if session.leaves else None
            self._db_write(self.state.session_closed, session.session_id, reason, session.steps, root)
            if reason != "closed" and self.commitments.due(session):
                # nobody asked for it (expired, drained, evicted, failed): sign it now, due for posting at once
                self._db_write(self.commitments.sign, session, 0.0)
        if self._on_session_closed is not None:
            self._db_write(self._on_session_closed)

    def _db_write(self, fn: Callable[..., Any], *args: Any) -> None:
        future = self._db.submit(fn, *args)
        future.add_done_callback(_log_failure)


def _log_failure(future: Any) -> None:
    if (exc := future.exception()) is not None:
        log.error("background database write failed: %s", exc, exc_info=exc)
