"""How the worker's HTTP API answers errors: `{"error": "..."}` with the status of the
`shardnet.peer.errors` class raised (docs/PROTOCOL.md "Worker HTTP API"), counted in the worker's metrics,
and request bodies read with bounds (413 too large, 408 not sent in time)."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from shardnet.peer.errors import NextHopFailed, WorkerAPIError
from shardnet.wire.json_limits import BodyRejected, read_body_limited
from worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)


def errors_as_json(metrics: WorkerMetrics, max_body_bytes: int) -> Middleware:
    """The aiohttp middleware that turns every error a handler raises into a JSON answer (500 for the
    unexpected, logged with its traceback)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except WorkerAPIError as exc:
            body: dict[str, Any] = {"error": exc.message}
            if exc.code is not None:
                body["code"] = exc.code  # machine-readable: memory_full, sessions_full, draining
            if isinstance(exc, NextHopFailed):
                body["failed_hop"] = exc.url
            metrics.request_errors.labels(str(exc.status)).inc()
            return web.json_response(body, status=exc.status)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            metrics.request_errors.labels(str(exc.status)).inc()
            message = {
                404: f"no such endpoint {request.method} {request.path}; see docs/PROTOCOL.md",
                405: f"method {request.method} is not allowed on {request.path}",
                413: f"request body is larger than this worker accepts ({max_body_bytes} bytes): "
                "send fewer tokens per step",
            }.get(exc.status, exc.reason)
            return web.json_response({"error": message}, status=exc.status)
        except Exception:
            log.exception("internal error in %s %s", request.method, request.path)
            metrics.request_errors.labels("500").inc()
            return web.json_response({"error": "internal worker error; see the worker's log"}, status=500)

    return middleware


async def read_body(request: web.Request, max_bytes: int, timeout_s: float) -> bytes:
    """The body, or 413 (too large) / 408 (not sent within `timeout_s`)."""
    try:
        return await read_body_limited(request, max_bytes, timeout_s)
    except BodyRejected as exc:
        raise WorkerAPIError(str(exc), status=exc.status) from exc
