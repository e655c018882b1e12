"""The accused's /health, read by the after-the-fact check for its dtype, is a stranger's answer: read no further
than its limit, so an endless one neither fills the coordinator's memory nor holds the check until the time-out."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from coordinator.hop_facts import worker_dtype
from shardnet.chain.devnet import free_port


def test_an_endless_health_answer_is_cut_at_its_limit() -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        while True:  # about 6 MB/s, for ever
            await resp.write(b'{"dtype": "float32", "pad": "' + b"x" * 65536)
            await asyncio.sleep(0.01)

    async def go() -> tuple[str | None, float]:
        app = web.Application()
        app.add_routes([web.get("/health", endless)])
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            start = time.monotonic()
            dtype = await worker_dtype(f"http://127.0.0.1:{port}", timeout_s=10.0)
            return dtype, time.monotonic() - start
        finally:
            await runner.cleanup()

    dtype, took = asyncio.run(go())
    assert dtype is None  # no dtype read: the check falls back to the loosest tolerance
    assert took < 5.0, f"read {took:.1f} s of an endless answer"
