"""The one small blocking JSON-over-HTTP helper (standard library only) for the client, the devnet's raw
JSON-RPC calls and the local-network launcher; the roles' own traffic goes through aiohttp.

    status, body = request_json("POST", url + "/v1/jobs/7/prompt", {"prompt": "hi"}, timeout=10)

Any HTTP answer comes back as (status, decoded JSON or None); no answer at all raises `HttpUnreachable`.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from shardnet.errors import ShardnetError
from shardnet.wire.json_limits import BodyRejected, loads_limited


class HttpUnreachable(ShardnetError, ConnectionError):
    """No HTTP answer from a URL (refused, timed out, DNS, connection reset)."""

    def __init__(self, url: str, reason: object) -> None:
        super().__init__(f"cannot reach {url}: {reason}")
        self.url = url
        self.reason = reason


#: The largest and deepest JSON answer read (a hostile peer must not exhaust memory or the C stack).
MAX_ANSWER_BYTES, MAX_ANSWER_DEPTH = 16 << 20, 32


def _decode(raw: bytes) -> Any:
    """The answer's JSON, or None when it is not JSON or is too large or too deeply nested to be read."""
    try:
        return loads_limited(raw or b"null", max_bytes=MAX_ANSWER_BYTES, max_depth=MAX_ANSWER_DEPTH)
    except (BodyRejected, ValueError):
        return None


def request_json(
    method: str,
    url: str,
    body: Any = None,
    *,
    timeout: float = 10.0,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Any]:
    """Send `body` (JSON-encoded unless None or bytes) and return (HTTP status, decoded JSON body or None).

    A 4xx/5xx answer is returned, not raised; raises HttpUnreachable when no answer comes back.
    """
    raw = isinstance(body, bytes)  # bytes are sent as they are (an uploaded file)
    data = body if raw else (None if body is None else json.dumps(body).encode())
    kind = "application/octet-stream" if raw else "application/json"
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": kind, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (callers give http URLs)
            return int(response.status), _decode(response.read(MAX_ANSWER_BYTES + 1))
    except urllib.error.HTTPError as exc:
        try:
            return int(exc.code), _decode(exc.read(MAX_ANSWER_BYTES + 1))
        finally:
            exc.close()
    except urllib.error.URLError as exc:
        raise HttpUnreachable(url, exc.reason) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise HttpUnreachable(url, exc) from exc
