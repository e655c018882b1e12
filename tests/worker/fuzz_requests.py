"""A seeded generator of hostile HTTP requests for a worker: malformed and deeply nested JSON, huge numbers,
wrong types, lone surrogates, tickets signed by a real coordinator with out-of-range fields, bad tensor
frames, bad headers, bad paths and methods. Pure: the same seed gives the same requests."""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from shardnet.wire.frames import encode_frame


@dataclass(frozen=True)
class FuzzRequest:
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FuzzTargets:
    """What the generator aims at: signed tickets to mutate, and open sessions (id, token) to send bad steps to."""

    tickets: list[dict[str, Any]]
    sessions: list[tuple[str, str]]
    hidden_size: int
    vocab_size: int


_WEIRD_STRINGS = [
    "",
    " ",
    "\x00",
    "\ud800",
    "\udfff",
    "\ud83d\ude00",
    "é" * 50,
    "../../etc/passwd",
    "%00",
    "a" * 5000,
    "0x" + "f" * 64,
    "null",
    "NaN",
    "-1",
    "1e309",
    "\u202e",
    "\n\r",
    "{}",
    "[]",
    "\\",
    '"',
]
_WEIRD_INTS = [0, -1, 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 2**256, -(2**63) - 1, 10**4000]
_WEIRD_HEADER_VALUES = [
    "",
    "-1",
    "0x10",
    "1e3",
    "99999999999999999999999",
    " 0",
    "0 ",
    "\u00bd",
    "NaN",
    "1.5",
    "+3",
]


def _weird_scalar(rng: random.Random) -> Any:
    return rng.choice(
        [
            rng.choice(_WEIRD_INTS),
            rng.choice(_WEIRD_STRINGS),
            rng.random() * 10 ** rng.randint(-300, 300),
            None,
            True,
            False,
        ]
    )


def _weird_json(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 6 or roll < 0.4:
        return _weird_scalar(rng)
    if roll < 0.7:
        return [_weird_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {str(_weird_scalar(rng))[:30]: _weird_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=True).encode()  # keeps lone surrogates as \ud800 escapes


def _open_body(rng: random.Random, targets: FuzzTargets) -> bytes:
    roll = rng.randrange(10)
    if roll == 0:  # deep nesting, under and over any size limit
        n = rng.choice([100, 1_000, 20_000, 100_000])
        return rng.choice([b"[", b'{"a":']) * n + rng.choice([b"]", b"}"]) * rng.choice([n, 0, 1])
    if roll == 1:
        return rng.randbytes(rng.randint(0, 300))
    if roll == 2:
        return _dumps(_weird_json(rng))
    ticket = dict(rng.choice(targets.tickets))
    if roll in (3, 4, 5):  # a real signature over fields, one of them swapped for a weird value
        key = rng.choice([*ticket, "extra"])
        ticket[key] = _weird_json(rng) if rng.random() < 0.3 else _weird_scalar(rng)
    payload: dict[str, Any] = {"ticket": ticket}
    if roll == 6:
        payload["codec"] = _weird_scalar(rng)
    if roll == 7:
        payload["next"] = rng.choice(
            [
                _weird_json(rng),
                {"url": _weird_scalar(rng), "session_id": _weird_scalar(rng), "token": _weird_scalar(rng)},
                {"url": "http://127.0.0.1:9", "session_id": "s", "token": "\ud800"},
            ]
        )
    body = _dumps(payload)
    if roll == 8:  # truncated or with a byte flipped
        cut = rng.randrange(len(body))
        body = (
            body[:cut] if rng.random() < 0.5 else body[:cut] + bytes([rng.randrange(256)]) + body[cut + 1 :]
        )
    return body


def _frame(rng: random.Random, targets: FuzzTargets) -> bytes:
    roll = rng.randrange(8)
    n = rng.choice([0, 1, 5, 300])
    if roll == 0:
        good = encode_frame(torch.randint(0, targets.vocab_size, (1, max(n, 1))), "int64")
    elif roll == 1:
        good = encode_frame(
            torch.randn(1, max(n, 1), targets.hidden_size), rng.choice(["fp32", "fp16", "int8"])
        )
    elif roll == 2:  # token ids out of the vocabulary
        good = encode_frame(torch.tensor([[rng.choice(_WEIRD_INTS[:9]) % 2**63]]), "int64")
    elif roll == 3:  # a header announcing a huge shape
        dims = [rng.choice([1, 2**31, 2**32 - 1, 0]) for _ in range(rng.randint(0, 9))]
        return (
            b"SNTF"
            + bytes([1, rng.randrange(6), rng.randrange(4), len(dims)])
            + b"".join(struct.pack("<I", d) for d in dims)
            + struct.pack("<Q", rng.choice([0, 2**63, 2**64 - 1]))
        )
    elif roll == 4:
        return rng.randbytes(rng.randint(0, 64))
    else:
        good = encode_frame(torch.zeros(1, 2, targets.hidden_size))
    data = bytearray(good)
    for _ in range(rng.randint(0, 3)):  # flip bytes, mostly in the header
        i = rng.randrange(min(len(data), 40)) if rng.random() < 0.8 else rng.randrange(len(data))
        data[i] = rng.randrange(256)
    if rng.random() < 0.2:
        data = data[: rng.randrange(len(data) + 1)]
    return bytes(data)


def _path(rng: random.Random, targets: FuzzTargets) -> tuple[str, str]:
    sid = rng.choice([s for s, _ in targets.sessions] + ["nope", "%00", "..%2F..", "a" * 3000, "%ud800", "é"])
    return rng.choice(
        [
            ("GET", f"/v1/sessions/{sid}/outputs"),
            ("DELETE", f"/v1/sessions/{sid}"),
            ("GET", "/v1/shards/" + rng.choice(["x", "bafk" + "a" * 55, "%00", "a" * 5000, "../worker.db"])),
            (rng.choice(["PUT", "PATCH", "OPTIONS", "HEAD", "GET"]), "/v1/sessions"),
            ("GET", "/" + "/".join(rng.choice(_WEIRD_STRINGS[5:9]) for _ in range(3))),
            ("GET", "/health?" + "&".join(f"a{i}=" + "b" * 100 for i in range(rng.randint(0, 50)))),
            ("POST", "/metrics"),
        ]
    )


def _json_body(rng: random.Random, targets: FuzzTargets) -> bytes:
    """A body for the JSON endpoints beyond sessions (/v1/verify, /v1/train/...): bombs, garbage, weird JSON, or a
    signed ticket with fields swapped, the same shapes the session open gets."""
    return _open_body(rng, targets) if rng.random() < 0.7 else _dumps({"job_id": _weird_scalar(rng), "x": 1})


def _other_endpoint(rng: random.Random, targets: FuzzTargets) -> FuzzRequest:
    """A hostile request to an endpoint added after the session API: verification and fine-tuning."""
    sid = rng.choice([s for s, _ in targets.sessions] + ["nope", "%00", "a" * 3000, "%ud800", "0"])
    method, path = rng.choice(
        [
            ("POST", "/v1/verify"),
            ("POST", "/v1/train/sessions"),
            ("POST", f"/v1/train/{sid}/forward"),
            ("POST", f"/v1/train/{sid}/backward"),
            ("DELETE", f"/v1/train/{sid}"),
            ("GET", "/v1/verify"),
        ]
    )
    headers = {"X-Start-Pos": rng.choice(_WEIRD_HEADER_VALUES)} if rng.random() < 0.3 else {}
    body = _json_body(rng, targets) if path in ("/v1/verify", "/v1/train/sessions") else _frame(rng, targets)
    return FuzzRequest(method, path, body, headers)


def hostile_requests(seed: int, count: int, targets: FuzzTargets) -> Iterator[FuzzRequest]:
    """`count` hostile requests, the same for the same seed and targets."""
    rng = random.Random(seed)
    for _ in range(count):
        roll = rng.randrange(10)
        headers: dict[str, str] = {}
        if rng.random() < 0.2:
            headers[rng.choice(["X-Start-Pos", "Content-Type", "X-Session-Token", "X-Weird"])] = rng.choice(
                _WEIRD_HEADER_VALUES + ["a" * rng.choice([100, 9000])]
            )
        if roll < 4:
            yield FuzzRequest("POST", "/v1/sessions", _open_body(rng, targets), headers)
        elif roll < 8:
            sid, token = rng.choice(targets.sessions)
            step_headers = {
                "X-Start-Pos": str(rng.choice([0, 0, 1, 5, 10**6, -1]))
                if rng.random() < 0.8
                else rng.choice(_WEIRD_HEADER_VALUES),
                "X-Session-Token": token if rng.random() < 0.8 else rng.choice(["", "0" * 32, token[:-1]]),
                **headers,
            }
            yield FuzzRequest("POST", f"/v1/sessions/{sid}/step", _frame(rng, targets), step_headers)
        elif rng.random() < 0.3:
            yield _other_endpoint(rng, targets)
        else:
            method, path = _path(rng, targets)
            yield FuzzRequest(
                method, path, rng.randbytes(rng.randint(0, 20)) if rng.random() < 0.3 else b"", headers
            )
