"""Push mode on two real worker servers (tiny Llama, layers 0:2 and 2:4, in process) and a stand-in coordinator
answer endpoint: a direct answer reaches the coordinator with every hop's hash while the first worker only
acknowledges; the compact top-k answer carries the hash of the full logits frame and the fingerprint bound in the
leaf; `X-Forward: 0` answers at the first worker; `POST .../next` re-links (and refuses strangers and junk);
and the open refuses push fields on a worker that is not the last."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import torch
from aiohttp import web
from eth_account import Account

from shardnet.chain.devnet import DEV_KEYS, free_port
from shardnet.model import load_block
from shardnet.peer.client import WorkerClient, step_answer
from shardnet.peer.errors import BadRequest
from shardnet.span import LayerSpan
from shardnet.store.manifest import Manifest
from shardnet.verify.fingerprint import make_fingerprint
from shardnet.wire.commitment import step_hash
from shardnet.wire.eip712 import Domain
from shardnet.wire.frames import decode_frame, encode_frame
from shardnet.wire.tickets import sign_ticket
from worker.memory import top_k_frame
from worker.server import BlockInfo, WorkerServer

COORDINATOR = Account.from_key(DEV_KEYS[1])
WORKERS = {LayerSpan(0, 2): Account.from_key(DEV_KEYS[3]), LayerSpan(2, 4): Account.from_key(DEV_KEYS[4])}
DOMAIN = Domain(31337, "0x" + "ab" * 20)


def _server(block: Any, span: LayerSpan) -> WorkerServer:
    info = BlockInfo(span, 4, span.start == 0, span.end == 4, block.hidden_size, block.vocab_size, 1)
    return WorkerServer(
        address=WORKERS[span].address,
        model_name="tiny",
        model_id=1,
        block=block,
        info=info,
        is_coordinator=lambda a: a == COORDINATOR.address,
        chain_id=DOMAIN.chain_id,
        registry_address=DOMAIN.registry,
    )


def _ticket(span: LayerSpan) -> dict[str, Any]:
    return sign_ticket(
        COORDINATOR,
        worker=WORKERS[span].address,
        session_id=uuid.uuid4().hex,
        job_id=0,
        span=span,
        max_positions=600,
        expires_at=int(time.time()) + 600,
        chain_id=DOMAIN.chain_id,
        registry=DOMAIN.registry,
    )


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


def test_direct_compact_answers_replays_and_relinking(tiny_llama_store: tuple[Path, str, Manifest]) -> None:
    store, _cid, manifest = tiny_llama_store
    first_span, last_span = LayerSpan(0, 2), LayerSpan(2, 4)
    blocks = {s: load_block(store, manifest.to_json(), s) for s in (first_span, last_span)}
    servers = {s: _server(b, s) for s, b in blocks.items()}
    received: list[tuple[dict[str, str], bytes]] = []

    async def take_answer(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.json_response({"ok": True})

    async def scenario() -> dict[str, Any]:
        runners, urls = {}, {}
        for span, server in servers.items():
            runners[span], urls[span] = await _serve(server.app())
        coord_app = web.Application()
        coord_app.add_routes([web.post("/v1/push/answers", take_answer)])
        coord_runner, coord_url = await _serve(coord_app)
        out: dict[str, Any] = {}
        try:
            async with WorkerClient(urls[first_span]) as first, WorkerClient(urls[last_span]) as last:
                with pytest.raises(BadRequest, match="answer"):  # push fields belong to the last worker
                    await first.open_session(_ticket(first_span), answer="top_k")
                with pytest.raises(BadRequest, match="answer_to"):
                    await first.open_session(_ticket(first_span), answer_to=coord_url + "/v1/push/answers")
                last_id = (
                    await last.open_session(
                        _ticket(last_span), answer="top_k", answer_to=coord_url + "/v1/push/answers"
                    )
                )["session_id"]
                link = {"url": urls[last_span], "session_id": last_id, "token": last.session_token(last_id)}
                first_id = (await first.open_session(_ticket(first_span), next=link))["session_id"]
                prompt = torch.tensor([[3, 1, 4, 1, 5]])
                out["ack"] = await first.step_full(first_id, prompt, 0, answer_id="a" * 32)
                out["through"] = await first.step_full(
                    first_id, torch.tensor([[9]]), 5
                )  # no id: back the chain
                out["here"] = await first.step_full(first_id, torch.tensor([[2]]), 6, forward=False)
                async with aiohttp.ClientSession() as http:
                    relink = f"{urls[first_span]}/v1/sessions/{first_id}/next"
                    token = {"X-Session-Token": first.session_token(first_id)}
                    async with http.post(relink, data=b"[1, 2", headers=token) as resp:
                        out["junk"] = resp.status
                    async with http.post(relink, json={"next": None}) as resp:
                        out["stranger"] = resp.status
                await first.set_next(first_id, None)
                out["unlinked"] = await first.step_full(first_id, torch.tensor([[6]]), 7)
        finally:
            for runner in (*runners.values(), coord_runner):
                await runner.cleanup()
        return out

    out = asyncio.run(scenario())

    # what the two spans compute, run here in one process
    sessions = {s: b.new_session() for s, b in blocks.items()}
    with torch.inference_mode():
        hidden = sessions[first_span].step(torch.tensor([[3, 1, 4, 1, 5]]), 0)
        logits = sessions[last_span].step(decode_frame(encode_frame(hidden.float(), "fp32")), 0)
    full = encode_frame(logits.float(), "fp32")

    ack = out["ack"]
    assert ack.answered_directly and ack.tensor.numel() == 0
    assert len(received) == 1, "one direct answer for the one step that carried an answer id"
    headers, body = received[0]
    direct = step_answer(headers, body, "test")
    assert headers["X-Answer-Id"] == "a" * 32
    assert direct.hop_hashes == [step_hash(encode_frame(hidden.float(), "fp32")), step_hash(full)]
    assert direct.step_hash == step_hash(full)  # over the full logits, though only the top-k travelled
    assert body == top_k_frame(logits) and direct.top_k == 16
    assert direct.fingerprint == make_fingerprint(decode_frame(full))
    assert len(body) < len(full) / 4  # 2 x 16 of a vocabulary of 256 here (SmolLM2: 156 of 196,636 bytes)
    assert out["through"].top_k == 16 and len(out["through"].hop_hashes) == 2  # no answer id: the usual way
    assert out["here"].tensor.shape[-1] == blocks[first_span].hidden_size  # X-Forward: 0
    assert out["here"].hop_hashes == [out["here"].step_hash]
    assert (out["junk"], out["stranger"]) == (400, 401)
    assert out["unlinked"].tensor.shape[-1] == blocks[first_span].hidden_size  # re-linked to nobody
