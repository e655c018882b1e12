"""What the coordinator's two HTTP APIs share: the service key, error bodies, JSON bodies, chain failures."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from coordinator.service import CoordinatorService
from shardnet.chain.errors import ChainError, ChainUnavailable
from shardnet.wire.json_limits import read_json

SERVICE: web.AppKey[CoordinatorService] = web.AppKey("service", CoordinatorService)

#: Request bodies: bounded in size, and in depth before parsing (a 100,000-deep body used to crash the process)
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_JSON_DEPTH = 32  # chat messages nest 3 deep


def error_body(
    message: str, kind: str = "invalid_request_error", *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    *,
    param: str | None = None,
    code: str | None = None,
) -> web.Response:
    """An error answer in OpenAI's shape."""
    return web.json_response(error_body(message, kind, param=param, code=code), status=status)


def chain_error(exc: ChainError) -> web.Response:
    """A chain node that does not answer is 503 (try again later), one that answers an error 502: never 400/500."""
    if isinstance(exc, ChainUnavailable):
        return error(
            503,
            f"the chain node does not answer ({exc}); nothing was paid, try again shortly",
            "service_unavailable",
            code="chain_unavailable",
        )
    return error(
        502, f"the chain node answered an error ({exc}); nothing was paid", "server_error", code="chain_error"
    )


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body (size and depth bounded before parsing), or a 4xx answer."""
    body = await read_json(
        request,
        max_bytes=MAX_BODY_BYTES,
        max_depth=MAX_JSON_DEPTH,
        error_body=lambda message: error_body(message, code="invalid_json"),
    )
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps(error_body("the body must be a JSON object", code="invalid_json")),
            content_type="application/json",
        )
    return body
