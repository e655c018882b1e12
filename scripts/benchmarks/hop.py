"""`scripts/bench.py hop`: one hop's data-plane cost (aiohttp, frames, hashing, the SQLite step record) through a
real worker server whose block answers at once, so the model's time is not in the figure.

    .venv/bin/python scripts/bench.py hop [--steps 300]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

from shardnet.role_process import REPO
from shardnet.span import LayerSpan

WARMUP_STEPS = 5


def hop_overhead(steps: int, work_dir: Path) -> dict[str, float]:
    """Median ms of one step through a real worker server (aiohttp, frames, hashing, SQLite step record) whose
    block answers at once: what the data plane costs per hop, apart from the model. Keys "hidden" (a middle hop:
    576 floats out) and "logits" (the last hop: 49,152 fp32 logits out)."""
    import asyncio
    import uuid

    import torch
    from aiohttp import web
    from eth_account import Account

    from shardnet.chain.devnet import DEV_KEYS, free_port
    from shardnet.db import make_engine
    from shardnet.peer.client import WorkerClient
    from shardnet.wire.eip712 import Domain
    from shardnet.wire.tickets import sign_ticket
    from worker.server import BlockInfo, WorkerServer
    from worker.state import WorkerState

    class Instant:
        """A block session that returns a fixed output at once (the model's time is not measured here)."""

        def __init__(self, out: torch.Tensor) -> None:
            self.out, self.length = out, 0

        def step(self, x: torch.Tensor, start_pos: int) -> torch.Tensor:
            self.length = start_pos + int(x.shape[1])
            return self.out

    class InstantBlock:
        def __init__(self, out: torch.Tensor) -> None:
            self.out = out

        def new_session(self) -> Instant:
            return Instant(self.out)

    coordinator = Account.from_key(DEV_KEYS[1])
    worker = Account.from_key(DEV_KEYS[3])
    domain = Domain(31337, "0x" + "00" * 19 + "01")  # no chain: tickets are signed for a made-up registry

    async def one(kind: str, width: int, is_last: bool) -> float:
        span = LayerSpan(20, 30) if is_last else LayerSpan(10, 20)
        info = BlockInfo(
            span=span,
            num_layers=30,
            is_first=False,
            is_last=is_last,
            hidden_size=576,
            vocab_size=49152,
            kv_bytes_per_token=1,
        )
        state = WorkerState(make_engine(None, default_path=work_dir / f"hop-{kind}.db"), worker.address)
        server = WorkerServer(
            address=worker.address,
            model_name="bench",
            model_id=1,
            block=InstantBlock(torch.randn(1, 1, width)),
            info=info,
            is_coordinator=lambda _a: True,
            state=state,
            chain_id=domain.chain_id,
            registry_address=domain.registry,
        )
        runner = web.AppRunner(server.app())
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with WorkerClient(f"http://127.0.0.1:{port}") as client:
                sid = uuid.uuid4().hex
                ticket = sign_ticket(
                    coordinator,
                    worker=worker.address,
                    session_id=sid,
                    job_id=1,
                    span=span,
                    max_positions=2**20,
                    expires_at=int(time.time()) + 600,
                    chain_id=domain.chain_id,
                    registry=domain.registry,
                )
                await client.open_session(ticket, "fp32")
                x = torch.randn(1, 1, 576)
                times: list[float] = []
                for pos in range(steps):
                    t = time.perf_counter()
                    await client.step(sid, x, pos)
                    times.append((time.perf_counter() - t) * 1000)
                await client.close(sid)
        finally:
            await runner.cleanup()
        return statistics.median(times[WARMUP_STEPS:])

    async def both() -> dict[str, float]:
        return {"hidden": await one("hidden", 576, False), "logits": await one("logits", 49152, True)}

    work_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(both())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--steps", type=int, default=300, help="steps per hop kind; the first 5 are warm-up (default: 300)"
    )
    parser.add_argument(
        "--work-dir", type=Path, default=REPO / ".shardnet" / "bench", help="scratch folder (wiped)"
    )


def run(args: argparse.Namespace) -> int:
    if args.steps <= WARMUP_STEPS:
        raise SystemExit(f"--steps must be more than the {WARMUP_STEPS} warm-up steps")
    shutil.rmtree(args.work_dir, ignore_errors=True)
    hop = hop_overhead(args.steps, args.work_dir)
    measured = args.steps - WARMUP_STEPS
    print(f"| one step through a worker whose block answers at once (median of {measured}, ms) | |")
    print("|---|---:|")
    print(f"| middle hop (576 fp32 out) | {hop['hidden']:.2f} |")
    print(f"| last hop (49,152 fp32 logits out) | {hop['logits']:.2f} |")
    return 0
