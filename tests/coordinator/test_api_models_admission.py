"""The API's body models and its admission queue, without a network (the network tests: test_api_admission.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import ValidationError

from coordinator.admission import (
    Admission,
    Busy,
    NoCapacity,
    has_free_memory,
    has_free_session,
    memory_needed,
)
from coordinator.api_models import ChatCompletionRequest, CompletionRequest, PromptHandOver, parse_job_id


@pytest.mark.parametrize("max_tokens", ["abc", [1], 2**32, 1e11, 0, -3, True, 2.0])
def test_max_tokens_is_a_whole_number_the_contract_takes(max_tokens: object) -> None:
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate({"prompt": "hi", "max_tokens": max_tokens})


def test_unsupported_fields_are_refused_and_harmless_ones_ignored() -> None:
    for extra in (
        {"n": 2},
        {"stop": "x"},
        {"echo": True},
        {"presence_penalty": 0.5},
        {"tools": []},
        {"x": 1},
    ):
        with pytest.raises(ValidationError):
            ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "hi"}], **extra})
    body = CompletionRequest.model_validate(
        {
            "prompt": ["hi"],
            "n": 1,
            "user": "u",
            "presence_penalty": 0,
            "stream_options": {"include_usage": True},
            "max_completion_tokens": 3,
        }
    )
    assert body.text == "hi" and body.requested_max_tokens == 3
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate({"prompt": "a\ud800"})
    assert PromptHandOver.model_validate({"prompt": "p", "seed": 3, "signature": "0x"}).sampling().seed == 3


@pytest.mark.parametrize(
    "text,expected",
    [
        ("1", 1),
        ("-1", None),
        ("0", None),
        (str(2**63), None),
        (str(2**63 - 1), 2**63 - 1),
        (str(2**256), None),
        ("abc", None),
        ("١", None),
        ("1.0", None),
    ],
)
def test_job_ids_in_paths(text: str, expected: int | None) -> None:
    assert parse_job_id(text) == expected


def test_the_queue_is_bounded_and_refuses_before_anything_runs() -> None:
    async def scenario() -> None:
        admission: Admission[str] = Admission(max_running=1, max_waiting=2, wait_s=0.3)
        room = {"free": True}

        async def check() -> tuple[str, list[str]] | None:
            return ("plan", ["0xA"]) if room["free"] else None

        _, first = await admission.admit(check)
        assert admission.pending("0xa") == 1
        waiter = asyncio.ensure_future(admission.admit(check))  # waits for the running slot
        await asyncio.sleep(0.05)
        other = asyncio.ensure_future(admission.admit(check))
        await asyncio.sleep(0.05)
        with pytest.raises(Busy):  # two already wait: the queue is full
            await admission.admit(check)
        first.release()
        _, second = await waiter
        with pytest.raises(NoCapacity):  # the running slot never came free within wait_s
            await other
        second.release()
        room["free"] = False
        with pytest.raises(NoCapacity):  # a slot, but the workers have no session to spare
            await admission.admit(check)
        assert admission.running == 0 and admission.pending("0xa") == 0

    asyncio.run(scenario())


def test_free_sessions_count_what_was_admitted_but_not_opened_yet() -> None:
    assert has_free_session({"sessions": 1, "max_sessions": 2}, pending_here=0, open_here=0)
    assert not has_free_session({"sessions": 1, "max_sessions": 2}, pending_here=1, open_here=0)
    assert has_free_session({"sessions": 1, "max_sessions": 2}, pending_here=1, open_here=1)
    assert not has_free_session({"sessions": "x", "max_sessions": 2}, pending_here=0, open_here=0)


def test_busy_or_down_is_decided_by_the_machine_readable_code_not_the_words() -> None:
    from coordinator.directory import is_busy
    from shardnet.peer.client import _error_from

    def error(status: int, body: dict[str, Any]) -> Any:
        return _error_from(status, json.dumps(body).encode(), "http://w")

    assert is_busy(error(503, {"error": "anything", "code": "memory_full"}))
    assert is_busy(error(503, {"error": "anything", "code": "sessions_full"}))
    assert is_busy(error(429, {"error": "too many"}))
    assert not is_busy(error(503, {"error": "full, retry later", "code": "draining"}))
    assert not is_busy(error(503, {"error": "worker is full"}))  # no code: not known to be busy
    assert not is_busy(error(503, {"error": "x", "code": ["memory_full"]}))  # a code that is not a string
    assert error(503, {"error": "x", "code": "memory_full"}).code == "memory_full"


def test_memory_admission_counts_what_was_admitted_but_not_opened_at_the_health_read() -> None:
    health = {"memory": {"free_bytes": 1000, "bytes_per_position": 10}}
    assert memory_needed(health, 60) == 600
    assert memory_needed({"sessions": 0}, 60) is None  # a worker that reports no memory: no limit known
    assert has_free_memory(health, 600, unopened_here=400) and not has_free_memory(health, 600, 401)
    assert not has_free_memory({"memory": {"free_bytes": "x"}}, 1, 0)

    async def scenario() -> None:
        admission: Admission[str] = Admission(max_running=4, max_waiting=4, wait_s=0.3)

        async def check() -> tuple[str, dict[str, int]]:
            return "plan", {"0xA": 600}

        opened: dict[tuple[int, str], int] = {}

        def opened_by(job_id: int, node: str, tick: int) -> bool:
            return opened.get((job_id, node), tick + 1) <= tick

        _, place = await admission.admit(check)
        assert admission.unopened_bytes("0xa", opened_by, 0) == 600  # admitted, not even paid yet
        place.bind(7)
        opened[(7, "0xa")] = 5  # its session opened at tick 5
        assert admission.unopened_bytes("0xa", opened_by, 4) == 600  # a /health read before: not in it
        assert admission.unopened_bytes("0xa", opened_by, 5) == 0  # read after: the worker counts it
        place.release()
        assert admission.unopened_bytes("0xa", opened_by, 0) == 0

    asyncio.run(scenario())


def test_positions_a_worker_holds_are_capped_by_its_whole_cache_budget() -> None:
    from coordinator.preflight import positions_held

    assert positions_held({"max_length": 2048}) == 2048  # no memory reported: no limit known
    memory = {"budget_bytes": 1000, "bytes_per_position": 10}
    assert positions_held({"max_length": 2048, "memory": memory}) == 100
    assert positions_held({"max_length": 64, "memory": memory}) == 64
    liar = {"budget_bytes": 1000, "bytes_per_position": -5}  # a worker stating nonsense: its max_length only
    assert positions_held({"max_length": 64, "memory": liar}) == 64
