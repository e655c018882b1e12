"""The real SmolLM2-135M split over three worker processes: 16 greedy tokens equal the unsplit model's."""

from __future__ import annotations

import pytest
import torch

from shardnet.chain.registry import Registry
from shardnet.model.reference import greedy_generate, load_reference
from shardnet.peer.client import WorkerClient
from shardnet.span import LayerSpan
from tests.worker.harness import run, start_worker, ticket

SPANS = [LayerSpan(0, 10), LayerSpan(10, 20), LayerSpan(20, 30)]
PROMPT = torch.tensor([[1, 9690, 198, 2683, 314, 253, 5356, 30, 2, 198]], dtype=torch.int64)
NEW_TOKENS = 16


@pytest.mark.slow
def test_smollm2_over_three_workers_in_push_mode_matches_the_unsplit_model(
    tmp_path_factory, anvil, accounts, module_deployment, smollm2_store
) -> None:
    tmp = tmp_path_factory.mktemp("smollm2")
    dep_file = module_deployment.save(tmp / "deployment.json")
    owner = Registry(
        anvil.w3, module_deployment.registry, accounts[0], deploy_block=module_deployment.deploy_block
    )
    store, cid, manifest = smollm2_store
    owner.register_model(manifest.name, cid, manifest.num_layers, 10**6)
    owner.set_coordinator(accounts[1].address, "http://127.0.0.1:9", True)
    domain = owner.domain()
    workers = [
        start_worker(
            tmp, accounts[2 + i], dep_file, manifest.name, store, "--layers", str(span), name=f"w{i}"
        )
        for i, span in enumerate(SPANS)
    ]
    try:
        for w in workers:
            w.wait_ready(timeout=240)

        async def generate() -> tuple[list[int], torch.Tensor]:
            clients = [WorkerClient(w.url) for w in workers]
            try:
                sessions: list[str] = []
                nxt = None
                for w, c, span in reversed(list(zip(workers, clients, SPANS, strict=True))):
                    opened = await c.open_session(
                        ticket(domain, accounts[1], w.address, span), "fp32", next=nxt
                    )
                    sessions.insert(0, opened["session_id"])
                    nxt = {"url": w.url, "session_id": opened["session_id"], "token": opened["session_token"]}
                tokens, logits, x, pos = [], [], PROMPT, 0
                for _ in range(NEW_TOKENS):
                    res = await clients[0].step_full(
                        sessions[0], x, pos
                    )  # one request: w0 pushes to w1, w1 to w2
                    assert len(res.hop_hashes) == 3
                    pos += x.shape[1]
                    logits.append(res.tensor[0, -1])
                    tokens.append(int(res.tensor[0, -1].argmax()))
                    x = torch.tensor([[tokens[-1]]])
                for c, sid in zip(clients, sessions, strict=True):
                    await c.close(sid)
                return tokens, torch.stack(logits)
            finally:
                for c in clients:
                    await c.aclose()

        tokens, logits = run(generate())
    finally:
        for w in workers:
            w.stop()
    torch.set_num_threads(1)
    ref = greedy_generate(load_reference(store, manifest.to_json()), PROMPT, NEW_TOKENS)
    assert tokens == ref.tokens
    assert torch.allclose(logits, ref.logits, atol=1e-3, rtol=1e-4)
