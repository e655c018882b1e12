"""`POST /v1/steps`: many sessions' steps in one request (`shardnet.wire.multi_step`), each answered on its own.

The coordinator coalesces its concurrent jobs' steps toward this worker (coordinator.step_coalescer) so
the batching window (`worker.batching.StepBatcher`) fills: every step of the request runs exactly as it
would through `POST /v1/sessions/{id}/step` (its session's token, lock, position check, compute, hash,
commitment record), all at once, so the decode steps among them share batched forwards. A step that
fails (unknown session, wrong token, bad frame, wrong position, a model error) gets its own status and
JSON error in the answer; the others' outputs stand. Push-mode sessions (with a next hop) are not
stepped here: their output goes to the next worker, not back (409). See docs/batching.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING

from aiohttp import web

from shardnet.errors import WireError
from shardnet.peer.errors import BadRequest, SessionConflict, WorkerAPIError
from shardnet.wire.commitment import step_hash
from shardnet.wire.multi_step import StepAnswer, StepItem, decode_steps, encode_answers
from worker.coordinator_check import finish_job_check
from worker.inputs import decode_step_input

if TYPE_CHECKING:
    from worker.server import WorkerServer

log = logging.getLogger(__name__)


class MultiStepEndpoint:
    """The handler of `POST /v1/steps` for one worker server."""

    def __init__(self, server: WorkerServer) -> None:
        self.server = server

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/steps", self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        server = self.server
        body = await server._read_body(request, server.limits.max_body_bytes)
        try:
            items = decode_steps(body)
        except WireError as exc:
            raise BadRequest(f"malformed multi-step body: {exc}") from exc
        seen: set[str] = set()
        for item in items:  # two steps of one session in one request cannot both be at its next position
            if item.session_id in seen:
                raise BadRequest(
                    f"session {item.session_id!r} has two steps in one multi-step request: send its "
                    "next step after this one's answer"
                )
            seen.add(item.session_id)
        answers = await asyncio.gather(*(self._one(item) for item in items))
        return web.Response(body=encode_answers(list(answers)), content_type="application/octet-stream")

    async def _one(self, item: StepItem) -> StepAnswer:
        try:
            digest, index, frame = await self._step(item)
            return StepAnswer(200, digest, index, frame)
        except WorkerAPIError as exc:
            error: dict[str, str] = {"error": exc.message}
            if exc.code is not None:
                error["code"] = exc.code
            self.server.metrics.request_errors.labels(str(exc.status)).inc()
            return StepAnswer(exc.status, error=json.dumps(error).encode())
        except Exception:
            log.exception("internal error in a step of session %s in POST /v1/steps", item.session_id)
            self.server.metrics.request_errors.labels("500").inc()
            return StepAnswer(500, error=b'{"error": "internal worker error; see the worker\'s log"}')

    async def _step(self, item: StepItem) -> tuple[bytes, int, bytes]:
        """One step, as `WorkerServer.step` runs it: (step hash, step index, output frame)."""
        server = self.server
        session = server.sessions.get(item.session_id, token=item.token)
        if session.next_hop is not None:
            raise SessionConflict(
                f"session {item.session_id!r} forwards its outputs to a next worker (push mode): "
                "step it with POST /v1/sessions/{id}/step"
            )
        session.busy += 1
        try:
            x = decode_step_input(
                item.frame,
                is_first=server.info.is_first,
                hidden_size=server.info.hidden_size,
                vocab_size=server.info.vocab_size,
                max_length=server.limits.max_length,
            )
            async with session.lock:
                if session.closed:
                    raise SessionConflict(f"session {session.session_id!r} was closed while this step waited")
                server.sessions.check_step(session, item.start_pos, int(x.shape[1]))
                frame, digest, index = await server._compute_step(
                    session, x, item.start_pos, step_hash(item.frame)
                )
                await finish_job_check(session, server.sessions.close)  # before its first output leaves
                return digest, index, frame
        finally:
            session.busy -= 1
            session.last_used = time.monotonic()
