"""Checks on what a client sends a worker: the session-open JSON and the step frame. Each failure names the fix."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import torch

from shardnet.errors import WireError
from shardnet.peer.errors import BadRequest, InvalidTensor
from shardnet.wire.codecs import get_codec
from shardnet.wire.frames import decode_frame
from worker.sessions import NextHop


@dataclass(frozen=True)
class OpenRequest:
    ticket: dict[str, Any]
    codec: str
    next_hop: NextHop | None


def parse_open_request(body: bytes, *, is_last: bool) -> OpenRequest:
    """Parse `{"ticket": {...}, "codec": "fp32", "next": null | {"url", "session_id"}}`."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(
            f'request body is not valid JSON ({exc}); send {{"ticket": {{...}}, "codec": "fp32"}}'
        ) from exc
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object with a 'ticket'")
    unknown = sorted(set(data) - {"ticket", "codec", "next"})
    if unknown:
        raise BadRequest(f"unknown fields {unknown}; allowed: ticket, codec, next")
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
    return OpenRequest(ticket=ticket, codec=codec, next_hop=_parse_next(data.get("next"), is_last))


def _parse_next(value: object, is_last: bool) -> NextHop | None:
    if value is None:
        return None
    if is_last:
        raise BadRequest("this worker serves the model's last layers: its output (logits) has no next worker")
    if not isinstance(value, dict) or set(value) != {"url", "session_id"}:
        raise BadRequest('\'next\' must be null or {"url": "http://…", "session_id": "…"}')
    url, session_id = value["url"], value["session_id"]
    parsed = urlparse(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise BadRequest(f"'next.url' must be an http(s) URL of the next worker, got {url!r}")
    if not isinstance(session_id, str) or not session_id:
        raise BadRequest("'next.session_id' must be the session id opened on the next worker")
    return NextHop(url=url.rstrip("/"), session_id=session_id)


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
