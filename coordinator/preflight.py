"""`POST /v1/jobs/preflight`: everything a client must know before paying for a job, read-only.

    POST /v1/jobs/preflight  {"model": "SmolLM2-135M-Instruct" | 3, "prompt": "...", "max_tokens": 32, "chat": true}
    200 {"model_id", "model", "prompt_tokens", "max_prompt_tokens", "max_tokens", "max_new_tokens",
         "route_max_length", "quote_wei", "route": [{"node", "span"}]}
    400 {"error": {"message", "type": "invalid_request_error", "code"}}   nothing would run: do not pay

It checks what a job would otherwise fail on after its escrow is paid: a model no chain of live workers
covers, a prompt that is empty after tokenization or longer than the registry's maxPromptTokens, and a
`max_tokens` beyond what the route's workers can hold (their `max_length` positions, prompt included). It
sends no transaction, stores nothing and opens no worker session: it reads the chain and the workers' /health.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from coordinator.catalog import ModelUnavailable
from coordinator.http_common import SERVICE, json_body
from coordinator.router import NoRouteError, RouteHop
from shardnet.chain.models import resolve_model
from shardnet.errors import ConfigError, ShardnetError

if TYPE_CHECKING:
    from coordinator.service import CoordinatorService

log = logging.getLogger(__name__)

PATH = "/v1/jobs/preflight"
#: The largest maxTokens the contract takes (uint32).
MAX_TOKENS_LIMIT = 2**32 - 1
HEALTH_TIMEOUT_S = 3.0


class PreflightRefused(ShardnetError):
    """The job would not run: the message says why and what to change; `code` names the check."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def _refuse(message: str, code: str, status: int = 400) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error", "code": code}},
                             status=status)


def _whole_number(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PreflightRefused(f"{name} must be a whole number, not {json.dumps(value)[:40]}", "bad_request")
    return value


def _resolve_model(service: CoordinatorService, given: Any) -> int:
    if not isinstance(given, str | int) or isinstance(given, bool):
        raise PreflightRefused(f'"model" must be a model name or id, not {json.dumps(given)[:40]}', "unknown_model")
    try:
        return resolve_model(service.registry, given).model_id
    except ConfigError as exc:
        raise PreflightRefused(str(exc), "unknown_model") from exc


async def _max_length(endpoint: str) -> int:
    """A worker's `max_length` (positions per session, prompt included) from its /health."""
    async with aiohttp.ClientSession() as http, http.get(
        endpoint.rstrip("/") + "/health", timeout=aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_S)
    ) as resp:
        if resp.status != 200:
            raise ShardnetError(f"/health answered HTTP {resp.status}")
        body = await resp.json()
    return int(body["max_length"])


async def route_max_length(route: list[RouteHop]) -> int:
    """The most positions every hop of `route` holds (the smallest of their max_length)."""
    try:
        lengths = await asyncio.gather(*(_max_length(h.endpoint) for h in route))
    except (aiohttp.ClientError, TimeoutError, ShardnetError, KeyError, ValueError) as exc:
        raise PreflightRefused(f"a worker of the route does not answer /health ({exc}); try again shortly",
                               "no_route") from exc
    return min(lengths)


async def preflight(service: CoordinatorService, body: dict[str, Any]) -> dict[str, Any]:
    """The checks of the module docstring; returns the 200 answer or raises PreflightRefused."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise PreflightRefused('send "prompt": the prompt text (a string)', "bad_request")
    max_tokens = _whole_number(body.get("max_tokens"), "max_tokens")
    if not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise PreflightRefused(f"max_tokens must be between 1 and {MAX_TOKENS_LIMIT}, not {max_tokens}",
                               "bad_max_tokens")
    model_id = await asyncio.to_thread(_resolve_model, service, body.get("model"))
    try:
        model = await asyncio.to_thread(service.catalog.get, model_id)
    except ModelUnavailable as exc:
        raise PreflightRefused(f"model {model_id} cannot be served now: {exc}", "model_unavailable") from exc
    text = model.chat_prompt([{"role": "user", "content": prompt}]) if body.get("chat") else prompt
    prompt_tokens = len(model.encode(text))
    if prompt_tokens == 0 or not prompt.strip():
        raise PreflightRefused("the prompt is empty (no tokens after tokenization): write a prompt", "empty_prompt")
    max_prompt = int(await asyncio.to_thread(service.registry.max_prompt_tokens))
    if prompt_tokens > max_prompt:
        raise PreflightRefused(f"the prompt has {prompt_tokens} tokens, more than the registry's maxPromptTokens "
                               f"({max_prompt}); shorten it", "prompt_too_long")
    try:
        route = service.router.route(model_id, model.num_layers)
    except NoRouteError as exc:
        raise PreflightRefused(f"model {model.info.name} cannot be served now: {exc}", "no_route") from exc
    length = await route_max_length(route)
    max_new = max(0, length - prompt_tokens)
    if max_tokens > max_new:
        raise PreflightRefused(
            f"max_tokens {max_tokens} is more than this route can generate: its workers hold {length} positions, "
            f"the prompt takes {prompt_tokens}, so at most {max_new} new tokens; ask for {max_new} or fewer",
            "max_tokens_too_large")
    quote = int(await asyncio.to_thread(service.registry.quote, model_id, max_tokens))
    return {"model_id": model_id, "model": model.info.name, "prompt_tokens": prompt_tokens,
            "max_prompt_tokens": max_prompt, "max_tokens": max_tokens, "max_new_tokens": max_new,
            "route_max_length": length, "quote_wei": quote,
            "route": [{"node": h.address.lower(), "span": [h.span.start, h.span.end]} for h in route]}


async def handle_preflight(request: web.Request) -> web.Response:
    body = await json_body(request)  # bounded in size and depth before parsing; 4xx when not a JSON object
    try:
        return web.json_response(await preflight(request.app[SERVICE], body))
    except PreflightRefused as exc:
        return _refuse(str(exc), exc.code)


#: Register with `app.add_routes([*preflight_routes()])`.
def preflight_routes() -> list[web.RouteDef]:
    return [web.post(PATH, handle_preflight)]
