"""Checks on what a client sends a worker: the session-open JSON and the step frame. Each failure names the fix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import torch

from shardnet.errors import WireError
from shardnet.peer.errors import BadRequest, InvalidTensor, WorkerAPIError
from shardnet.wire.codecs import get_codec
from shardnet.wire.frames import decode_frame
from shardnet.wire.json_limits import BodyRejected, loads_limited
from worker.sessions import NextHop


@dataclass(frozen=True)
class OpenRequest:
    ticket: dict[str, Any]
    codec: str
    next_hop: NextHop | None
    max_positions: int = (
        0  # the most positions the session will hold: its memory is reserved at open (0: none)
    )
    #: what the last worker answers a step with: "full" (the logits frame) or "top_k" (worker.push_links)
    answer: str = "full"
    #: the last worker: where it sends the answers of steps that carry X-Answer-Id (the coordinator), or None
    answer_to: str | None = None


#: The session-open JSON is small (a ticket is ~400 bytes) and shallow (3 levels): anything far beyond is refused.
MAX_OPEN_JSON_BYTES = 64 * 1024
MAX_OPEN_JSON_DEPTH = 8
#: Job ids the worker's database can hold (signed 64-bit); the chain's ids are far below.
MAX_JOB_ID = 2**63 - 1


def parse_open_request(body: bytes, *, is_last: bool) -> OpenRequest:
    """Parse `{"ticket": {...}, "codec": "fp32", "next": null | {"url", "session_id", "token"},
    "max_positions"?: n}`."""
    try:
        data = loads_limited(body, max_bytes=MAX_OPEN_JSON_BYTES, max_depth=MAX_OPEN_JSON_DEPTH)
    except BodyRejected as exc:
        raise WorkerAPIError(
            f'{exc}; send {{"ticket": {{...}}, "codec": "fp32"}}', status=exc.status
        ) from exc
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object with a 'ticket'")
    allowed = {"ticket", "codec", "next", "max_positions", "answer", "answer_to"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise BadRequest(f"unknown fields {unknown}; allowed: {', '.join(sorted(allowed))}")
    answer_to = data.get("answer_to")
    if answer_to is not None and (not is_last or not _is_http_url(answer_to)):
        raise BadRequest(
            "'answer_to' must be null or, on the worker serving the model's last layers, the http(s) URL the "
            f"coordinator takes direct answers at, got {str(answer_to)[:100]!r}"
        )
    answer = data.get("answer", "full")
    if answer not in ("full", "top_k") or (answer == "top_k" and not is_last):
        raise BadRequest(
            '\'answer\' must be "full" or, on the worker serving the model\'s last layers, "top_k" '
            "(each step answered with the top logits and their ids instead of every logit)"
        )
    max_positions = data.get("max_positions", 0)
    if (
        not isinstance(max_positions, int)
        or isinstance(max_positions, bool)
        or not 0 <= max_positions < 2**32
    ):
        raise BadRequest(
            "'max_positions' must be an integer from 0 (no reservation) to 2^32 - 1: the most positions the "
            "session will hold (prompt plus new tokens)"
        )
    ticket = data.get("ticket")
    if not isinstance(ticket, dict):
        raise BadRequest("'ticket' must be the JSON object the coordinator signed")
    codec = data.get("codec", "fp32")
    try:
        if not isinstance(codec, str) or get_codec(codec).integer:
            raise WireError("not a float codec")
    except WireError as exc:
        raise BadRequest(
            f"'codec' must name a float codec for hidden states (fp32, fp16, bf16, int8), got {codec!r}"
        ) from exc
    next_hop = _parse_next(data.get("next"), is_last)
    return OpenRequest(ticket, codec, next_hop, max_positions, str(answer), answer_to)


def _is_http_url(value: object) -> bool:
    parsed = urlparse(value) if isinstance(value, str) and len(value) <= 2048 else None
    return parsed is not None and parsed.scheme in ("http", "https") and bool(parsed.netloc)


def parse_next(value: object, is_last: bool) -> NextHop | None:
    """`next` of an open request (or of `POST /v1/sessions/{id}/next`): None, or where to forward outputs."""
    return _parse_next(value, is_last)


def _parse_next(value: object, is_last: bool) -> NextHop | None:
    if value is None:
        return None
    if is_last:
        raise BadRequest("this worker serves the model's last layers: its output (logits) has no next worker")
    if not isinstance(value, dict) or set(value) != {"url", "session_id", "token"}:
        raise BadRequest(
            '\'next\' must be null or {"url": "http://…", "session_id": "…", "token": "…"} '
            "(the session_token the next worker answered when its session was opened)"
        )
    url, session_id, token = value["url"], value["session_id"], value["token"]
    parsed = urlparse(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise BadRequest(f"'next.url' must be an http(s) URL of the next worker, got {url!r}")
    if not isinstance(session_id, str) or not session_id:
        raise BadRequest("'next.session_id' must be the session id opened on the next worker")
    check_session_id(session_id)  # it goes into the next worker's URL: no '/', '?' or '..'
    if not isinstance(token, str) or not token or not token.isascii() or not token.isalnum():
        raise BadRequest("'next.token' must be the session_token the next worker answered at its open")
    return NextHop(url=url.rstrip("/"), session_id=session_id, token=token)


def check_session_id(value: str) -> str:
    """A ticket's session id: 1 to 128 characters of letters, digits, '-', '_' or '.' (it travels in URLs)."""
    if (
        not 0 < len(value) <= 128
        or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in value)
        or set(value) == {"."}  # "." and ".." are path segments, not ids
    ):
        raise BadRequest(
            "ticket session_id must be 1 to 128 characters of letters, digits, '-', '_' or '.' (a uuid4 hex)"
        )
    return value


def check_job_id(value: int) -> int:
    """A ticket's job id as this worker stores it: 0 <= id <= 2^63 - 1 (else 400, before any session opens)."""
    if not 0 <= value <= MAX_JOB_ID:
        raise BadRequest(f"ticket job_id {value} is out of range: job ids run from 0 to 2^63 - 1")
    return value


def parse_start_pos(header: str | None) -> int:
    if header is None:
        raise BadRequest("missing header X-Start-Pos: the position of the first token of this step")
    try:
        value = int(header)
    except ValueError as exc:
        raise BadRequest(f"X-Start-Pos must be a non-negative integer, got {header!r}") from exc
    if value < 0:
        raise BadRequest(f"X-Start-Pos must be a non-negative integer, got {value}")
    return value


def decode_step_input(
    body: bytes, *, is_first: bool, hidden_size: int, vocab_size: int | None, max_length: int
) -> torch.Tensor:
    """Decode and check one step's frame: token ids [1, n] for the first block, else finite hidden states [1, n, H]."""
    if not body:
        raise BadRequest("empty body: send one tensor frame (shardnet.wire.frames.encode_frame)")
    try:
        x = decode_frame(body, max_elements=max_length * max(hidden_size, 1))
    except WireError as exc:
        raise BadRequest(f"malformed tensor frame: {exc}") from exc
    if is_first:
        if x.dtype != torch.int64:
            raise InvalidTensor(
                f"this worker serves layer 0: send int64 token ids (codec int64), got {x.dtype}"
            )
        if x.dim() != 2 or x.shape[0] != 1 or x.shape[1] < 1:
            raise InvalidTensor(f"token ids must have shape [1, n] with n >= 1, got {list(x.shape)}")
        if vocab_size is not None and bool(((x < 0) | (x >= vocab_size)).any()):
            raise InvalidTensor(
                f"token ids must lie in [0, {vocab_size}), got values from {int(x.min())} to {int(x.max())}"
            )
        return x
    if not x.dtype.is_floating_point:
        raise InvalidTensor(
            f"this worker takes float hidden states, got {x.dtype} (token ids go to the first worker)"
        )
    if x.dim() != 3 or x.shape[0] != 1 or x.shape[1] < 1 or x.shape[2] != hidden_size:
        raise InvalidTensor(
            f"hidden states must have shape [1, n, {hidden_size}] with n >= 1, got {list(x.shape)}"
        )
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise InvalidTensor(f"hidden states hold {bad} NaN or infinite values: the previous hop is broken")
    return x
