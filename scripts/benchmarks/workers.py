"""`scripts/bench.py workers`: worker data-plane figures: SmolLM2-135M over 3 `worker run` processes on loopback, against a fresh anvil.

Prints, for greedy decoding from the same prompt:
- median ms per decoded token when the client relays each hop itself (3 round trips per token) and in
  push mode (one request; each worker forwards to the next);
- the model compute inside the workers per decode step (from their /metrics): the rest is HTTP + framing;
- the slowest /health answer while a worker computes a long prefill (compute runs off the event loop).

    .venv/bin/python scripts/bench.py workers [--tokens 32] [--threads 1] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import torch

from shardnet.peer.client import WorkerClient
from shardnet.span import LayerSpan

REPO = Path(__file__).resolve().parents[2]
SPANS = [LayerSpan(0, 10), LayerSpan(10, 20), LayerSpan(20, 30)]
PROMPT = [1, 9690, 198, 2683, 314, 253, 5356, 30, 2, 198]


def _metric_sum(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


async def _scrape(url: str) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
        return await resp.text()


async def measure(
    urls: list[str], addresses: list[str], coordinator: Any, tokens: int, domain: Any
) -> dict[str, float]:
    from shardnet.wire.tickets import sign_ticket

    clients = [WorkerClient(u) for u in urls]

    def ticket(i: int) -> dict[str, Any]:
        return sign_ticket(
            coordinator,
            worker=addresses[i],
            session_id=uuid.uuid4().hex,
            job_id=0,
            span=SPANS[i],
            max_positions=2**20,
            expires_at=int(time.time()) + 3600,
            chain_id=domain.chain_id,
            registry=domain.registry,
        )

    async def compute_s() -> float:
        return sum([_metric_sum(await _scrape(u), "shardnet_worker_step_seconds_sum") for u in urls])

    async def relay() -> tuple[list[float], float]:
        """Decode step times, and the workers' compute per decode step (from their metrics)."""
        sids = [(await c.open_session(ticket(i)))["session_id"] for i, c in enumerate(clients)]
        x, pos, times, after_prefill = torch.tensor([PROMPT]), 0, [], 0.0
        for n in range(tokens):
            t0 = time.perf_counter()
            h = x
            for c, sid in zip(clients, sids, strict=True):
                h, _ = await c.step(sid, h, pos)
            times.append(time.perf_counter() - t0)
            if n == 0:
                after_prefill = await compute_s()
            pos += x.shape[1]
            x = torch.tensor([[int(h[0, -1].argmax())]])
        compute = (await compute_s() - after_prefill) / (tokens - 1)
        for c, sid in zip(clients, sids, strict=True):
            await c.close(sid)
        return times[1:], compute

    async def push() -> list[float]:
        sids: list[str] = []
        nxt = None
        for i in reversed(range(3)):
            opened = await clients[i].open_session(ticket(i), next=nxt)
            sids.insert(0, opened["session_id"])
            nxt = {"url": urls[i], "session_id": sids[0], "token": opened["session_token"]}
        x, pos, times = torch.tensor([PROMPT]), 0, []
        for _ in range(tokens):
            t0 = time.perf_counter()
            logits, _ = await clients[0].step(sids[0], x, pos)
            times.append(time.perf_counter() - t0)
            pos += x.shape[1]
            x = torch.tensor([[int(logits[0, -1].argmax())]])
        for c, sid in zip(clients, sids, strict=True):
            await c.close(sid)
        return times[1:]

    async def health_during_prefill() -> float:
        sid = (await clients[0].open_session(ticket(0)))["session_id"]
        step = asyncio.create_task(clients[0].step(sid, torch.randint(0, 49152, (1, 1024)), 0))
        worst = 0.0
        while not step.done():
            t0 = time.perf_counter()
            await clients[0].health()
            worst = max(worst, time.perf_counter() - t0)
            await asyncio.sleep(0.01)
        await step
        await clients[0].close(sid)
        return worst

    try:
        relay_times, compute = await relay()
        push_times = await push()
        worst_health = await health_during_prefill()
    finally:
        for c in clients:
            await c.aclose()
    return {
        "relay_ms": statistics.median(relay_times) * 1000,
        "push_ms": statistics.median(push_times) * 1000,
        "compute_ms": compute * 1000,  # all 3 workers, per decode step
        "health_ms": worst_health * 1000,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokens", type=int, default=32, help="tokens to decode per mode (default: 32)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (default: 1)")
    parser.add_argument(
        "--work-dir", type=Path, help="folder for the store, logs and databases (default: a temp dir)"
    )


def run(args: argparse.Namespace) -> int:

    from shardnet.localnet import COORDINATOR, FIRST_WORKER, LocalNetwork, dev_account
    from shardnet.model.importer import smollm2_gguf_path

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="worker-bench-"))
    with LocalNetwork.start(work) as net:
        print(f"importing SmolLM2 into {work} ...", flush=True)
        model_id, _cid, _manifest = net.import_model(smollm2_gguf_path(), price_wei=1, progress=False)
        coordinator = dev_account(COORDINATOR)  # signs the tickets; the bench itself plays the coordinator
        net.owner.set_coordinator(coordinator.address, "http://127.0.0.1:9", True)
        print("starting 3 workers of 10 layers ...", flush=True)
        workers = [net.add_worker(i, model_id, span, threads=args.threads) for i, span in enumerate(SPANS)]
        for worker in workers:
            worker.wait_healthy(300)
        addresses = [net.address(FIRST_WORKER + i) for i in range(len(SPANS))]
        figures = asyncio.run(
            measure([w.url for w in workers], addresses, coordinator, args.tokens, net.owner.domain())
        )
    print(
        f"\nSmolLM2-135M, 3 workers x 10 layers, {args.threads} thread(s) each, {args.tokens} tokens, loopback"
    )
    print("| figure | value |\n|---|---|")
    print(f"| decode, client relays each hop (median ms/token) | {figures['relay_ms']:.1f} |")
    print(f"| decode, push mode (median ms/token) | {figures['push_ms']:.1f} |")
    print(f"| model compute in the 3 workers (mean ms per decode step) | {figures['compute_ms']:.1f} |")
    print(f"| slowest /health during a 1024-token prefill (ms) | {figures['health_ms']:.1f} |")
    return 0
