"""The delaying proxy of the namespace network, on loopback (no root needed): each direction pays the delay once,
bytes arrive whole and in order (also when chunks are "lost"), half-closes pass through, and the proxy runs as
the command the harness starts."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shardnet.chain.devnet import free_port
from tests.netns.delay_proxy import LinkModel, serve
from tests.service_proc import REPO


async def echo_server() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def round_trips(port: int, payloads: list[bytes]) -> tuple[list[float], bytes]:
    """Send each payload and wait for its echo; returns (seconds of each round trip, all bytes echoed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    times, echoed = [], b""
    for payload in payloads:
        t0 = time.perf_counter()
        writer.write(payload)
        await writer.drain()
        echoed += await reader.readexactly(len(payload))
        times.append(time.perf_counter() - t0)
    writer.write_eof()
    assert await reader.read() == b""  # the echo server saw our EOF through the proxy and closed
    writer.close()
    return times, echoed


def test_each_direction_pays_the_delay_once() -> None:
    async def main() -> None:
        server, port = await echo_server()
        proxy = await serve(("127.0.0.1", 0), ("127.0.0.1", port), LinkModel(delay_s=0.030))
        proxy_port = proxy.sockets[0].getsockname()[1]
        times, echoed = await round_trips(proxy_port, [b"x" * 10] * 5)
        assert echoed == b"x" * 50
        assert all(0.060 <= t < 0.150 for t in times), times  # 30 ms in, 30 ms out
        direct, _ = await round_trips(port, [b"x" * 10] * 5)
        assert sorted(direct)[2] < 0.030  # the median: without the proxy the delay is gone
        proxy.close()
        server.close()

    asyncio.run(main())


def test_lost_chunks_delay_but_never_reorder_or_drop_bytes() -> None:
    async def main() -> None:
        server, port = await echo_server()
        link = LinkModel(delay_s=0.001, loss=0.3, rto_s=0.020, rng=random.Random(7))
        proxy = await serve(("127.0.0.1", 0), ("127.0.0.1", port), link)
        rng = random.Random(1)
        payloads = [rng.randbytes(rng.randint(1, 200_000)) for _ in range(20)]
        times, echoed = await round_trips(proxy.sockets[0].getsockname()[1], payloads)
        assert echoed == b"".join(payloads)
        assert max(times) >= 0.020  # some chunk waited its retransmission timeout
        proxy.close()
        server.close()

    asyncio.run(main())


def test_link_model_refuses_nonsense() -> None:
    for bad in ({"delay_s": -1.0}, {"loss": 1.0}, {"rto_s": -0.1}):
        with pytest.raises(ValueError, match="a link needs"):
            LinkModel(**bad)  # type: ignore[arg-type]


def test_the_proxy_command_forwards_with_its_delay_and_follows_its_delay_file(tmp_path: Path) -> None:
    delay_file = tmp_path / "delay.ms"

    async def main() -> None:
        server, port = await echo_server()
        listen = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.netns.delay_proxy", "--listen", f"127.0.0.1:{listen}"]
            + ["--target", f"127.0.0.1:{port}", "--delay-ms", "25", "--delay-file", str(delay_file)],
            cwd=REPO,
            stdout=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            assert b"proxying" in await asyncio.to_thread(proc.stdout.readline)
            times, echoed = await round_trips(listen, [b"hello"] * 3)
            assert echoed == b"hello" * 3 and all(t >= 0.050 for t in times), times
            delay_file.write_text("100")
            await asyncio.sleep(0.3)
            times, _ = await round_trips(listen, [b"hello"] * 2)
            assert all(t >= 0.200 for t in times), times
        finally:
            proc.terminate()
            assert proc.wait(timeout=10) == 0
            server.close()

    asyncio.run(main())
