"""The worker's training API: forward and backward passes of its frozen block for a client's fine-tuning.

    POST   /v1/train/sessions              {"ticket": {...}} -> {"session_id", "span", "session_token"}
    POST   /v1/train/{session_id}/forward  X-Step-Id: k | eval; safetensors {"hidden", adapters...} -> {"hidden"}
    POST   /v1/train/{session_id}/backward X-Step-Id: k; safetensors {"grad"} -> {"grad_hidden", "grad.<name>"...}
    DELETE /v1/train/{session_id}          -> {"forward_positions", "backward_positions", "positions", ...}

Tickets are the inference sessions' (signed by an approved coordinator, for this worker's span); every
later call carries the session's X-Session-Token. Bodies are safetensors files of float32 tensors; the
adapters (see `shardnet.model.training`) go with the forward and are kept, with its input, for the
step's backward (X-Step-Id: eval keeps nothing: a forward for evaluation). Bad input is refused with 4xx before any compute; the session stays usable.
Answers carry X-Step-Hash (keccak of the body), and the close answers the Merkle root over them and the
positions to be paid: forward positions + backward_factor x backward positions (docs/finetune.md).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import torch
from aiohttp import web

from shardnet.errors import WireError
from shardnet.model.adapters import ModelError
from shardnet.model.training import check_adapters, span_backward, span_forward
from shardnet.peer.errors import (
    BadRequest,
    InvalidTensor,
    PayloadTooLarge,
    SessionConflict,
    TicketRejected,
    WorkerUnavailable,
)
from shardnet.span import LayerSpan
from shardnet.wire.commitment import merkle_root, step_hash
from shardnet.wire.json_limits import BodyRejected, loads_limited
from shardnet.wire.tensor_dict import decode_tensors, encode_tensors
from shardnet.wire.tickets import TicketError, ticket_max_positions, verify_ticket
from worker.forwarding import SESSION_TOKEN_HEADER
from worker.http_errors import read_body
from worker.inputs import MAX_OPEN_JSON_BYTES, MAX_OPEN_JSON_DEPTH, check_job_id, check_session_id
from worker.training_sessions import KeptStep, TrainingLimits, TrainingSession, TrainingSessions

if TYPE_CHECKING:
    from worker.server import WorkerServer

__all__ = ["TrainingAPI", "TrainingLimits"]


def decode_body(body: bytes) -> dict[str, torch.Tensor]:
    """A step's safetensors body (400 if malformed or not float32)."""
    try:
        return decode_tensors(body)
    except WireError as exc:
        raise BadRequest(f"{exc}; training steps take safetensors bodies of float32 tensors") from exc


class TrainingAPI:
    """Training sessions of one `WorkerServer` (which owns the block, compute thread and ticket checks).

    Mounted as the server's extra routes, then bound to it::

        training = TrainingAPI()
        server = WorkerServer(..., extra_routes=training.routes())
        training.bind(server)
    """

    def __init__(self, limits: TrainingLimits | None = None, idle_timeout_s: float = 300.0) -> None:
        self._server: WorkerServer | None = None
        self.sessions = TrainingSessions(limits or TrainingLimits(), idle_timeout_s)

    def bind(self, server: WorkerServer) -> TrainingAPI:
        self._server = server
        self.sessions.idle_timeout_s = server.limits.idle_timeout_s
        self.sessions.on_close = self._session_ended
        return self

    @property
    def server(self) -> WorkerServer:
        if self._server is None:
            raise RuntimeError("TrainingAPI.bind(server) was not called before serving")
        return self._server

    @property
    def limits(self) -> TrainingLimits:
        return self.sessions.limits

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/train/sessions", self.open_session),
            web.post("/v1/train/{session_id}/forward", self.forward),
            web.post("/v1/train/{session_id}/backward", self.backward),
            web.delete("/v1/train/{session_id}", self.close_session),
        ]

    # -- handlers
    async def open_session(self, request: web.Request) -> web.Response:
        server = self.server
        if server.draining:
            raise WorkerUnavailable("worker is shutting down and takes no new sessions: use another worker")
        body = await read_body(request, MAX_OPEN_JSON_BYTES, server.limits.body_timeout_s)
        try:
            data = loads_limited(body, max_bytes=MAX_OPEN_JSON_BYTES, max_depth=MAX_OPEN_JSON_DEPTH)
        except BodyRejected as exc:
            raise BadRequest(f'{exc}; send {{"ticket": {{...}}}}') from exc
        if not isinstance(data, dict) or set(data) != {"ticket"} or not isinstance(data["ticket"], dict):
            raise BadRequest('send {"ticket": {...}}: the ticket a coordinator signed for this worker')
        ticket = data["ticket"]
        signer, job_id = await self._authorize(ticket)
        session_id = check_session_id(ticket["session_id"])
        if server.state is not None and await asyncio.get_running_loop().run_in_executor(
            server._db, server.state.session_known, session_id
        ):
            raise SessionConflict(
                f"session {session_id!r} was already opened on this worker: ask for a new ticket"
            )
        session = self.sessions.open(session_id, signer, job_id)
        session.max_positions = ticket_max_positions(ticket)
        span = server.info.span
        if (
            server.state is not None
        ):  # recorded with its ticket: the fallback post needs it, also after a crash
            try:
                await asyncio.get_running_loop().run_in_executor(
                    server._db, server.state.session_opened, session_id, job_id, signer, span.start,
                    span.end, json.dumps(ticket),
                )  # fmt: skip
            except BaseException:
                self.sessions.close(session, "failed")
                raise
        return web.json_response(
            {"session_id": session_id, "span": [span.start, span.end], "session_token": session.token}
        )

    async def forward(self, request: web.Request) -> web.Response:
        session = self._session(request)
        evaluate = request.headers.get("X-Step-Id") == "eval"  # a forward only: nothing kept for a backward
        step_id = -1 if evaluate else _step_id(request)
        tensors = decode_body(await self._body(request))
        hidden = tensors.pop("hidden", None)
        if hidden is None:
            raise BadRequest(
                "the forward body needs a tensor 'hidden' [batch, n, hidden] besides the adapters"
            )
        self._check_hidden(hidden, "hidden")
        try:
            check_adapters(self.server.block, tensors, seq_len=int(hidden.shape[1]))
        except ModelError as exc:
            raise InvalidTensor(str(exc)) from exc
        async with session.lock:
            self._check_open(session)
            self._check_budget(session, int(hidden.shape[0] * hidden.shape[1]))
            step = KeptStep(hidden, tensors, tuple(hidden.shape))
            if not evaluate:
                self.sessions.keep(session, step_id, step)
            try:
                out = await self._compute(_run_forward, self.server.block, step)
            except BaseException:
                session.kept.pop(step_id, None)  # nothing to pull back through: the step may be sent again
                raise
            body = encode_tensors({"hidden": out})
            positions = int(hidden.shape[0] * hidden.shape[1])
            answer = await self._answer(session, body, positions)
            session.forward_positions += positions
            return answer

    async def backward(self, request: web.Request) -> web.Response:
        session = self._session(request)
        step_id = _step_id(request)
        tensors = decode_body(await self._body(request))
        if set(tensors) != {"grad"}:
            raise BadRequest(
                f"the backward body holds one tensor 'grad' (d loss / d output), got {sorted(tensors)}"
            )
        grad = tensors["grad"]
        async with session.lock:
            self._check_open(session)
            self._check_budget(
                session,
                self.limits.backward_factor * int(grad.shape[0] * grad.shape[1]) if grad.dim() >= 2 else 0,
            )
            step = self.sessions.take(session, step_id)
            if tuple(grad.shape) != step.output_shape:
                raise InvalidTensor(
                    f"grad has shape {list(grad.shape)} but step {step_id}'s output has shape "
                    f"{list(step.output_shape)}: send d loss / d output of that step"
                )
            _check_finite(grad, "grad")
            grad_in, grads = await self._compute(
                span_backward, self.server.block, step.hidden, step.adapters, grad
            )
            self.sessions.finish(session, step_id)
            body = encode_tensors({"grad_hidden": grad_in, **{f"grad.{k}": v for k, v in grads.items()}})
            positions = int(step.hidden.shape[0] * step.hidden.shape[1])
            answer = await self._answer(session, body, self.limits.backward_factor * positions)
            session.backward_positions += positions
            return answer

    async def close_session(self, request: web.Request) -> web.Response:
        session = self._session(request)
        async with session.lock:
            self.sessions.close(session)
        factor = self.limits.backward_factor
        positions = session.forward_positions + factor * session.backward_positions
        root = merkle_root(session.step_hashes) if session.step_hashes else b"\x00" * 32
        answer: dict[str, Any] = {
            "steps": len(session.step_hashes),
            "forward_positions": session.forward_positions,
            "backward_positions": session.backward_positions,
            "backward_factor": factor,
            "positions": positions,
            "commitment": "0x" + root.hex(),
        }
        server = self.server
        signer = server.commitments._signer  # the server's EIP-712 commitment signer, if it signs
        if signer is not None and session.job_id and session.step_hashes:
            if server.state is None:
                signed = signer(session.job_id, server.info.span, positions, len(session.step_hashes), root)
            else:  # stored before it leaves, over every session of the job here (the fallback posts it)
                found = await asyncio.get_running_loop().run_in_executor(
                    server._db, server.commitments.sign_job, session.job_id
                )
                assert found is not None  # this session's steps are recorded
                signed = found
            answer["job_commitment"] = signed.to_json()
        return web.json_response(answer)

    # -- internals
    def _session_ended(self, session: TrainingSession, reason: str) -> None:
        """Record a session's end; one that ends without the client's close (expired, failed) is signed at once,
        due for the fallback post at once (nobody was handed its commitment)."""
        server = self._server
        if server is None or server.state is None:
            return
        root = merkle_root(session.step_hashes) if session.step_hashes else None
        server._db_write(
            server.state.session_closed, session.session_id, reason, len(session.step_hashes), root
        )
        if reason != "closed" and session.job_id and session.step_hashes:
            server._db_write(server.commitments.sign_job, session.job_id, 0.0)
        if server._on_session_closed is not None:
            server._db_write(server._on_session_closed)

    def _check_budget(self, session: TrainingSession, more: int) -> None:
        """Refuse a pass that would bill more positions than the ticket's `max_positions` allows."""
        billed = session.forward_positions + self.limits.backward_factor * session.backward_positions
        if session.max_positions and billed + more > session.max_positions:
            raise PayloadTooLarge(
                f"this pass would bring the session to {billed + more} billed positions, above the ticket's "
                f"max_positions {session.max_positions}: close the session and continue under a new ticket (job)"
            )

    async def _authorize(self, ticket: dict[str, Any]) -> tuple[str, int]:
        """The ticket checks of an inference session's open: signature, approved coordinator, job's own
        coordinator, this worker's span. Returns (signer, job id)."""
        server = self.server
        loop = asyncio.get_running_loop()
        raw_job_id = ticket.get("job_id")
        if isinstance(raw_job_id, int) and not isinstance(raw_job_id, bool):
            check_job_id(raw_job_id)
        try:
            signer = verify_ticket(
                ticket, worker=server.address, chain_id=server.chain_id, registry=server.registry_address
            )
        except TicketError as exc:
            raise TicketRejected(str(exc)) from exc
        job_id = check_job_id(ticket["job_id"])
        if not await loop.run_in_executor(None, server._is_coordinator, signer):
            raise TicketRejected(
                f"ticket is signed by {signer}, which is not an approved coordinator on chain: "
                "ask the registry owner to approve it with setCoordinator"
            )
        if job_id and server._job_coordinator is not None:
            named = await loop.run_in_executor(None, server._job_coordinator, job_id)
            if named is None or named.lower() != signer.lower():
                raise TicketRejected(
                    f"ticket for job {job_id} is signed by {signer}, which is not the job's coordinator "
                    f"({named or 'job not on chain'})"
                )
        if LayerSpan(*ticket["span"]) != server.info.span:
            raise InvalidTensor(
                f"ticket asks for layers {ticket['span']} but this worker serves {server.info.span}"
            )
        return signer, job_id

    def _session(self, request: web.Request) -> TrainingSession:
        return self.sessions.get(
            request.match_info["session_id"], request.headers.get(SESSION_TOKEN_HEADER, "")
        )

    def _check_open(self, session: TrainingSession) -> None:
        if session.closed:
            raise SessionConflict(
                f"training session {session.session_id!r} was closed while this call waited"
            )

    async def _body(self, request: web.Request) -> bytes:
        return await read_body(request, self.server.limits.max_body_bytes, self.server.limits.body_timeout_s)

    def _check_hidden(self, hidden: torch.Tensor, name: str) -> None:
        info, limits = self.server.info, self.server.limits
        if (
            hidden.dim() != 3
            or hidden.shape[2] != info.hidden_size
            or hidden.shape[1] < 1
            or hidden.shape[0] < 1
        ):
            raise InvalidTensor(
                f"{name} must have shape [batch, n, {info.hidden_size}], got {list(hidden.shape)}"
            )
        if hidden.shape[0] > self.limits.max_batch or hidden.shape[1] > limits.max_length:
            raise InvalidTensor(
                f"{name} has {hidden.shape[0]} sequences of {hidden.shape[1]} positions; this worker takes at "
                f"most {self.limits.max_batch} of {limits.max_length}"
            )
        _check_finite(hidden, name)

    async def _compute(self, fn: Any, *args: Any) -> Any:
        """Run `fn(*args)` on the server's compute thread; a model error is the client's (422)."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.server._compute, fn, *args)
        except ModelError as exc:
            raise InvalidTensor(f"the block refused this step: {exc}") from exc

    async def _answer(self, session: TrainingSession, body: bytes, positions: int) -> web.Response:
        """The step's answer, its hash recorded (durably, with the positions it bills) before it leaves."""
        digest = step_hash(body)
        state = self.server.state
        if state is not None:
            await asyncio.get_running_loop().run_in_executor(
                self.server._db, state.step_recorded, session.session_id, len(session.step_hashes), digest,
                positions,
            )  # fmt: skip
        session.step_hashes.append(digest)
        session.last_used = time.monotonic()
        headers = {"X-Step-Hash": "0x" + digest.hex(), "X-Step-Index": str(len(session.step_hashes) - 1)}
        return web.Response(body=body, headers=headers, content_type="application/octet-stream")


def _run_forward(block: Any, step: KeptStep) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = span_forward(block, step.hidden, step.adapters)
    _check_finite(out, "this block's output")
    return out


def _step_id(request: web.Request) -> int:
    raw = request.headers.get("X-Step-Id")
    if raw is None or not raw.isdigit() or len(raw) > 18:
        raise BadRequest(f"header X-Step-Id must be the step's number (a non-negative integer), got {raw!r}")
    return int(raw)


def _check_finite(tensor: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise InvalidTensor(f"{name} holds {bad} NaN or infinite values: check the client's loss and inputs")
