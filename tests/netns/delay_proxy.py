"""A delaying TCP proxy: the per-link one-way delay (and loss, as TCP sees it) of the namespace test network.

This kernel has no netem, so the harness runs one of these on each host's link, inside the host's namespace:
it listens on the host's public address and forwards to the service's real port on the namespace's
loopback. Every chunk read from one side is written to the other `delay_s` after it was read, in order, in
both directions; so a request and its answer each cross the link once and each pay `delay_s` once.

Loss is modelled as TCP turns it into time: a chunk "lost" with probability `loss` arrives after an extra
`rto_s` (the retransmission timeout), and everything behind it on that connection waits for it (order is
kept, as TCP keeps it).

    python -m tests.netns.delay_proxy --listen 10.55.7.3:8000 --target 127.0.0.1:8000 --delay-ms 5

With `--delay-file PATH` the delay can be changed while it runs: the proxy reads the file (a number of ms)
every 50 ms and applies it to chunks read from then on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

CHUNK = 65536


@dataclass
class LinkModel:
    """What one link does to each chunk: a fixed one-way delay, and loss as an extra retransmission wait."""

    delay_s: float = 0.0
    loss: float = 0.0
    rto_s: float = 0.2
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.delay_s < 0 or not 0 <= self.loss < 1 or self.rto_s < 0:
            raise ValueError(
                f"a link needs delay >= 0, 0 <= loss < 1 and rto >= 0 (got {self.delay_s}, {self.loss}, {self.rto_s})"
            )

    def hold_s(self) -> float:
        """How long the chunk read now is held before it is written on."""
        lost = self.loss > 0 and self.rng.random() < self.loss
        return self.delay_s + (self.rto_s if lost else 0.0)


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: LinkModel) -> None:
    """Copy `reader` to `writer`, each chunk written `link.hold_s()` after it was read, in order; EOF is passed on."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read_side() -> None:
        while True:
            try:
                data = await reader.read(CHUNK)
            except (ConnectionError, OSError):
                data = b""  # a reset ends this direction like an EOF
            due = time.monotonic() + link.hold_s()
            await queue.put((due, data))
            if not data:
                return

    async def write_side() -> None:
        not_before = 0.0
        while True:
            due, data = await queue.get()
            due = max(
                due, not_before
            )  # a chunk never overtakes the one before it (a lost one holds the rest)
            not_before = due
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    reading = asyncio.ensure_future(read_side())
    try:
        await write_side()
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await reading


async def handle(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    target: tuple[str, int],
    link: LinkModel,
) -> None:
    """One proxied connection: both directions pumped through `link` until both ends are done."""
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection(*target)
    except OSError:
        client_writer.close()
        return
    try:
        await asyncio.gather(
            pump(client_reader, upstream_writer, link),
            pump(upstream_reader, client_writer, link),
        )
    except (ConnectionError, OSError):
        pass
    finally:
        for w in (upstream_writer, client_writer):
            w.close()
            with contextlib.suppress(ConnectionError, OSError):
                await w.wait_closed()


async def serve(listen: tuple[str, int], target: tuple[str, int], link: LinkModel) -> asyncio.Server:
    """Start proxying `listen` -> `target` through `link`; returns the listening server."""
    return await asyncio.start_server(
        lambda r, w: handle(r, w, target, link), listen[0], listen[1], reuse_address=True
    )


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, e.g. 10.55.7.3:8000, got {text!r}")
    return host, int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.netns.delay_proxy", description=__doc__)
    parser.add_argument("--listen", type=host_port, required=True, help="HOST:PORT to accept connections on")
    parser.add_argument(
        "--target", type=host_port, required=True, help="HOST:PORT to forward each connection to"
    )
    parser.add_argument(
        "--delay-ms", type=float, default=0.0, help="one-way delay per chunk and direction (ms)"
    )
    parser.add_argument(
        "--loss", type=float, default=0.0, help="share of chunks held an extra --rto-ms (0..1)"
    )
    parser.add_argument("--rto-ms", type=float, default=200.0, help="extra wait of a lost chunk (ms)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the loss draw (default: random)")
    parser.add_argument(
        "--delay-file", type=Path, default=None, help="a file holding the delay in ms, re-read every 50 ms"
    )
    return parser


async def follow_delay_file(path: Path, link: LinkModel, interval_s: float = 0.05) -> None:
    """Keep `link.delay_s` equal to the ms written in `path` (a missing or unreadable file changes nothing)."""
    while True:
        try:
            link.delay_s = max(0.0, float(path.read_text().strip()) / 1000)
        except (OSError, ValueError):
            pass
        await asyncio.sleep(interval_s)


async def main_async(args: argparse.Namespace) -> None:
    link = LinkModel(args.delay_ms / 1000, args.loss, args.rto_ms / 1000, random.Random(args.seed))
    server = await serve(args.listen, args.target, link)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    follower = asyncio.ensure_future(follow_delay_file(args.delay_file, link)) if args.delay_file else None
    print(f"proxying {args.listen} -> {args.target} with {args.delay_ms} ms one-way delay", flush=True)
    async with server:
        await stop.wait()
    if follower is not None:
        follower.cancel()


def main(argv: list[str] | None = None) -> int:
    asyncio.run(main_async(build_parser().parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
