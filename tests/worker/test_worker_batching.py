"""Batched decoding in real worker processes: 8 concurrent sessions (ragged prompts and lengths) each
produce, token by token, what the same prompt produces alone; commitments stay per session. (The same on the
real SmolLM2 over 3 workers is in test_worker_smollm2.py, on the workers that module starts.)"""

from __future__ import annotations

import torch

from shardnet.chain.registry import Registry
from shardnet.model.reference import greedy_generate, load_reference
from shardnet.span import LayerSpan
from tests.worker.concurrent_sessions import batched_steps, generate_in_chain, generate_many
from tests.worker.harness import run, start_worker, stop_workers

PROMPT_LENGTHS = [1, 3, 9, 4, 12, 2, 7, 5]
NEW_TOKENS = [6, 9, 4, 8, 5, 10, 3, 7]


def _prompts(vocab: int, lengths: list[int]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(23)
    return [torch.randint(3, vocab, (1, n), generator=gen) for n in lengths]


def _serve(tmp_path_factory, anvil, accounts, module_deployment, store_fixture, spans, *extra: str):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("batching")
    dep_file = module_deployment.save(tmp / "deployment.json")
    owner = Registry(
        anvil.w3, module_deployment.registry, accounts[0], deploy_block=module_deployment.deploy_block
    )
    store, cid, manifest = store_fixture
    owner.register_model(manifest.name, cid, manifest.num_layers, 10**6)
    owner.set_coordinator(accounts[1].address, "http://127.0.0.1:9", True)
    workers = [
        start_worker(
            tmp, accounts[2 + i], dep_file, manifest.name, store, "--layers", str(span), *extra, name=f"w{i}"
        )
        for i, span in enumerate(spans)
    ]
    return owner, store, manifest, workers


def _check_against_alone(results, reference, prompts, lengths, atol: float) -> float:  # type: ignore[no-untyped-def]
    worst = 0.0
    for got, prompt, n in zip(results, prompts, lengths, strict=True):
        alone = greedy_generate(reference, prompt, n)
        assert got.tokens == alone.tokens  # token by token
        worst = max(worst, float((got.logits - alone.logits).abs().max()))
        assert torch.allclose(got.logits, alone.logits, atol=atol)
        assert got.last_commitment == got.last_expected  # each session's own leaves, in its own order
    return worst


def test_eight_concurrent_sessions_batch_and_each_equals_its_prompt_alone(
    tmp_path_factory, anvil, accounts, module_deployment, tiny_llama_store
) -> None:
    spans = [LayerSpan(0, 2), LayerSpan(2, 4)]
    owner, store, manifest, workers = _serve(
        tmp_path_factory,
        anvil,
        accounts,
        module_deployment,
        tiny_llama_store,
        spans,
        "--batch-window-ms",
        "10",
    )
    try:
        for w in workers:
            w.wait_ready()
        domain = owner.domain()
        prompts = _prompts(256, PROMPT_LENGTHS)
        results = run(generate_many(workers, spans, domain, accounts[1], prompts, NEW_TOKENS))
        batches = [run(batched_steps(w.url)) for w in workers]
        # a lone session after the others: the unbatched path, its result unchanged
        lone = run(generate_in_chain(workers, spans, domain, accounts[1], prompts[2], NEW_TOKENS[2]))
        assert [run(batched_steps(w.url)) for w in workers] == batches
    finally:
        stop_workers(workers)
    torch.set_num_threads(1)
    reference = load_reference(store, manifest.to_json())
    worst = _check_against_alone(results, reference, prompts, NEW_TOKENS, atol=1e-4)
    assert lone.tokens == results[2].tokens
    assert all(count >= 1 and steps >= 2 * count for count, steps in batches), batches
    print(f"batches per worker (count, steps): {batches}; largest logit difference {worst:.3g}")
