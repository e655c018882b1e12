"""The dashboard over HTTP (aiohttp), read-only: GET only, no key, no client output, strict security headers.

    GET /dashboard                   the page (static HTML: every value is put in by app.js as text, never as HTML)
    GET /dashboard/assets/{name}     app.js, style.css (package data, no CDN)
    GET /dashboard/api/snapshot      the JSON document the page polls (built by a `SnapshotSource`)
    GET /                            a redirect to /dashboard, where the app has nothing else on /

`install(app, source)` mounts it on any aiohttp app (the coordinator's); `serve` runs it standalone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

#: What the page polls: the snapshot document, built without blocking the event loop
SnapshotSource = Callable[[], Awaitable[dict[str, Any]]]

DASHBOARD_SOURCE: web.AppKey[SnapshotSource] = web.AppKey("dashboard_source")


class EncodedSnapshot:
    """The JSON of the source's latest document, encoded once per document: a large snapshot (many models,
    nodes and jobs) costs tens of milliseconds to encode, and encoding it for every poll would stall the event
    loop the coordinator's inference API runs on, however many pages poll."""

    def __init__(self) -> None:
        self.doc: dict[str, Any] | None = None
        self.body = b""

    def of(self, doc: dict[str, Any]) -> bytes:
        if doc is not self.doc:
            self.body = json.dumps(doc, separators=(",", ":")).encode()
            self.doc = doc
        return self.body


DASHBOARD_BODY: web.AppKey[EncodedSnapshot] = web.AppKey("dashboard_body")

_ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}

#: Only the package's own script, styles and JSON; no inline script, no frames, no forms, no plugins
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def asset_text(name: str) -> str:
    """One file of the package's `assets/` folder."""
    return resources.files("shardnet.dashboard").joinpath("assets", name).read_text("utf-8")


def _secured(response: web.Response) -> web.Response:
    response.headers.update(SECURITY_HEADERS)
    return response


async def _page(request: web.Request) -> web.Response:
    return _secured(web.Response(text=asset_text("index.html"), content_type="text/html", charset="utf-8"))


async def _asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _ASSETS:
        return _secured(web.Response(status=404, text="no such dashboard asset"))
    return _secured(web.Response(text=asset_text(name), content_type=_ASSETS[name], charset="utf-8"))


async def _snapshot(request: web.Request) -> web.Response:
    doc = await request.app[DASHBOARD_SOURCE]()
    body = request.app[DASHBOARD_BODY].of(doc)
    return _secured(web.Response(body=body, content_type="application/json"))


async def _to_dashboard(request: web.Request) -> web.Response:
    raise web.HTTPFound("/dashboard")


def _root_is_free(app: web.Application) -> bool:
    return not any(getattr(r, "canonical", None) == "/" for r in app.router.resources())


def install(app: web.Application, source: SnapshotSource) -> None:
    """Mount the dashboard's routes (GET only) on `app`, fed by `source`; `/` redirects to it if nothing has `/`."""
    app[DASHBOARD_SOURCE] = source
    app[DASHBOARD_BODY] = EncodedSnapshot()
    routes = [
        web.get("/dashboard", _page),
        web.get("/dashboard/assets/{name}", _asset),
        web.get("/dashboard/api/snapshot", _snapshot),
    ]
    if _root_is_free(app):
        routes.append(web.get("/", _to_dashboard))
    app.add_routes(routes)


def one_refresh_at_a_time(build: SnapshotSource) -> SnapshotSource:
    """`build` run by one request at a time; the others meanwhile get the last document built at once (a slow or
    dead chain node delays one refresh, never the pages: only the very first request waits for a document)."""
    lock = asyncio.Lock()
    last: list[dict[str, Any]] = []

    async def read() -> dict[str, Any]:
        if lock.locked() and last:
            return last[0]
        async with lock:
            doc = await build()
            last[:] = [doc]
        return doc

    return read


def chain_source(snapshot: Any) -> SnapshotSource:
    """A source reading a `ChainSnapshot` in a thread (its chain reads block), one refresh at a time: however many
    pages poll, and however slow the chain node, the dashboard holds at most one worker thread."""

    async def build() -> dict[str, Any]:
        doc: dict[str, Any] = await asyncio.to_thread(snapshot.current)
        return doc

    return one_refresh_at_a_time(build)


async def serve(source: SnapshotSource, host: str, port: int, *, on_ready: Callable[[str], None]) -> None:
    """Serve the dashboard alone until SIGINT or SIGTERM; `on_ready` gets its URL once it listens."""
    app = web.Application(client_max_size=64 * 1024)
    install(app, source)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1]
        on_ready(f"http://{host}:{bound}/dashboard")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
