"""What the OpenAI API sends once a job runs: its answer as soon as the output is saved for settlement
(`answer_of`), and a streamed answer's server-sent events (`stream_tokens`): the tokens as they come, a re-run's
replaced tokens and a held check's verdict said aloud, then the end and [DONE]."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from coordinator.corrections import CHEAT_DETECTED, CheckReport, hold_stream
from coordinator.jobs import GenerationResult


async def answer_of(
    task: asyncio.Task[Any], generated: asyncio.Future[GenerationResult] | None
) -> GenerationResult | None:
    """The job's result as soon as it is saved for settlement (`generated`; None: when the whole task is done);
    the task's own end (its error, or None: the job was handled already) if that comes first. A request cancelled
    while it waits leaves the job running (asyncio.wait cancels nothing)."""
    await asyncio.wait(
        {task} if generated is None else {task, generated}, return_when=asyncio.FIRST_COMPLETED
    )
    if generated is not None and generated.done():
        return generated.result()
    result: GenerationResult | None = task.result()
    return result


async def stream_tokens(
    model: Any,
    task: asyncio.Task[Any],
    queue: asyncio.Queue[int],
    send: Callable[..., Awaitable[None]],
    resp: web.StreamResponse,
    chat: bool,
    verified: Callable[[], Awaitable[CheckReport | None]] | None = None,
) -> None:
    """Relay the job's tokens as server-sent events, then its end (or its failure) and [DONE]. `verified`: hold
    the end until the job's after-the-fact check is done; a cheat found then gets the cheat_detected event."""
    if chat:
        await send(None, None, first=True)
    tokens: list[int] = []
    sent = ""
    while True:
        getter = asyncio.ensure_future(queue.get())
        try:
            done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getter.done():
                getter.cancel()
        if getter in done:
            tokens.append(getter.result())
            text = model.decode(tokens)
            if not text.endswith("\ufffd") and len(text) > len(sent):
                await send(text[len(sent) :], None)
                sent = text
            continue
        while not queue.empty():
            tokens.append(queue.get_nowait())
        break
    try:
        result = task.result()
        text = model.decode(tokens)
        if len(text) > len(sent):
            await send(text[len(sent) :], None)
        if (
            result is not None and result.replaced
        ):  # streamed before a cheat was caught: say so, never silently
            await resp.write(f"data: {json.dumps(replaced_event(model, result))}\n\n".encode())
        if verified is not None and result is not None:
            report = await hold_stream(verified, resp.write)
            if report is not None and report.status == CHEAT_DETECTED and report.answer_affected:  # say so
                await resp.write(f"data: {json.dumps(report.error_event())}\n\n".encode())
        await send(None, result.finish_reason if result else "stop")
    except ConnectionError:
        raise
    except Exception as exc:  # noqa: BLE001 - headers are sent: report any failure in the stream
        await resp.write(
            f"data: {json.dumps({'error': {'message': str(exc), 'type': 'server_error'}})}\n\n".encode()
        )
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()


def replaced_event(model: Any, result: GenerationResult) -> dict[str, Any]:
    """The stream's error event when tokens it carried were replaced by a re-run after a caught cheat."""
    first = result.replaced[0][0]
    return {
        "error": {
            "message": f"a worker was caught sending wrong outputs and the job was re-run on honest workers: "
            f"{len(result.replaced)} streamed tokens from token {first} on were wrong; the correct completion "
            "is in 'text' (the replaced tokens in 'replaced'; correct -1: not part of the answer)",
            "type": "cheat_detected",
            "replaced": [{"index": i, "streamed": a, "correct": b} for i, a, b in result.replaced],
            "text": model.decode(result.tokens),
        }
    }
