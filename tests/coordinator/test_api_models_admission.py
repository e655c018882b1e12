"""The API's body models and its admission queue, without a network (the network tests: test_api_admission.py)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from coordinator.admission import Admission, Busy, NoCapacity, has_free_session
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
