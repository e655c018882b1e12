"""Helpers for batching tests: many sessions generating at once through a push chain of real workers."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import aiohttp
import torch

from shardnet.peer.client import WorkerClient
from shardnet.span import LayerSpan
from shardnet.verify.fingerprint import io_hash, leaf, make_fingerprint
from shardnet.wire.commitment import merkle_root
from shardnet.wire.eip712 import Domain
from tests.worker.harness import WorkerProc, ticket


@dataclass
class Generated:
    tokens: list[int]
    logits: torch.Tensor  # [n, vocab]
    last_commitment: bytes  # the last worker's Merkle root at close
    last_expected: bytes  # that root rebuilt from the hop hashes and logits the client received


async def generate_in_chain(
    workers: list[WorkerProc],
    spans: list[LayerSpan],
    domain: Domain,
    coordinator: Any,
    prompt: torch.Tensor,
    n: int,
) -> Generated:
    """Greedy-decode `n` tokens of `prompt` through `workers` in push mode, one request per step."""
    clients = [WorkerClient(w.url) for w in workers]
    try:
        sessions: list[str] = []
        nxt = None
        for w, c, span in reversed(list(zip(workers, clients, spans, strict=True))):
            opened = await c.open_session(ticket(domain, coordinator, w.address, span), "fp32", next=nxt)
            sessions.insert(0, opened["session_id"])
            nxt = {"url": w.url, "session_id": opened["session_id"], "token": opened["session_token"]}
        tokens: list[int] = []
        logits: list[torch.Tensor] = []
        leaves: list[bytes] = []
        x, pos = prompt, 0
        for _ in range(n):
            res = await clients[0].step_full(sessions[0], x, pos)
            assert len(res.hop_hashes) == len(workers)
            pos += x.shape[1]
            logits.append(res.tensor[0, -1])
            leaves.append(leaf(io_hash(res.hop_hashes[-2], res.hop_hashes[-1]), make_fingerprint(res.tensor)))
            tokens.append(int(res.tensor[0, -1].argmax()))
            x = torch.tensor([[tokens[-1]]])
        roots = [await c.close(sid) for c, sid in zip(clients, sessions, strict=True)]
        return Generated(tokens, torch.stack(logits), roots[-1], merkle_root(leaves))
    finally:
        for c in clients:
            await c.aclose()


async def generate_many(
    workers: list[WorkerProc],
    spans: list[LayerSpan],
    domain: Domain,
    coordinator: Any,
    prompts: list[torch.Tensor],
    lengths: list[int],
) -> list[Generated]:
    """All prompts at once, each in its own sessions."""
    return list(
        await asyncio.gather(
            *(
                generate_in_chain(workers, spans, domain, coordinator, p, n)
                for p, n in zip(prompts, lengths, strict=True)
            )
        )
    )


async def batched_steps(url: str) -> tuple[int, float]:
    """(batched forwards, decode steps run in them) from a worker's /metrics."""
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    count = re.search(r"^shardnet_worker_batch_size_count (\S+)$", text, re.M)
    total = re.search(r"^shardnet_worker_batch_size_sum (\S+)$", text, re.M)
    assert count is not None and total is not None, "the worker exports no batch size metric"
    return int(float(count.group(1))), float(total.group(1))
