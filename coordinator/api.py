"""The coordinator's HTTP API (aiohttp): paid jobs from the chain, and an OpenAI-compatible surface.

Jobs paid by clients on chain:
    POST /v1/jobs/{id}/prompt   {"prompt", "temperature"?, "top_p"?, "seed"?, "ignore_eos"?, "chat"?}  -> 202 the job
    GET  /v1/jobs/{id}          status, route, commitments (read from the chain), and the output once
                                generated if X-Shardnet-Auth is the job client's signature of
                                `shardnet.client.output_read_message(id, expires_at)`, not expired
                                (`sign_output_read`; nobody else reads it)
    GET  /v1/jobs?client=0x…    the jobs this coordinator knows (without outputs)
    GET  /v1/workers            the live workers as routing sees them (down, excluded, load, measurements)
    GET  /health

OpenAI-compatible (`/v1/models`, `/v1/completions`, `/v1/chat/completions`, `stream: true` as server-sent
events; `ignore_eos: true`, as in vLLM, generates max_tokens whatever the model says). How these are paid: the coordinator submits an on-chain job for each request from its own
account, paying `quote()` into escrow, and runs it like any other job; so workers are always paid by the
contract, and the operator recovers the cost from API users off chain (gate access with --api-key).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

from aiohttp import web

from coordinator.jobs import GenerationResult
from coordinator.models import ModelUnavailable
from coordinator.router import NoRouteError, choose_route
from coordinator.sampling import SamplingParams
from coordinator.service import CoordinatorService, PromptRejected
from shardnet.client import AUTH_HEADER, output_reader
from shardnet.errors import ConfigError, ShardnetError
from shardnet.wire.json_limits import read_json

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_JSON_DEPTH = 32  # chat messages nest 3 deep; bounded before parsing (a 100,000-deep body used to crash)
SERVICE: web.AppKey[CoordinatorService] = web.AppKey("service", CoordinatorService)


def _error(status: int, message: str, kind: str = "invalid_request_error") -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind}}, status=status)


def _sampling(body: dict[str, Any]) -> SamplingParams:
    try:
        return SamplingParams(
            temperature=float(body.get("temperature") or 0.0),
            top_p=float(1.0 if body.get("top_p") is None else body["top_p"]),
            seed=None if body.get("seed") is None else int(body["seed"]),
            ignore_eos=bool(body.get("ignore_eos", False)),
            chat=bool(body.get("chat", False)),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad sampling parameters: {exc}") from exc


async def _json_body(request: web.Request) -> dict[str, Any]:
    body = await read_json(request, max_bytes=MAX_BODY_BYTES, max_depth=MAX_JSON_DEPTH,
                           error_body=lambda message: {"error": {"message": message, "type": "invalid_request_error"}})
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=json.dumps({"error": {"message": "the body must be a JSON object"}}),
                                 content_type="application/json")
    return body


# ---------------------------------------------------------------- jobs
async def post_prompt(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    try:
        job_id = int(request.match_info["job_id"])
    except ValueError:
        return _error(400, "the job id must be an integer")
    body = await _json_body(request)
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        return _error(400, 'send {"prompt": "..."}: the exact prompt whose keccak256 the job carries')
    try:
        row = await service.accept_prompt(job_id, prompt, _sampling(body))
    except PromptRejected as exc:
        return _error(exc.status, str(exc))
    except ConfigError as exc:
        return _error(400, str(exc))
    return web.json_response(service.job_view(row), status=202)


async def get_job(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    try:
        job_id = int(request.match_info["job_id"])
    except ValueError:
        return _error(400, "the job id must be an integer")
    row = service.state.get_job(job_id)
    if row is None:
        return _error(404, f"this coordinator knows no job {job_id}; hand over its prompt first", "not_found")
    view = service.job_view(row, reveal=_reader(request, job_id) == (row.client or "").lower())
    try:
        hops = await asyncio.to_thread(service.registry.get_hops, job_id)
        view["commitments"] = [{"hop": h.index, "node": h.node.lower(), "span": [h.start, h.end],
                                "commitment": "0x" + h.commitment.hex() if h.committed else None} for h in hops]
    except ShardnetError as exc:
        view["commitments"] = None
        log.debug("job %d: cannot read hops: %s", job_id, exc)
    return web.json_response(view)


def _reader(request: web.Request, job_id: int) -> str | None:
    """The address that signed this request's X-Shardnet-Auth for `job_id` (lowercase), if valid now."""
    return output_reader(request.headers.get(AUTH_HEADER), job_id)


async def list_jobs(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    rows = service.state.jobs(client=request.query.get("client"))
    return web.json_response({"jobs": [service.job_view(r) for r in rows]})


async def health(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    return web.json_response({"ok": True, "coordinator": service.account.address,
                              "workers": len(service.directory.nodes())})


async def list_workers(request: web.Request) -> web.Response:
    return web.json_response({"workers": request.app[SERVICE].directory.describe()})


# ---------------------------------------------------------------- OpenAI-compatible
def _check_key(request: web.Request) -> web.Response | None:
    key = request.app[SERVICE].config.api_key
    if key and request.headers.get("Authorization") != f"Bearer {key}":
        return _error(401, "missing or wrong API key: send Authorization: Bearer KEY", "authentication_error")
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
    models = await _models(service)
    if not models:
        raise ConfigError("no model is registered on chain")
    if name in (None, ""):
        return service.config.api_model_id or models[0][0]
    for model_id, model_name in models:
        if name == model_name or str(name) == str(model_id):
            return model_id
    raise ConfigError(f"unknown model {name!r}; GET /v1/models lists {', '.join(n for _, n in models)}")


async def _complete(request: web.Request, chat: bool) -> web.StreamResponse:
    if (denied := _check_key(request)) is not None:
        return denied
    service = request.app[SERVICE]
    body = await _json_body(request)
    try:
        model_id = await _resolve_model(service, body.get("model"))
        params = _sampling(body)
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or service.config.api_max_tokens)
        if max_tokens < 1:
            raise ConfigError("max_tokens must be at least 1")
        model = await asyncio.to_thread(service.model, model_id)
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
        choose_route(service.directory.snapshot(model_id), model.num_layers)
        job_id = await service.submit_own_job(model_id, prompt, max_tokens, params)
    except (NoRouteError, ModelUnavailable) as exc:
        return _error(503, f"model {body.get('model')!r} cannot be served now (nothing was paid): {exc}",
                      "service_unavailable")
    except ShardnetError as exc:
        return _error(400, str(exc))
    # schedule at once (before any await), so the job runs with this request's token callback
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def on_token(token: int) -> None:
        queue.put_nowait(token)

    task = service.schedule(job_id, on_token if body.get("stream") else None)

    kind = "chat.completion" if chat else "text_completion"
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{job_id}-{uuid.uuid4().hex[:8]}"
    created = int(time.time())
    name = model.info.name

    if not body.get("stream"):
        try:
            result: GenerationResult | None = await task
        except ShardnetError as exc:
            return _error(502, f"job {job_id} failed: {exc}", "server_error")
        if result is None:
            return _error(409, f"job {job_id} was already handled", "server_error")
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


def make_app(service: CoordinatorService) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[SERVICE] = service
    app.add_routes([
        web.post("/v1/jobs/{job_id}/prompt", post_prompt),
        web.get("/v1/jobs/{job_id}", get_job),
        web.get("/v1/jobs", list_jobs),
        web.get("/health", health),
        web.get("/v1/workers", list_workers),
        web.get("/v1/models", list_models),
        web.post("/v1/completions", completions),
        web.post("/v1/chat/completions", chat_completions),
    ])
    return app
