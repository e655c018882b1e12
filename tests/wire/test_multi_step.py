"""The multi-step body (`POST /v1/steps`): round trips, and every malformed body refused with a WireError."""

from __future__ import annotations

import struct

import pytest

from shardnet.errors import WireError
from shardnet.wire.multi_step import (
    MAX_STEPS,
    StepAnswer,
    StepItem,
    decode_answers,
    decode_steps,
    encode_answers,
    encode_steps,
)

ITEMS = [StepItem("a" * 32, "t" * 43, 0, b"frame-0"), StepItem("b1", "tok", 2**32 - 1, b"")]


def test_requests_and_answers_round_trip() -> None:
    assert decode_steps(encode_steps(ITEMS)) == ITEMS
    answers = [StepAnswer(200, bytes(range(32)), 7, b"out"), StepAnswer(409, error=b'{"error": "x"}')]
    assert decode_answers(encode_answers(answers)) == answers


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"SNMS",
        b"SNMA\x00\x01\x00\x01",  # an answer's magic
        b"SNMS\x00\x02\x00\x01",  # another version
        b"SNMS\x00\x01\x00\x00",  # no steps
        struct.pack(">4sHH", b"SNMS", 1, MAX_STEPS + 1),
        encode_steps(ITEMS)[:-1],  # truncated
        encode_steps(ITEMS) + b"\x00",  # trailing
        struct.pack(">4sHH", b"SNMS", 1, 1) + b"\x02\xff\xfe\x00" + b"\x00" * 8,  # not ASCII
        struct.pack(">4sHH", b"SNMS", 1, 1)
        + b"\x00\x00"
        + struct.pack(">II", 0, 2**32 - 1),  # frame too long
    ],
)
def test_malformed_requests_are_refused(body: bytes) -> None:
    with pytest.raises(WireError):
        decode_steps(body)


def test_encoding_refuses_what_cannot_be_sent() -> None:
    with pytest.raises(WireError):
        encode_steps([])
    with pytest.raises(WireError):
        encode_steps([StepItem("x" * 256, "t", 0, b"")])
    with pytest.raises(WireError):
        encode_steps([StepItem("x", "t", 2**32, b"")])
    with pytest.raises(WireError):
        encode_answers([StepAnswer(200, b"short", 0, b"")])
