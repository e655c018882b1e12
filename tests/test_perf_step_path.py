"""The worker's step path after its speed-ups: one executor hop that computes, encodes, hashes and records.

What must not change: the hash a worker returns is keccak of exactly the bytes it sent, and it is in the
database (read through another connection, as a restarted worker would) by the time the output arrives.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import torch
from aiohttp import web
from eth_account import Account
from sqlalchemy import select

from shardnet.chain.commitments import SignedCommitment, sign_commitment, verify_commitment
from shardnet.chain.devnet import DEV_KEYS, free_port
from shardnet.db import make_engine
from shardnet.model import load_block
from shardnet.peer.client import WorkerClient
from shardnet.span import LayerSpan
from shardnet.store.manifest import Manifest
from shardnet.wire.commitment import merkle_root, step_hash
from shardnet.wire.eip712 import Domain
from shardnet.wire.frames import encode_frame
from shardnet.wire.tickets import sign_ticket
from worker.server import BlockInfo, WorkerServer
from worker.state import WorkerState, WorkerStepRow
from worker.verification import commit_step

COORDINATOR = Account.from_key(DEV_KEYS[1])
WORKER = Account.from_key(DEV_KEYS[3])
LAST = LayerSpan(2, 4)
DOMAIN = Domain(31337, "0x" + "ab" * 20)  # tickets and commitments are signed for this (made-up) registry


def _durable_hashes(db_file: Path, session_id: str) -> list[bytes]:
    engine = make_engine(f"sqlite:///{db_file}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(WorkerStepRow.step_hash)
                .where(WorkerStepRow.session_id == session_id)
                .order_by(WorkerStepRow.step_index)
            ).all()
        return [bytes.fromhex(r[0][2:]) for r in rows]
    finally:
        engine.dispose()


def _sign(job_id: int, span: LayerSpan, positions: int, steps: int, root: bytes) -> SignedCommitment:
    return sign_commitment(
        WORKER, DOMAIN, job_id=job_id, span=span, positions=positions, steps=steps, root=root
    )


def test_each_step_hash_is_durable_when_its_output_arrives_and_hashes_the_bytes_sent(
    tmp_path: Path, tiny_llama_store: tuple[Path, str, Manifest]
) -> None:
    store, _cid, manifest = tiny_llama_store
    block = load_block(store, manifest.to_json(), LAST)
    info = BlockInfo(
        span=LAST,
        num_layers=4,
        is_first=False,
        is_last=True,
        hidden_size=block.hidden_size,
        vocab_size=block.vocab_size,
        kv_bytes_per_token=1,
    )
    db_file = tmp_path / "worker.db"
    state = WorkerState(make_engine(f"sqlite:///{db_file}"), WORKER.address)
    server = WorkerServer(
        address=WORKER.address,
        model_name="tiny-llama",
        model_id=1,
        block=block,
        info=info,
        is_coordinator=lambda _address: True,
        state=state,
        chain_id=DOMAIN.chain_id,
        registry_address=DOMAIN.registry,
        signer=_sign,
    )

    async def scenario() -> None:
        runner = web.AppRunner(server.app())
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with WorkerClient(f"http://127.0.0.1:{port}") as client:
                sid = uuid.uuid4().hex
                ticket = sign_ticket(
                    COORDINATOR,
                    worker=WORKER.address,
                    session_id=sid,
                    job_id=1,
                    span=LAST,
                    max_positions=4096,
                    expires_at=int(time.time()) + 600,
                    chain_id=DOMAIN.chain_id,
                    registry=DOMAIN.registry,
                )
                await client.open_session(ticket, "fp32")
                torch.manual_seed(0)
                x, pos, received = torch.randn(1, 3, block.hidden_size), 0, []
                for _ in range(4):
                    logits, digest = await client.step(sid, x, pos)
                    # the hash is of exactly the frame sent (fp32 logits re-encode to the same bytes)
                    assert digest == step_hash(encode_frame(logits, "fp32"))
                    # the leaf binds the frame received, the frame sent and the fingerprint of what was sent
                    sent_in = step_hash(encode_frame(x, "fp32"))
                    received.append(commit_step(sent_in, encode_frame(logits, "fp32"))[1])
                    # and durable before the caller could act on the output
                    assert await asyncio.to_thread(_durable_hashes, db_file, sid) == received
                    pos += int(x.shape[1])
                    x = torch.randn(1, 1, block.hidden_size)
                closed = await client.close_session(sid)
                assert closed.root == merkle_root(received)
                # the close answer carries the job's signed commitment, stored before it was sent
                signed = closed.job_commitment
                assert signed is not None and verify_commitment(signed, DOMAIN, job_id=1)
                assert (signed.node, signed.span, signed.root, signed.steps, signed.positions) == (
                    WORKER.address,
                    LAST,
                    merkle_root(received),
                    4,
                    3 + 3,
                )
                stored = WorkerState(make_engine(f"sqlite:///{db_file}"), WORKER.address).job(1)
                assert stored is not None and stored.signed(WORKER.address) == signed
        finally:
            await runner.cleanup()

    asyncio.run(scenario())
