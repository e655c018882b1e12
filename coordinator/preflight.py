"""`POST /v1/jobs/preflight`: everything a client must know before paying for a job, read-only.

    POST /v1/jobs/preflight  {"model": "SmolLM2-135M-Instruct" | 3, "prompt": "...", "max_tokens": 32, "chat": true}
    200 {"model_id", "model", "prompt_tokens", "max_prompt_tokens", "max_tokens", "max_new_tokens",
         "route_max_length", "quote_wei", "route": [{"node", "span"}]}
    400 {"error": {"message", "type": "invalid_request_error", "code"}}   nothing would run: do not pay

It checks what a job would otherwise fail on after its escrow is paid: a model no chain of live workers
covers, a prompt that is empty after tokenization or longer than the registry's maxPromptTokens, a
`max_tokens` above the registry's maxJobTokens, and a `max_tokens` beyond what the route's workers can hold (their
`max_length` positions, prompt included, and the positions their whole cache memory holds). A job whose worst-case
cache memory (its positions x each worker's /health `memory.bytes_per_position`) does not fit in a worker's free
memory now is refused with 503 `no_capacity` (retry shortly). It sends no transaction, stores nothing and opens no
worker session: it reads the chain (maxPromptTokens and maxJobTokens once: they are immutable) and the workers'
/health (over one HTTP client session, kept open).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from pydantic import ValidationError

from coordinator.admission import has_free_memory, memory_needed
from coordinator.api_models import MAX_TOKENS_LIMIT, PreflightRequest, validation_error
from coordinator.catalog import ModelUnavailable, ServedModel
from coordinator.http_common import SERVICE, chain_error, json_body
from coordinator.router import NoRouteError, RouteHop
from shardnet.chain.errors import ChainError
from shardnet.chain.models import resolve_model
from shardnet.errors import ConfigError, ShardnetError

if TYPE_CHECKING:
    from coordinator.service import CoordinatorService

log = logging.getLogger(__name__)

PATH = "/v1/jobs/preflight"
__all__ = [
    "MAX_TOKENS_LIMIT",
    "JobPlan",
    "PreflightRefused",
    "plan_job",
    "preflight",
    "route_health",
    "route_max_length",
]
HEALTH_TIMEOUT_S = 3.0


class PreflightRefused(ShardnetError):
    """The job would not run: the message says why and what to change; `code` names the check, `status` is the
    HTTP answer (400: change the job; 503: not now)."""

    def __init__(self, message: str, code: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def _refuse(message: str, code: str, status: int = 400) -> web.Response:
    return web.json_response(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error" if status == 400 else "service_unavailable",
                "code": code,
            }
        },
        status=status,
    )


def _resolve_model(service: CoordinatorService, given: str | int) -> int:
    try:
        return resolve_model(service.registry, given).model_id
    except ConfigError as exc:
        raise PreflightRefused(str(exc), "unknown_model") from exc


_http: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}


def _health_client() -> aiohttp.ClientSession:
    """One HTTP client session per event loop, kept open (a new one per request cost a connection each time)."""
    loop = asyncio.get_running_loop()
    http = _http.get(loop)
    if http is None or http.closed:
        for other in [lp for lp in _http if lp.is_closed()]:
            del _http[other]
        http = _http[loop] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_S))
    return http


async def close_health_client(_app: web.Application | None = None) -> None:
    """Close this event loop's /health client (an aiohttp `on_cleanup` hook of the coordinator's app)."""
    http = _http.pop(asyncio.get_running_loop(), None)
    if http is not None:
        await http.close()


async def route_health(route: list[RouteHop]) -> list[dict[str, Any]]:
    """Every hop's /health answer (max_length, sessions, max_sessions, memory, ...), in route order."""
    http = _health_client()

    async def one(endpoint: str) -> dict[str, Any]:
        async with http.get(endpoint.rstrip("/") + "/health") as resp:
            if resp.status != 200:
                raise ShardnetError(f"/health answered HTTP {resp.status}")
            body = await resp.json()
        if not isinstance(body, dict):
            raise ShardnetError("/health answered something other than a JSON object")
        int(body["max_length"])
        return body

    try:
        return list(await asyncio.gather(*(one(h.endpoint) for h in route)))
    except (aiohttp.ClientError, TimeoutError, ShardnetError, KeyError, ValueError, TypeError) as exc:
        raise PreflightRefused(
            f"a worker of the route does not answer /health ({exc}); try again shortly", "no_route"
        ) from exc


async def route_max_length(route: list[RouteHop]) -> int:
    """The most positions every hop of `route` holds (the smallest of their max_length)."""
    return min(int(h["max_length"]) for h in await route_health(route))


@dataclass(frozen=True)
class JobPlan:
    """What a job would be: checked before anything is paid."""

    model: ServedModel
    prompt_tokens: int
    max_prompt_tokens: int
    max_tokens: int  # asked for, or (none asked) the default capped by the route
    max_new_tokens: int  # the most the route can generate after this prompt
    route: list[RouteHop]
    route_max_length: int
    health: list[dict[str, Any]]  # each hop's /health, in route order


async def plan_job(
    service: CoordinatorService,
    model_id: int,
    text: str,
    max_tokens: int | None,
    *,
    default_max_tokens: int = 1,
) -> JobPlan:
    """Check a job before paying: the prompt (`text`, chat template applied) is not empty nor longer than the
    registry's maxPromptTokens, `max_tokens` is not above the registry's maxJobTokens, a chain of live workers
    covers the model, and `max_tokens` fits in what its workers hold (None: `default_max_tokens`, capped by the route). Raises PreflightRefused."""
    try:
        model = await asyncio.to_thread(service.catalog.get, model_id)
    except ModelUnavailable as exc:
        raise PreflightRefused(f"model {model_id} cannot be served now: {exc}", "model_unavailable") from exc
    prompt_tokens = len(model.encode(text))
    if prompt_tokens == 0 or not text.strip():
        raise PreflightRefused(
            "the prompt is empty (no tokens after tokenization): write a prompt", "empty_prompt"
        )
    max_prompt = int(await asyncio.to_thread(service.registry.max_prompt_tokens))  # read from the chain once
    if prompt_tokens > max_prompt:
        raise PreflightRefused(
            f"the prompt has {prompt_tokens} tokens, more than the registry's maxPromptTokens "
            f"({max_prompt}); shorten it",
            "prompt_too_long",
        )
    max_job = int(await asyncio.to_thread(service.registry.max_job_tokens))
    if max_tokens is not None and max_tokens > max_job:
        raise PreflightRefused(
            f"max_tokens {max_tokens} is more than the registry's maxJobTokens ({max_job}); "
            f"ask for {max_job} or fewer",
            "max_tokens_too_large",
        )
    try:
        route = service.router.route(model_id, model.num_layers)
    except NoRouteError as exc:
        raise PreflightRefused(f"model {model.info.name} cannot be served now: {exc}", "no_route") from exc
    health = await route_health(route)
    length = min(positions_held(h) for h in health)
    max_new = max(0, length - prompt_tokens)
    if max_new < 1:
        raise PreflightRefused(
            f"the prompt takes {prompt_tokens} positions, all that this route's workers hold "
            f"({length}); shorten it",
            "prompt_too_long",
        )
    if max_tokens is None:
        max_tokens = min(default_max_tokens, max_new, max_job)
    if max_tokens > max_new:
        raise PreflightRefused(
            f"max_tokens {max_tokens} is more than this route can generate: its workers hold {length} positions, "
            f"the prompt takes {prompt_tokens}, so at most {max_new} new tokens; ask for {max_new} or fewer",
            "max_tokens_too_large",
        )
    return JobPlan(model, prompt_tokens, max_prompt, max_tokens, max_new, route, length, health)


async def preflight(service: CoordinatorService, body: PreflightRequest) -> dict[str, Any]:
    """The checks of the module docstring; returns the 200 answer or raises PreflightRefused."""
    model_id = await asyncio.to_thread(_resolve_model, service, body.model)
    model = await _served(service, model_id)
    text = model.chat_prompt([{"role": "user", "content": body.prompt}]) if body.chat else body.prompt
    plan = await plan_job(service, model_id, text, body.max_tokens)
    check_memory_free(plan)
    quote = int(await asyncio.to_thread(service.registry.quote, model_id, plan.max_tokens))
    return {
        "model_id": model_id,
        "model": model.info.name,
        "prompt_tokens": plan.prompt_tokens,
        "max_prompt_tokens": plan.max_prompt_tokens,
        "max_tokens": plan.max_tokens,
        "max_new_tokens": plan.max_new_tokens,
        "route_max_length": plan.route_max_length,
        "quote_wei": quote,
        "route": [{"node": h.address.lower(), "span": [h.span.start, h.span.end]} for h in plan.route],
    }


def positions_held(health: dict[str, Any]) -> int:
    """The most positions one session can hold on a worker: its max_length, and what its whole cache budget holds
    (its /health `memory`; a worker without one states no memory limit)."""
    length = int(health["max_length"])
    memory = health.get("memory")
    try:
        per_position = int(memory["bytes_per_position"])  # type: ignore[index]
        budget = int(memory["budget_bytes"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        return length
    return min(length, budget // per_position) if per_position > 0 else length


def check_memory_free(plan: JobPlan) -> None:
    """Raise PreflightRefused (503 no_capacity) unless the job's worst case fits in each worker's free memory now."""
    for hop, health in zip(plan.route, plan.health, strict=True):
        needed = memory_needed(health, plan.prompt_tokens + plan.max_tokens)
        if not has_free_memory(health, needed, 0):
            raise PreflightRefused(
                f"worker {hop.address} does not have the free cache memory for this job now ({needed} bytes for "
                f"{plan.prompt_tokens + plan.max_tokens} positions): nothing was paid; retry in a few seconds",
                "no_capacity",
                status=503,
            )


async def _served(service: CoordinatorService, model_id: int) -> ServedModel:
    try:
        return await asyncio.to_thread(service.catalog.get, model_id)
    except ModelUnavailable as exc:
        raise PreflightRefused(f"model {model_id} cannot be served now: {exc}", "model_unavailable") from exc


async def handle_preflight(request: web.Request) -> web.Response:
    raw = await json_body(request)  # bounded in size and depth before parsing; 4xx when not a JSON object
    try:
        body = PreflightRequest.model_validate(raw)
    except ValidationError as exc:
        return validation_error(exc, codes={"max_tokens": "bad_max_tokens"})
    try:
        return web.json_response(await preflight(request.app[SERVICE], body))
    except PreflightRefused as exc:
        return _refuse(str(exc), exc.code, exc.status)
    except ChainError as exc:
        return chain_error(exc)


#: Register with `app.add_routes([*preflight_routes()])`.
def preflight_routes() -> list[web.RouteDef]:
    return [web.post(PATH, handle_preflight)]
