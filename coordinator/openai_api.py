"""The OpenAI-compatible API: `GET /v1/models`, `POST /v1/completions`, `POST /v1/chat/completions`.

`stream: true` answers as server-sent events; `ignore_eos: true`, as in vLLM, generates max_tokens whatever the
model says. How these are paid: the coordinator submits an on-chain job for each request from its own account,
paying `quote()` into escrow, and runs it like any other job; so workers are always paid by the contract, and the
operator recovers the cost from API users off chain (gate access with --api-key). A request the `Router` finds
no chain of live workers for gets 503 before anything is paid.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from aiohttp import web

from coordinator.catalog import ModelUnavailable
from coordinator.http_common import SERVICE, error, json_body, sampling
from coordinator.jobs import GenerationResult
from coordinator.router import NoRouteError
from coordinator.service import CoordinatorService
from shardnet.chain.models import resolve_model
from shardnet.errors import ConfigError, ShardnetError


def _check_key(request: web.Request) -> web.Response | None:
    key = request.app[SERVICE].config.api_key
    if key and request.headers.get("Authorization") != f"Bearer {key}":
        return error(401, "missing or wrong API key: send Authorization: Bearer KEY", "authentication_error")
    return None


async def _models(service: CoordinatorService) -> list[tuple[int, str]]:
    count = await asyncio.to_thread(service.registry.model_count)
    out = []
    for model_id in range(1, count + 1):
        info = await asyncio.to_thread(service.registry.get_model, model_id)
        out.append((model_id, info.name))
    return out


async def list_models(request: web.Request) -> web.Response:
    if (denied := _check_key(request)) is not None:
        return denied
    models = await _models(request.app[SERVICE])
    return web.json_response({"object": "list", "data": [
        {"id": name, "object": "model", "created": 0, "owned_by": f"shardnet:{model_id}"} for model_id, name in models]})


async def _resolve_model(service: CoordinatorService, name: Any) -> int:
    if name in (None, ""):
        if service.config.api_model_id:
            return service.config.api_model_id
        if not await asyncio.to_thread(service.registry.model_count):
            raise ConfigError("no model is registered on chain")
        return 1
    if not isinstance(name, str | int) or isinstance(name, bool):
        raise ConfigError(f'"model" must be a model name or id, not {name!r}; GET /v1/models lists them')
    return (await asyncio.to_thread(resolve_model, service.registry, name)).model_id


async def _complete(request: web.Request, chat: bool) -> web.StreamResponse:
    if (denied := _check_key(request)) is not None:
        return denied
    service = request.app[SERVICE]
    body = await json_body(request)
    try:
        model_id = await _resolve_model(service, body.get("model"))
        params = sampling(body)
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or service.config.api_max_tokens)
        if max_tokens < 1:
            raise ConfigError("max_tokens must be at least 1")
        model = await asyncio.to_thread(service.catalog.get, model_id)
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise ConfigError('send "messages": a non-empty list of {"role", "content"}')
            prompt = model.chat_prompt(messages)
        else:
            given = body.get("prompt")
            if isinstance(given, list) and len(given) == 1:
                given = given[0]
            if not isinstance(given, str):
                raise ConfigError('send "prompt": one string')
            prompt = given
        # pay nothing for a request no chain of live workers can serve now
        service.router.route(model_id, model.num_layers)
        job_id = await service.jobs.submit_own_job(model_id, prompt, max_tokens, params)
    except (NoRouteError, ModelUnavailable) as exc:
        return error(503, f"model {body.get('model')!r} cannot be served now (nothing was paid): {exc}",
                      "service_unavailable")
    except ShardnetError as exc:
        return error(400, str(exc))
    # schedule at once (before any await), so the job runs with this request's token callback
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def on_token(token: int) -> None:
        queue.put_nowait(token)

    task = service.jobs.schedule(job_id, on_token if body.get("stream") else None)

    kind = "chat.completion" if chat else "text_completion"
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{job_id}-{uuid.uuid4().hex[:8]}"
    created = int(time.time())
    name = model.info.name

    if not body.get("stream"):
        try:
            result: GenerationResult | None = await task
        except ShardnetError as exc:
            return error(502, f"job {job_id} failed: {exc}", "server_error")
        if result is None:
            return error(409, f"job {job_id} was already handled", "server_error")
        text = model.decode(result.tokens)
        choice: dict[str, Any] = {"index": 0, "finish_reason": result.finish_reason, "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        usage = {"prompt_tokens": len(model.encode(prompt)), "completion_tokens": len(result.tokens)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return web.json_response({"id": ident, "object": kind, "created": created, "model": name,
                                  "choices": [choice], "usage": usage, "shardnet_job_id": job_id})

    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    chunk_kind = "chat.completion.chunk" if chat else "text_completion"

    async def send(delta: str | None, finish: str | None, first: bool = False) -> None:
        if chat:
            d: dict[str, Any] = {"role": "assistant", "content": ""} if first else ({} if delta is None else {"content": delta})
            choice = {"index": 0, "delta": d, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}
        payload = {"id": ident, "object": chunk_kind, "created": created, "model": name, "choices": [choice]}
        await resp.write(f"data: {json.dumps(payload)}\n\n".encode())

    if chat:
        await send(None, None, first=True)
    tokens: list[int] = []
    sent = ""
    while True:
        getter = asyncio.ensure_future(queue.get())
        done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            tokens.append(getter.result())
            text = model.decode(tokens)
            if not text.endswith("\ufffd") and len(text) > len(sent):
                await send(text[len(sent):], None)
                sent = text
            continue
        getter.cancel()
        while not queue.empty():
            tokens.append(queue.get_nowait())
        break
    try:
        result = task.result()
        text = model.decode(tokens)
        if len(text) > len(sent):
            await send(text[len(sent):], None)
        await send(None, result.finish_reason if result else "stop")
    except Exception as exc:  # noqa: BLE001 - headers are sent: report any failure in the stream
        await resp.write(f"data: {json.dumps({'error': {'message': str(exc), 'type': 'server_error'}})}\n\n".encode())
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def completions(request: web.Request) -> web.StreamResponse:
    return await _complete(request, chat=False)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _complete(request, chat=True)


ROUTES = [
    web.get("/v1/models", list_models),
    web.post("/v1/completions", completions),
    web.post("/v1/chat/completions", chat_completions),
]
