"""What the coordinator's two HTTP APIs share: the service key, error bodies, JSON bodies, sampling parameters."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from coordinator.sampling import SamplingParams
from coordinator.service import CoordinatorService
from shardnet.errors import ConfigError
from shardnet.wire.json_limits import read_json

SERVICE: web.AppKey[CoordinatorService] = web.AppKey("service", CoordinatorService)

#: Request bodies: bounded in size, and in depth before parsing (a 100,000-deep body used to crash the process)
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_JSON_DEPTH = 32  # chat messages nest 3 deep


def error(status: int, message: str, kind: str = "invalid_request_error") -> web.Response:
    """An error answer in OpenAI's shape: {"error": {"message", "type"}}."""
    return web.json_response({"error": {"message": message, "type": kind}}, status=status)


def sampling(body: dict[str, Any]) -> SamplingParams:
    """The sampling parameters of a request body; raises ConfigError (answered 400) on bad values."""
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


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body (size and depth bounded before parsing), or a 4xx answer."""
    body = await read_json(request, max_bytes=MAX_BODY_BYTES, max_depth=MAX_JSON_DEPTH,
                           error_body=lambda message: {"error": {"message": message, "type": "invalid_request_error"}})
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=json.dumps({"error": {"message": "the body must be a JSON object"}}),
                                 content_type="application/json")
    return body
