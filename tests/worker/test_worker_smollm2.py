"""The real SmolLM2-135M split over three worker processes (layers 0:10, 10:20, 20:30), started once for the module:
16 greedy tokens in push mode equal the unsplit model's, and 8 concurrent sessions batch on the workers and each
equals its prompt alone."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from shardnet.model.reference import greedy_generate, load_reference
from shardnet.peer.client import WorkerClient
from shardnet.span import LayerSpan
from shardnet.store.manifest import Manifest
from shardnet.wire.eip712 import Domain
from tests.worker.concurrent_sessions import batched_steps, generate_many
from tests.worker.harness import WorkerProc, run, stop_workers, ticket
from tests.worker.test_worker_batching import NEW_TOKENS as BATCH_NEW_TOKENS
from tests.worker.test_worker_batching import PROMPT_LENGTHS, _check_against_alone, _prompts, _serve

SPANS = [LayerSpan(0, 10), LayerSpan(10, 20), LayerSpan(20, 30)]
PROMPT = torch.tensor([[1, 9690, 198, 2683, 314, 253, 5356, 30, 2, 198]], dtype=torch.int64)
NEW_TOKENS = 16


@dataclass
class SmolNet:
    domain: Domain
    coordinator: Any  # the account the tests sign tickets with (approved on chain, listening nowhere)
    store: Path
    manifest: Manifest
    workers: list[WorkerProc]
    started_s: float  # seconds from the start of the workers until all three served


@pytest.fixture(scope="module")
def smol(tmp_path_factory, anvil, accounts, module_deployment, smollm2_store) -> Iterator[SmolNet]:
    """Three SmolLM2 workers (no extra flags) shared by the module's tests: each test opens and closes its own
    sessions on them."""
    t0 = time.monotonic()
    owner, store, manifest, workers = _serve(
        tmp_path_factory, anvil, accounts, module_deployment, smollm2_store, SPANS
    )
    try:
        for w in workers:
            w.wait_ready(timeout=240)
        yield SmolNet(owner.domain(), accounts[1], store, manifest, workers, time.monotonic() - t0)
    finally:
        stop_workers(workers)


@pytest.fixture(scope="module")
def smol_reference(smol: SmolNet) -> Any:
    """The unsplit SmolLM2 from the same store (one thread: the workers share the machine)."""
    torch.set_num_threads(1)
    return load_reference(smol.store, smol.manifest.to_json())


@pytest.mark.slow
def test_smollm2_over_three_workers_in_push_mode_matches_the_unsplit_model(
    smol: SmolNet, smol_reference: Any
) -> None:
    workers = smol.workers

    async def generate() -> tuple[list[int], torch.Tensor]:
        clients = [WorkerClient(w.url) for w in workers]
        try:
            sessions: list[str] = []
            nxt = None
            for w, c, span in reversed(list(zip(workers, clients, SPANS, strict=True))):
                opened = await c.open_session(
                    ticket(smol.domain, smol.coordinator, w.address, span), "fp32", next=nxt
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
    ref = greedy_generate(smol_reference, PROMPT, NEW_TOKENS)
    assert tokens == ref.tokens
    assert torch.allclose(logits, ref.logits, atol=1e-3, rtol=1e-4)


@pytest.mark.slow
def test_smollm2_eight_concurrent_sessions_over_three_workers_equal_each_alone(
    smol: SmolNet, smol_reference: Any
) -> None:
    t0 = time.monotonic()
    before = [run(batched_steps(w.url)) for w in smol.workers]  # the module's other test may have run first
    prompts = _prompts(49152, [3 + 2 * n for n in PROMPT_LENGTHS])
    results = run(
        generate_many(smol.workers, SPANS, smol.domain, smol.coordinator, prompts, BATCH_NEW_TOKENS)
    )
    after = [run(batched_steps(w.url)) for w in smol.workers]
    served = time.monotonic() - t0
    batches = [(a[0] - b[0], a[1] - b[1]) for a, b in zip(after, before, strict=True)]
    worst = _check_against_alone(results, smol_reference, prompts, BATCH_NEW_TOKENS, atol=1e-3)
    assert all(count >= 1 for count, _ in batches), batches
    print(
        f"SmolLM2: batches per worker (count, steps) {batches}; largest logit difference {worst:.3g}; "
        f"{served:.0f} s serving (+{smol.started_s:.0f} s starting the workers)"
    )
