"""A reverse HTTP proxy in front of one service that counts the step data crossing its link.

Each worker (and the push coordinator's answer endpoint) announces the proxy's URL, so every message to it, from
the coordinator or from another worker, crosses the proxy: a request with a body is one traversal of the link
towards the service; a response with a body is one back. Empty acknowledgements are counted apart."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web

HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}


class CountingProxy:
    """`start()` listens on 127.0.0.1:port in a thread of its own and forwards everything to `target`."""

    def __init__(self, target: str, port: int) -> None:
        self.target = target.rstrip("/")
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> CountingProxy:
        self._thread.start()
        assert self._ready.wait(10), "the counting proxy did not start"
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        kind = _kind(request.path)
        if kind and body:
            self._count(f"{kind} request")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._http.request(
            request.method, self.target + request.path_qs, data=body or None, headers=headers
        ) as resp:
            answer = await resp.read()
            out: dict[str, Any] = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP}
        if kind:
            self._count(
                f"{kind} response" if answer and resp.status == 200 and kind == "step" else f"{kind} ack"
            )
        return web.Response(body=answer, status=resp.status, headers=out)


def _kind(path: str) -> str | None:
    if path.endswith("/step"):
        return "step"
    if path.endswith("/push/answers"):
        return "answer"
    return None
