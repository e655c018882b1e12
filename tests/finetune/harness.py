"""Real worker HTTP servers (aiohttp, in this process, on free ports) serving training sessions of a split model."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from eth_account import Account

from shardnet.chain.devnet import DEV_KEYS, free_port
from shardnet.finetune.spans import RemoteSpan
from shardnet.model import load_block_from_parts
from shardnet.span import LayerSpan
from shardnet.wire.eip712 import Domain
from shardnet.wire.tickets import sign_ticket
from tests.fixtures_chain import ticket_expiry
from worker.adapter_sessions import AdapterEndpoint
from worker.job_commitment import CommitmentSigner
from worker.server import BlockInfo, WorkerServer
from worker.state import WorkerState
from worker.training import TrainingAPI, TrainingLimits

COORDINATOR = Account.from_key(DEV_KEYS[1])
STRANGER = Account.from_key(DEV_KEYS[5])  # not an approved coordinator
WORKER_KEYS = DEV_KEYS[2:5]
DOMAIN = Domain(31337, "0x" + "ab" * 20)


@dataclass
class ServedWorker:
    url: str
    address: str
    span: LayerSpan
    server: WorkerServer
    training: TrainingAPI


def ticket(
    worker: ServedWorker,
    signer: Any = COORDINATOR,
    job_id: int = 0,
    domain: Domain = DOMAIN,
    max_positions: int = 1_000_000,
) -> dict[str, Any]:
    return sign_ticket(
        signer,
        worker=worker.address,
        session_id=uuid.uuid4().hex,
        job_id=job_id,
        max_positions=max_positions,
        span=worker.span,
        expires_at=ticket_expiry(600),
        chain_id=domain.chain_id,
        registry=domain.registry,
    )


@asynccontextmanager
async def serve_workers(
    parts_dir: Path,
    config: dict[str, Any],
    spans: Sequence[tuple[int, int]],
    limits: TrainingLimits | None = None,
    *,
    keys: Sequence[str] = WORKER_KEYS,
    domain: Domain = DOMAIN,
    is_coordinator: Callable[[str], bool] | None = None,
    job_coordinator: Callable[[int], str | None] | None = None,
    signer_for: Callable[[Any], CommitmentSigner] | None = None,
    states: Sequence[WorkerState] | None = None,
) -> AsyncIterator[list[ServedWorker]]:
    """One worker server per span, each with its block and a training API. By default only COORDINATOR is
    approved, tickets are for the made-up DOMAIN and workers sign no job commitments; a test on a real
    registry passes its domain, its coordinator checks and `signer_for(worker account)`; `states` (one per span)
    give the workers their databases."""
    runners: list[web.AppRunner] = []
    served: list[ServedWorker] = []
    approved = is_coordinator or (lambda signer: signer.lower() == COORDINATOR.address.lower())
    try:
        for i, (key, (a, b)) in enumerate(zip(keys, spans, strict=False)):
            span = LayerSpan(a, b)
            block = load_block_from_parts(parts_dir, config, span)
            info = BlockInfo(span, block.num_layers, block.is_first, block.is_last, block.hidden_size,
                             block.vocab_size, kv_bytes_per_token=1)  # fmt: skip
            address = Account.from_key(key).address
            training = TrainingAPI(limits)
            adapters = AdapterEndpoint()  # inference sessions' LoRA adapters, as `worker run` mounts it
            server = WorkerServer(
                address=address,
                model_name="tiny",
                model_id=1,
                block=block,
                info=info,
                is_coordinator=approved,
                job_coordinator=job_coordinator,
                extra_routes=[*training.routes(), *adapters.routes()],
                chain_id=domain.chain_id,
                registry_address=domain.registry,
                signer=signer_for(Account.from_key(key)) if signer_for is not None else None,
                state=states[i] if states is not None else None,
            )
            training.bind(server)
            adapters.bind(server)
            runner = web.AppRunner(server.app())
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            runners.append(runner)
            served.append(ServedWorker(f"http://127.0.0.1:{port}", address, span, server, training))
        yield served
    finally:
        for runner in runners:
            await runner.cleanup()


async def open_route(
    http: aiohttp.ClientSession,
    workers: Sequence[ServedWorker],
    signer: Any = COORDINATOR,
    job_id: int = 0,
    domain: Domain = DOMAIN,
    max_positions: int = 1_000_000,
) -> list[RemoteSpan]:
    return [
        await RemoteSpan.open(http, w.url, ticket(w, signer, job_id, domain, max_positions)) for w in workers
    ]
