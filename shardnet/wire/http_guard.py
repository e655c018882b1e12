"""Connection limits for an aiohttp server facing strangers: a cap on concurrent connections per peer IP
and a bound on how long a connection may sit without sending a whole request.

    runner = web.AppRunner(app, keepalive_timeout=limits.header_timeout_s)  # idle/half-sent headers
    await runner.setup()
    guard = ConnectionGuard.install(runner, max_per_ip=64)

aiohttp already closes a connection that has not sent a complete request head within `keepalive_timeout`
(it arms that timer when the connection opens), so the runner is built with a short one; a body sent too
slowly is the handler's to refuse (`shardnet.wire.json_limits.read_body_limited`). The guard counts
connections per peer address as the server sees them open and close; one beyond the cap is answered
`429` at once and closed, before any byte of it is parsed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

DEFAULT_MAX_PER_IP = 64
DEFAULT_HEADER_TIMEOUT_S = 15.0


class ConnectionGuard:
    """Counts the server's open connections per peer IP and refuses those beyond `max_per_ip`."""

    def __init__(self, max_per_ip: int) -> None:
        if max_per_ip < 1:
            raise ValueError("max_per_ip must be at least 1")
        self.max_per_ip = max_per_ip
        self.open: Counter[str] = Counter()
        self.refused = 0
        self._peer_of: dict[int, str] = {}  # id(handler) -> peer IP, for the handlers counted

    @classmethod
    def install(cls, runner: web.BaseRunner, max_per_ip: int = DEFAULT_MAX_PER_IP) -> ConnectionGuard:
        """Hook a guard into `runner`'s server (after `runner.setup()`, before sites start)."""
        server = runner.server
        if server is None:
            raise RuntimeError("call runner.setup() before installing the connection guard")
        guard = cls(max_per_ip)
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            made(handler, transport)
            guard._opened(handler, transport)

        def connection_lost(handler: Any, exc: BaseException | None) -> None:
            guard._closed(handler)
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign,assignment]
        return guard

    def _opened(self, handler: Any, transport: asyncio.Transport) -> None:
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if self.open[ip] >= self.max_per_ip:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                log.warning(
                    "refused connections beyond %d from %s (%d refused so far)",
                    self.max_per_ip,
                    ip,
                    self.refused,
                )
            body = json.dumps(
                {"error": f"too many connections from {ip} (limit {self.max_per_ip}): reuse or close some"}
            ).encode()
            transport.write(
                b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            handler.force_close()
            transport.close()
            return
        self.open[ip] += 1
        self._peer_of[id(handler)] = ip

    def _closed(self, handler: Any) -> None:
        ip = self._peer_of.pop(id(handler), None)
        if ip is not None:
            self.open[ip] -= 1
            if self.open[ip] <= 0:
                del self.open[ip]
