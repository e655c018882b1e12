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
import logging
import time
import uuid
from functools import partial
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from coordinator import adapters
from coordinator.adapters import split_model_name
from coordinator.admission import Admission, Place, Refused, has_free_memory, has_free_session, memory_needed
from coordinator.api_models import ChatCompletionRequest, CompletionRequest, validation_error
from coordinator.catalog import ModelUnavailable
from coordinator.corrections import held_tokens
from coordinator.http_common import SERVICE, chain_error, error, json_body
from coordinator.jobs import GenerationResult
from coordinator.openai_stream import answer_of, stream_tokens
from coordinator.preflight import JobPlan, PreflightRefused, close_health_client, plan_job
from coordinator.router import NoRouteError
from coordinator.service import CoordinatorService
from shardnet.chain.errors import ChainError
from shardnet.chain.models import UnknownModel, resolve_model
from shardnet.errors import ConfigError, ShardnetError

log = logging.getLogger(__name__)


def _release(place: Place | None) -> None:
    if place is not None:
        place.release()


ADMISSION: web.AppKey[Admission[JobPlan]] = web.AppKey("admission", Admission)


def install(app: web.Application, service: CoordinatorService) -> None:
    """Add the OpenAI routes and their admission control (bounded by the config) to `app`."""
    cfg = service.config
    app[ADMISSION] = Admission(
        max_running=cfg.api_max_running or cfg.max_concurrent_jobs,
        max_waiting=cfg.api_queue_size,
        wait_s=cfg.api_queue_wait_s,
    )
    app.add_routes([*ROUTES, web.post("/v1/adapters", upload_adapter)])
    app.on_cleanup.append(close_health_client)  # the /health client preflight and admission share


async def upload_adapter(request: web.Request) -> web.Response:
    if (denied := _check_key(request)) is not None:
        return denied
    return await adapters.upload(request.app[SERVICE].adapters, request)


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
    try:
        models = await _models(request.app[SERVICE])
    except ChainError as exc:
        return chain_error(exc)
    return web.json_response(
        {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": f"shardnet:{model_id}"}
                for model_id, name in models
            ],
        }
    )


async def _resolve_model(service: CoordinatorService, name: str | int | None) -> int:
    if name is None or name == "":  # no model named: the configured default, else model 1
        if service.config.api_model_id:
            return service.config.api_model_id
        if not await asyncio.to_thread(service.registry.model_count):
            raise ConfigError("no model is registered on chain")
        return 1
    if not isinstance(name, str | int) or isinstance(name, bool):  # the body model checks it too
        raise ConfigError(f'"model" must be a model name or id, not {name!r}; GET /v1/models lists them')
    return (await asyncio.to_thread(resolve_model, service.registry, name)).model_id


async def _admit(
    request: web.Request, body: CompletionRequest | ChatCompletionRequest, chat: bool
) -> tuple[JobPlan, Place, str]:
    """Every check before paying (prompt, cap, route), then a place when the route's workers have room."""
    service = request.app[SERVICE]
    base, cid = split_model_name(body.model)
    model_id = await _resolve_model(service, base)
    model = await asyncio.to_thread(service.catalog.get, model_id)
    if cid is not None:  # "<base>+<adapter id>": checked against the base model before anything is paid
        adapter = service.adapters.get(cid)
        adapter.check_model(model.manifest.config, model.num_layers)
        request["adapter"] = adapter
    if isinstance(body, ChatCompletionRequest):
        prompt = model.chat_prompt(body.message_dicts())
    else:
        prompt = body.text
    wanted = body.requested_max_tokens
    default = service.config.api_max_tokens
    # 400 before queueing; the first admission check reuses this plan (its /health answers were just read),
    # a check after waiting plans again with fresh ones: the route and its workers are read once, not twice
    admission = request.app[ADMISSION]
    directory = service.directory
    # (tick, plan): sessions of admitted jobs opened after the tick are not in the plan's /health: still unopened
    first = [
        (directory.tick(), await plan_job(service, model_id, prompt, wanted, default_max_tokens=default))
    ]

    async def check() -> tuple[JobPlan, dict[str, int]] | None:
        if first:
            tick, plan = first.pop()
        else:
            tick = directory.tick()
            plan = await plan_job(service, model_id, prompt, wanted, default_max_tokens=default)
        memory: dict[str, int] = {}
        for hop, health in zip(plan.route, plan.health, strict=True):
            if not has_free_session(health, admission.pending(hop.address), directory.load(hop.address)):
                return None
            needed = memory_needed(health, plan.prompt_tokens + plan.max_tokens)
            unopened = admission.unopened_bytes(hop.address, directory.opened_by, tick)
            if not has_free_memory(health, needed, unopened):
                return None
            memory[hop.address] = memory.get(hop.address, 0) + (needed or 0)
        return plan, memory

    plan, place = await admission.admit(check)
    return plan, place, prompt


async def _complete(request: web.Request, chat: bool) -> web.StreamResponse:
    if (denied := _check_key(request)) is not None:
        return denied
    service = request.app[SERVICE]
    raw = await json_body(request)
    try:
        body = (ChatCompletionRequest if chat else CompletionRequest).model_validate(raw)
    except ValidationError as exc:
        return validation_error(exc)
    place: Place | None = None
    try:
        plan, place, prompt = await _admit(request, body, chat)
        model = plan.model
        job_id = await service.jobs.submit_own_job(
            model.info.model_id, prompt, plan.max_tokens, body.sampling(chat=False)
        )
        if (adapter := request.get("adapter")) is not None:
            service.adapters.bind(job_id, adapter)  # before its sessions open: each gets its span's part
        place.bind(job_id)  # before its sessions open: admission control then sees which are open
        service.directory.watch_job(job_id)
    except PreflightRefused as exc:
        unavailable = exc.code in ("no_route", "model_unavailable")
        _release(place)
        if unavailable:
            return error(
                503,
                f"model {body.model!r} cannot be served now (nothing was paid): {exc.__cause__ or exc}",
                "service_unavailable",
                code=exc.code,
            )
        return error(
            400,
            f"{exc} (nothing was paid)",
            code=exc.code,
            param="max_tokens" if "max_tokens" in exc.code else "prompt",
        )
    except Refused as exc:
        return error(
            exc.status,
            str(exc),
            "rate_limit_exceeded" if exc.status == 429 else "service_unavailable",
            code="busy" if exc.status == 429 else "no_capacity",
        )
    except (NoRouteError, ModelUnavailable) as exc:
        _release(place)
        return error(
            503, f"model {body.model!r} cannot be served now (nothing was paid): {exc}", "service_unavailable"
        )
    except ChainError as exc:
        _release(place)
        return chain_error(exc)
    except ShardnetError as exc:
        _release(place)
        return error(400, str(exc), code="model_not_found" if isinstance(exc, UnknownModel) else None)
    except BaseException:
        _release(place)
        raise
    # schedule at once (before any await), so the job runs with this request's token callback
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def on_token(token: int) -> None:
        queue.put_nowait(token)

    generated: asyncio.Future[GenerationResult] = asyncio.get_running_loop().create_future()

    def on_generated(result: GenerationResult) -> None:
        _release(place)  # its sessions are closed: the next request need not wait for this one's settlement
        if not generated.done():
            generated.set_result(result)

    task = service.jobs.schedule(job_id, on_token if body.stream else None, on_generated)
    task.add_done_callback(lambda _: _release(place))  # the job is over: its sessions are closed
    task.add_done_callback(lambda _: service.directory.forget_job(job_id))

    kind = "chat.completion" if chat else "text_completion"
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{job_id}-{uuid.uuid4().hex[:8]}"
    created = int(time.time())
    name = model.info.name

    hold = (
        service.config.hold_until_verified if body.hold_until_verified is None else body.hold_until_verified
    )
    checks = service.jobs.runner.checks
    # The answer goes out once the output is saved for settlement: settleJobs follows (batched with other jobs',
    # finished by a restart if this process dies), the client need not wait for it. A hold waits for the check,
    # which starts after the settlement.
    answer = asyncio.ensure_future(answer_of(task, None if hold else generated))
    # a client gone: its error is logged by the job
    answer.add_done_callback(lambda f: f.cancelled() or f.exception())
    if not body.stream:
        try:
            result: GenerationResult | None = await answer
        except ShardnetError as exc:
            return error(502, f"job {job_id} failed: {exc}", "server_error")
        if result is None:
            return error(409, f"job {job_id} was already handled", "server_error")
        held: dict[str, Any] = {}
        if hold:  # the answer waits for the check; a cheat found: the corrected tokens, and the report
            report = await checks.verified(job_id)
            held["shardnet_verification"] = report.to_json(reveal=True) if report else {"status": "unknown"}
            tokens = held_tokens(report, result.tokens)
            if tokens is None and report is not None:  # wrong text and nothing to correct it with: an error
                return web.json_response(report.error_event() | held, status=502)
            if tokens is not None and tokens is not result.tokens:
                result = GenerationResult(tokens, result.finish_reason)
        text = model.decode(result.tokens)
        choice: dict[str, Any] = {"index": 0, "finish_reason": result.finish_reason, "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        usage = {"prompt_tokens": plan.prompt_tokens, "completion_tokens": len(result.tokens)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return web.json_response(
            {
                "id": ident,
                "object": kind,
                "created": created,
                "model": name,
                "choices": [choice],
                "usage": usage,
                "shardnet_job_id": job_id,
            }
            | held
        )

    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    chunk_kind = "chat.completion.chunk" if chat else "text_completion"

    async def send(delta: str | None, finish: str | None, first: bool = False) -> None:
        if chat:
            d: dict[str, Any] = (
                {"role": "assistant", "content": ""}
                if first
                else ({} if delta is None else {"content": delta})
            )
            choice = {"index": 0, "delta": d, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}
        payload = {"id": ident, "object": chunk_kind, "created": created, "model": name, "choices": [choice]}
        await resp.write(f"data: {json.dumps(payload)}\n\n".encode())

    try:
        verified = partial(checks.verified, job_id) if hold else None
        await stream_tokens(model, answer, queue, send, resp, chat, verified)
    except ConnectionError as exc:  # the client went away: normal, the paid job still runs to its settlement
        log.info(
            "job %d: the client closed its stream early (%s); the job finishes without it",
            job_id,
            type(exc).__name__,
        )
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
