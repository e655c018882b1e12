"""Issue 10 item 6: a streaming client whose tokens were replaced by a re-run after a caught cheat is told so in
the stream (an error event naming the replaced tokens and carrying the correct text), never left with silent
wrong text; a stream without replacements carries no such event."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from coordinator.jobs import GenerationResult
from coordinator.openai_stream import stream_tokens


class _Model:
    def decode(self, tokens: list[int]) -> str:
        return "".join(chr(ord("a") + t) for t in tokens)


class _Resp:
    def __init__(self) -> None:
        self.body = b""

    async def write(self, data: bytes) -> None:
        self.body += data

    async def write_eof(self) -> None:
        self.body += b"<eof>"


def _events(streamed: list[int], result: GenerationResult) -> list[Any]:
    async def go() -> bytes:
        resp = _Resp()
        queue: asyncio.Queue[int] = asyncio.Queue()
        for t in streamed:
            queue.put_nowait(t)

        async def job() -> GenerationResult:
            await asyncio.sleep(0.05)
            return result

        async def send(delta: str | None, finish: str | None, first: bool = False) -> None:
            await resp.write(f"data: {json.dumps({'delta': delta, 'finish': finish})}\n\n".encode())

        await stream_tokens(_Model(), asyncio.ensure_future(job()), queue, send, resp, chat=False)  # type: ignore[arg-type]
        return resp.body

    body = asyncio.run(go()).decode()
    assert body.endswith("data: [DONE]\n\n<eof>")
    return [json.loads(chunk[6:]) for chunk in body.split("\n\n") if chunk.startswith("data: {")]


def test_replaced_tokens_are_named_in_an_error_event_with_the_correct_text() -> None:
    # streamed a b c d (the cheat's run); the honest re-run made a x c, then stopped
    result = GenerationResult([0, 23, 2], "stop", replaced=[(1, 1, 23), (3, 3, -1)])
    events = _events([0, 1, 2, 3], result)
    assert "".join(e.get("delta") or "" for e in events if "delta" in e) == "abcd"
    [error] = [e["error"] for e in events if "error" in e]
    assert error["type"] == "cheat_detected" and error["text"] == "axc"
    assert error["replaced"] == [
        {"index": 1, "streamed": 1, "correct": 23},
        {"index": 3, "streamed": 3, "correct": -1},
    ]
    assert "from token 1 on" in error["message"]
    assert events[-1] == {"delta": None, "finish": "stop"}  # the error comes before the end of the stream


def test_a_stream_without_replacements_has_no_error_event() -> None:
    events = _events([0, 1], GenerationResult([0, 1], "length"))
    assert not [e for e in events if "error" in e]
    assert "".join(e.get("delta") or "" for e in events) == "ab"
