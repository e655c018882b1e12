"""A small async client of the worker HTTP API, for the coordinator and for tests.

    async with WorkerClient("http://127.0.0.1:8700") as w:
        opened = await w.open_session(ticket, "fp16")   # keeps the session's token for the calls below
        out, digest = await w.step(opened["session_id"], token_ids, start_pos=0)
        commitment = await w.close(opened["session_id"])

Every JSON read from a worker is bounded in size and depth (`shardnet.wire.json_limits`): a hostile worker
cannot crash its coordinator with nested brackets. Every failure raises a `shardnet.peer.errors.WorkerAPIError` subclass chosen by the HTTP status (`.status`),
or `WorkerUnreachable` (status 0) when the worker cannot be reached.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import torch
from eth_utils import keccak

from shardnet.chain.commitments import SignedCommitment
from shardnet.errors import ShardnetError, WireError
from shardnet.peer.errors import WorkerAPIError, WorkerUnreachable, error_for_status
from shardnet.wire.frames import decode_frame, encode_frame
from shardnet.wire.json_limits import BodyRejected, loads_limited
from shardnet.wire.multi_step import StepAnswer, StepItem, decode_answers, encode_steps

SESSION_TOKEN_HEADER = "X-Session-Token"
#: JSON answers of a worker are small (an open, a close, /health, an error): refuse more, and deep nesting
MAX_ANSWER_JSON_BYTES, MAX_ANSWER_JSON_DEPTH = 256 * 1024, 8


@dataclass(frozen=True)
class StepResult:
    """A step's output tensor and the hashes that came with it."""

    tensor: torch.Tensor
    step_hash: bytes  # of the response body (the last hop's output in push mode)
    step_index: int
    hop_hashes: list[bytes]  # push mode: one per hop, in route order; else [step_hash]
    #: a last worker's compact answer ("answer": "top_k"): k (tensor is [1, n, 2k]: values then ids), else 0
    top_k: int = 0
    fingerprint: bytes | None = None  # with a compact answer: the fingerprint bound in the step's leaf
    #: push mode: the last worker sent the answer straight to the coordinator (this is the chain's
    #: acknowledgement: `tensor` is empty)
    answered_directly: bool = False


@dataclass(frozen=True)
class ClosedSession:
    """A worker's answer to closing a session."""

    steps: int
    root: bytes  # Merkle root of this session's step hashes
    job_commitment: SignedCommitment | None  # the worker's signed commitment for the whole job, if it signs


class WorkerClient:
    """Client of one worker. Use as an async context manager, or call `aclose()`."""

    def __init__(
        self, url: str, *, timeout_s: float = 120.0, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self._own = session is None
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._tokens: dict[str, str] = {}  # session id -> its X-Session-Token, from the open answer

    async def __aenter__(self) -> WorkerClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own and self._session is not None:
            await self._session.close()
            self._session = None

    # -- API
    async def open_session(
        self,
        ticket: dict[str, Any],
        codec: str = "fp32",
        next: dict[str, str] | None = None,
        max_positions: int = 0,
        answer: str = "full",
        answer_to: str | None = None,
    ) -> dict[str, Any]:
        """Open a session: returns `{"session_id", "span": [a, b], "max_length", "session_token"}`.

        The token is kept for this client's later calls on the session. `next` (push mode) is
        `{"url", "session_id", "token"}` of the session opened on the next worker (`session_token(id)`
        of that worker's client). `max_positions` > 0 reserves the session's worst-case cache memory at
        open: a worker without room answers 503 with code `memory_full` (busy) instead of failing later.
        `answer="top_k"` (last worker only): steps are answered with the top-k logits and their ids;
        `answer_to` (last worker only): the URL it sends the answers of steps with an answer id to."""
        payload: dict[str, Any] = {"ticket": ticket, "codec": codec, "next": next}
        if max_positions:
            payload["max_positions"] = max_positions
        if answer != "full":
            payload["answer"] = answer
        if answer_to:
            payload["answer_to"] = answer_to
        _, body = await self._request(
            "POST",
            "/v1/sessions",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        opened = _answer(body, self.url)
        session_id, token = opened.get("session_id"), opened.get("session_token")
        if not isinstance(session_id, str) or not isinstance(token, str):
            raise WorkerAPIError(
                "worker answered a session open without a session_id and session_token: "
                "it speaks another protocol version; upgrade it or route around it",
                status=502,
                url=self.url,
            )
        self._tokens[session_id] = token
        return opened

    def session_token(self, session_id: str) -> str:
        """The token of a session this client opened (for the previous hop's `next` in push mode)."""
        return self._tokens[session_id]

    def _auth(self, session_id: str) -> dict[str, str]:
        token = self._tokens.get(session_id)
        return {SESSION_TOKEN_HEADER: token} if token else {}

    async def step(
        self, session_id: str, tensor: torch.Tensor, start_pos: int, codec: str | None = None
    ) -> tuple[torch.Tensor, bytes]:
        """Send one step; returns (output tensor, step hash of the response bytes)."""
        result = await self.step_full(session_id, tensor, start_pos, codec)
        return result.tensor, result.step_hash

    async def step_full(
        self,
        session_id: str,
        tensor: torch.Tensor,
        start_pos: int,
        codec: str | None = None,
        *,
        forward: bool = True,
        answer_id: str | None = None,
        timeout_s: float | None = None,
    ) -> StepResult:
        """Like `step`, with the step index and, in push mode, every hop's hash. `forward=False`: a session
        that forwards (push mode) answers this step itself (a replay into a replacement). `answer_id`: the
        last worker sends its answer straight to the coordinator under this id (`answered_directly`).
        `timeout_s`: this request's limit instead of the client's (a push step waits for the whole chain)."""
        if codec is None:
            codec = "int64" if not tensor.dtype.is_floating_point else "fp32"
        headers, body = await self._request(
            "POST",
            f"/v1/sessions/{session_id}/step",
            data=encode_frame(tensor, codec),
            headers={
                "X-Start-Pos": str(start_pos),
                "Content-Type": "application/octet-stream",
                **self._auth(session_id),
                **({} if forward else {"X-Forward": "0"}),
                **({"X-Answer-Id": answer_id} if answer_id else {}),
            },
            **({"timeout": aiohttp.ClientTimeout(total=timeout_s)} if timeout_s else {}),
        )
        return step_answer(headers, body, self.url)

    async def set_next(self, session_id: str, next: dict[str, str] | None) -> None:
        """Push mode: forward the session's later steps to `next` (`{"url", "session_id", "token"}`), or to
        nobody (None: the session answers its steps itself)."""
        await self._request(
            "POST",
            f"/v1/sessions/{session_id}/next",
            data=json.dumps({"next": next}).encode(),
            headers={"Content-Type": "application/json", **self._auth(session_id)},
        )

    async def steps(
        self, items: list[StepItem], timeout_s: float | None = None
    ) -> list[StepResult | WorkerAPIError]:
        """Send many sessions' steps in one `POST /v1/steps` (`shardnet.wire.multi_step`); returns each step's
        result or its own error, in order. A failure of the whole request (unreachable, timeout, a 4xx/5xx of
        the request itself) is raised. `timeout_s` replaces the client's timeout for this request."""
        extra = {"timeout": aiohttp.ClientTimeout(total=timeout_s)} if timeout_s is not None else {}
        _, body = await self._request(
            "POST",
            "/v1/steps",
            data=encode_steps(items),
            headers={"Content-Type": "application/octet-stream"},
            **extra,
        )
        try:
            answers = decode_answers(body)
            if len(answers) != len(items):
                raise WireError(f"{len(answers)} answers to {len(items)} steps")
            return [self._step_answer(a) for a in answers]
        except WireError as exc:
            raise WorkerAPIError(
                f"worker answered a multi-step request malformed ({exc}): route around it",
                status=502,
                url=self.url,
            ) from exc

    def _step_answer(self, answer: StepAnswer) -> StepResult | WorkerAPIError:
        if answer.status != 200:
            return _error_from(answer.status, answer.error, self.url)
        try:
            tensor = decode_frame(answer.frame)
        except WireError as exc:
            return WorkerAPIError(
                f"worker answered a step with a malformed frame ({exc}): route around it",
                status=502,
                url=self.url,
            )
        return StepResult(tensor, answer.step_hash, answer.step_index, [answer.step_hash])

    async def load_adapter(self, session_id: str, part: bytes) -> str:
        """Hand the session its LoRA adapter (safetensors of this worker's layers), before its first step;
        returns the keccak the worker states for what it applied ("0x..."), checked here against `part`."""
        _, body = await self._request(
            "POST",
            f"/v1/sessions/{session_id}/adapter",
            data=part,
            headers={"Content-Type": "application/octet-stream", **self._auth(session_id)},
        )
        stated = str(_answer(body, self.url).get("adapter", ""))
        if stated != "0x" + keccak(part).hex():
            raise WorkerAPIError(
                f"worker states adapter {stated!r}, not the part it was sent: route around it",
                status=502,
                url=self.url,
            )
        return stated

    async def outputs(self, session_id: str) -> torch.Tensor:
        """Every output of the session so far, concatenated along the positions (for failover replay). The
        last hop keeps only the top k logits of each position: its tensor is [1, n, 2k], the k largest
        logits (descending) then their token ids (`X-Top-K` says k)."""
        _, body = await self._request(
            "GET", f"/v1/sessions/{session_id}/outputs", headers=self._auth(session_id)
        )
        return decode_frame(body)

    async def close(self, session_id: str) -> bytes:
        """Close the session; returns its commitment (the Merkle root of its step hashes)."""
        return (await self.close_session(session_id)).root

    async def close_session(self, session_id: str) -> ClosedSession:
        """Close the session; returns its root and the worker's signed commitment for the job (protocol v2)."""
        _, body = await self._request("DELETE", f"/v1/sessions/{session_id}", headers=self._auth(session_id))
        self._tokens.pop(session_id, None)
        data = _answer(body, self.url)
        signed = data.get("job_commitment")
        try:
            return ClosedSession(
                int(data["steps"]),
                bytes.fromhex(str(data["commitment"]).removeprefix("0x")),
                SignedCommitment.from_json(signed) if isinstance(signed, dict) else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise WorkerAPIError(
                f"worker answered a close without a valid commitment ({exc})", status=502, url=self.url
            ) from exc

    async def health(self) -> dict[str, Any]:
        _, body = await self._request("GET", "/health")
        return _answer(body, self.url)

    # -- internals
    async def _request(self, method: str, path: str, **kwargs: Any) -> tuple[dict[str, str], bytes]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        url = self.url + path
        try:
            async with self._session.request(method, url, **kwargs) as resp:
                if resp.status != 200:  # an error is a short JSON: read no more than that
                    raise _error_from(resp.status, await resp.content.read(MAX_ANSWER_JSON_BYTES), url)
                body = await resp.read()
                return dict(resp.headers), body
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise WorkerUnreachable(
                f"cannot reach worker ({type(exc).__name__}: {exc}); route around it", url=url
            ) from exc


def step_answer(headers: Mapping[str, str], body: bytes, url: str) -> StepResult:
    """A step's answer from its headers and body (a worker's response, or a direct answer to the coordinator).
    Malformed headers or frames raise a 502 `WorkerAPIError` naming `url`."""
    try:
        digest = bytes.fromhex(headers["X-Step-Hash"].removeprefix("0x"))
        hops_header = headers.get("X-Hop-Hashes")
        hops = [digest]
        if hops_header:
            listed = loads_limited(hops_header, max_bytes=MAX_ANSWER_JSON_BYTES, max_depth=2)
            hops = [bytes.fromhex(h.removeprefix("0x")) for h in listed]
        index = int(headers.get("X-Step-Index") or 0)
        top_k = int(headers.get("X-Top-K") or 0)
        fingerprint_hex = headers.get("X-Fingerprint")
        fingerprint = bytes.fromhex(fingerprint_hex.removeprefix("0x")) if fingerprint_hex else None
        if headers.get("X-Answered") == "direct" and not body:
            return StepResult(torch.empty(0), digest, index, hops, top_k, fingerprint, answered_directly=True)
        return StepResult(decode_frame(body), digest, index, hops, top_k, fingerprint)
    except (KeyError, ValueError, TypeError, AttributeError, ShardnetError) as exc:
        raise WorkerAPIError(
            f"worker answered a step with malformed hash headers or frame ({exc}): route around it",
            status=502,
            url=url,
        ) from exc


def _answer(body: bytes, url: str) -> dict[str, Any]:
    """A worker's JSON answer (an object), bounded; anything else is a 502 from a broken or hostile worker."""
    try:
        data = loads_limited(body, max_bytes=MAX_ANSWER_JSON_BYTES, max_depth=MAX_ANSWER_JSON_DEPTH)
    except BodyRejected as exc:
        raise WorkerAPIError(
            f"worker answered malformed JSON ({exc}): route around it", status=502, url=url
        ) from exc
    if not isinstance(data, dict):
        raise WorkerAPIError(
            "worker answered JSON that is not an object: route around it", status=502, url=url
        )
    return data


def _error_from(status: int, body: bytes, url: str) -> WorkerAPIError:
    try:
        data = loads_limited(body, max_bytes=MAX_ANSWER_JSON_BYTES, max_depth=MAX_ANSWER_JSON_DEPTH)
        message = str(data["error"])
        failed = data.get("failed_hop")
        failed = failed if isinstance(failed, str) else None
        code = data.get("code")
        code = code if isinstance(code, str) and len(code) <= 64 else None
    except (ValueError, KeyError, TypeError, AttributeError):
        message, failed, code = body[:300].decode(errors="replace"), None, None
    return error_for_status(status, message, url=failed or url, code=code)
