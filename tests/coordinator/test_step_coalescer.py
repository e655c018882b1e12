"""The coordinator's step coalescer against a real worker process: concurrent sessions' steps leave in shared
`POST /v1/steps` requests, each caller gets its own result or its own error, and the positions in flight to
a worker stay bounded (the rest queue in the coordinator, where no step timeout runs)."""

from __future__ import annotations

import asyncio

import torch

from coordinator.step_coalescer import StepCoalescer
from shardnet.peer.client import WorkerClient
from shardnet.peer.errors import WorkerAPIError
from shardnet.span import LayerSpan
from tests.worker.harness import run, ticket
from tests.worker.test_worker_batching import _prompts, _serve

SPAN = LayerSpan(0, 4)  # the whole tiny Llama
NEW_TOKENS = 4


async def _generate(coalescer, client, url, sid, prompt, n, *, bad_at: int | None = None):  # type: ignore[no-untyped-def]
    """Greedy tokens of one session through the coalescer; at step `bad_at` it sends a wrong position."""
    x, pos, tokens = prompt, 0, []
    for step in range(n):
        res = await coalescer.step(url, client, sid, x, pos + (5 if step == bad_at else 0), None)
        pos += int(x.shape[1])
        tokens.append(int(res.tensor[0, -1].argmax()))
        x = torch.tensor([[tokens[-1]]])
    return tokens


async def _scenario(url: str, domain, account, address: str, prompts: list[torch.Tensor]):  # type: ignore[no-untyped-def]
    client = WorkerClient(url)
    coalescer = StepCoalescer(timeout_s=30.0, max_steps=16, max_positions_in_flight=8)
    try:
        sids = [
            str((await client.open_session(ticket(domain, account, address, SPAN), "fp32"))["session_id"])
            for _ in prompts
        ]
        results = await asyncio.gather(
            *(
                _generate(coalescer, client, url, sid, p, NEW_TOKENS, bad_at=2 if i == 1 else None)
                for i, (sid, p) in enumerate(zip(sids, prompts, strict=True))
            ),
            return_exceptions=True,
        )
        stats = coalescer.stats
        for sid in sids:  # a worker holds at most 16 sessions of one coordinator
            await client.close(sid)
        alone = []
        lone = StepCoalescer(timeout_s=30.0)
        for p in prompts:
            sid = str(
                (await client.open_session(ticket(domain, account, address, SPAN), "fp32"))["session_id"]
            )
            alone.append(await _generate(lone, client, url, sid, p, NEW_TOKENS))
            await client.close(sid)
        assert lone.stats.largest == 1  # one session alone: the single-step endpoint, one request per step
        await lone.aclose()
        singles = StepCoalescer(timeout_s=30.0, max_steps=1)  # --coalesce-max-steps 1: a request per step
        sids = [
            str((await client.open_session(ticket(domain, account, address, SPAN), "fp32"))["session_id"])
            for _ in prompts[:3]
        ]
        one_by_one = await asyncio.gather(
            *(_generate(singles, client, url, s, p, NEW_TOKENS) for s, p in zip(sids, prompts, strict=False))
        )
        assert list(one_by_one) == alone[:3] and singles.stats.largest == 1
        await singles.aclose()
        return results, alone, stats
    finally:
        await coalescer.aclose()
        await client.aclose()


def test_coalesced_steps_share_requests_each_gets_its_own_answer_and_positions_in_flight_stay_bounded(
    tmp_path_factory, anvil, accounts, module_deployment, tiny_llama_store
) -> None:
    owner, _store, _manifest, workers = _serve(
        tmp_path_factory, anvil, accounts, module_deployment, tiny_llama_store, [SPAN]
    )
    worker = workers[0]
    try:
        worker.wait_ready()
        prompts = _prompts(256, [3, 5, 2, 6, 4, 1, 3, 2])  # 26 prompt positions: more than 8 in flight
        results, alone, stats = run(
            _scenario(worker.url, owner.domain(), accounts[1], worker.address, prompts)
        )
    finally:
        worker.stop()
    bad = results[1]
    assert isinstance(bad, WorkerAPIError) and bad.status == 409 and "position" in bad.message, bad
    for i, got in enumerate(results):
        if i != 1:
            assert got == alone[i], i  # every other session finished, as alone
    assert stats.largest >= 4, stats  # decode steps of many sessions left together
    assert stats.requests < stats.steps, stats
    # the prefills (26 positions) could not all be in flight at once with a budget of 8
    assert stats.requests >= 4, stats
