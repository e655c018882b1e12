"""The body of `POST /v1/steps`: many sessions' steps in one request, and their answers, one per step.

A coordinator running many jobs through one worker sends their steps together so the worker's batching
window fills (docs/batching.md). Each step keeps its own session, token, start position and frame (exactly
what `POST /v1/sessions/{id}/step` carries); each answer is either that step's output frame with its step
hash and index, or its own error (status, JSON `{"error", "code"?}`), so one bad step fails its session alone.

Request (all integers big-endian):

    b"SNMS" | u16 version (1) | u16 count
    count x ( u8 len | session id (ascii) | u8 len | session token (ascii) | u32 start_pos | u32 len | frame )

Answer:

    b"SNMA" | u16 version (1) | u16 count
    count x ( u16 status | 200: 32-byte step hash | u32 step index | u32 len | frame
                         | else:                                     u32 len | error JSON )

Parsing is bounded: at most `MAX_STEPS` steps, ids and tokens of at most 255 bytes, every length checked
against what is left of the body, nothing trailing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from shardnet.errors import WireError

REQUEST_MAGIC, ANSWER_MAGIC, VERSION = b"SNMS", b"SNMA", 1
#: the most steps one request may carry (a worker's batch is smaller; more would only queue)
MAX_STEPS = 256
_HEAD = struct.Struct(">4sHH")
_U8, _U16, _U32 = struct.Struct(">B"), struct.Struct(">H"), struct.Struct(">I")


@dataclass(frozen=True)
class StepItem:
    """One session's step inside a multi-step request."""

    session_id: str
    token: str
    start_pos: int
    frame: bytes


@dataclass(frozen=True)
class StepAnswer:
    """One step's answer: its output (status 200) or its error (`error` is the JSON body of the error)."""

    status: int
    step_hash: bytes = b""
    step_index: int = 0
    frame: bytes = b""
    error: bytes = b""


def encode_steps(items: list[StepItem]) -> bytes:
    if not 0 < len(items) <= MAX_STEPS:
        raise WireError(f"a multi-step request carries 1 to {MAX_STEPS} steps, not {len(items)}")
    parts = [_HEAD.pack(REQUEST_MAGIC, VERSION, len(items))]
    for item in items:
        sid, token = item.session_id.encode("ascii"), item.token.encode("ascii")
        if len(sid) > 255 or len(token) > 255 or not 0 <= item.start_pos < 2**32:
            raise WireError("a step's session id and token must be at most 255 bytes, its start_pos < 2^32")
        parts += [_U8.pack(len(sid)), sid, _U8.pack(len(token)), token]
        parts += [_U32.pack(item.start_pos), _U32.pack(len(item.frame)), item.frame]
    return b"".join(parts)


def encode_answers(answers: list[StepAnswer]) -> bytes:
    parts = [_HEAD.pack(ANSWER_MAGIC, VERSION, len(answers))]
    for a in answers:
        parts.append(_U16.pack(a.status))
        if a.status == 200:
            if len(a.step_hash) != 32:
                raise WireError("a step hash is 32 bytes")
            parts += [a.step_hash, _U32.pack(a.step_index), _U32.pack(len(a.frame)), a.frame]
        else:
            parts += [_U32.pack(len(a.error)), a.error]
    return b"".join(parts)


class _Reader:
    def __init__(self, body: bytes, what: str) -> None:
        self.body, self.at, self.what = memoryview(body), 0, what

    def take(self, n: int) -> bytes:
        if n > len(self.body) - self.at:
            raise WireError(
                f"{self.what} is truncated: {n} bytes wanted at offset {self.at}, "
                f"{len(self.body) - self.at} left"
            )
        out = bytes(self.body[self.at : self.at + n])
        self.at += n
        return out

    def unpack(self, fmt: struct.Struct) -> int:
        value: int = fmt.unpack(self.take(fmt.size))[0]
        return value

    def head(self, magic: bytes) -> int:
        got_magic, version, count = _HEAD.unpack(self.take(_HEAD.size))
        if got_magic != magic or version != VERSION:
            raise WireError(
                f"{self.what} must start with {magic!r} version {VERSION} (docs/batching.md), "
                f"got {got_magic!r} version {version}"
            )
        if not 0 < count <= MAX_STEPS:
            raise WireError(f"{self.what} carries 1 to {MAX_STEPS} steps, not {count}")
        return int(count)

    def end(self) -> None:
        if self.at != len(self.body):
            raise WireError(f"{self.what} has {len(self.body) - self.at} bytes after its last step")


def decode_steps(body: bytes) -> list[StepItem]:
    """Parse a multi-step request (bounded: see the module doc); raises WireError naming what is wrong."""
    r = _Reader(body, "multi-step request")
    items = []
    for _ in range(r.head(REQUEST_MAGIC)):
        sid = r.take(r.unpack(_U8))
        token = r.take(r.unpack(_U8))
        start_pos = r.unpack(_U32)
        frame = r.take(r.unpack(_U32))
        try:
            items.append(StepItem(sid.decode("ascii"), token.decode("ascii"), start_pos, frame))
        except UnicodeDecodeError as exc:
            raise WireError("session ids and tokens in a multi-step request are ASCII") from exc
    r.end()
    return items


def decode_answers(body: bytes) -> list[StepAnswer]:
    """Parse a multi-step answer; raises WireError naming what is wrong."""
    r = _Reader(body, "multi-step answer")
    answers = []
    for _ in range(r.head(ANSWER_MAGIC)):
        status = r.unpack(_U16)
        if status == 200:
            digest = r.take(32)
            index = r.unpack(_U32)
            answers.append(StepAnswer(200, digest, index, r.take(r.unpack(_U32))))
        else:
            answers.append(StepAnswer(status, error=r.take(r.unpack(_U32))))
    r.end()
    return answers
