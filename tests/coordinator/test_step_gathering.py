"""Gathering in the coordinator's step coalescer, against two real worker processes (a two-hop route): two
groups of jobs started one hop apart merge into one batch per worker, and every job's tokens stay those of the
same route stepped alone."""

from __future__ import annotations

import asyncio

import torch

from coordinator.step_coalescer import StepCoalescer
from shardnet.peer.client import WorkerClient
from shardnet.span import LayerSpan
from tests.worker.harness import run, stop_workers, ticket
from tests.worker.test_worker_batching import _prompts, _serve

SPANS = [LayerSpan(0, 2), LayerSpan(2, 4)]  # the tiny Llama over two workers
NEW_TOKENS = 6
GROUP = 4


async def _generate(  # type: ignore[no-untyped-def]
    coalescer, clients, urls, sids, prompt, n, *, started: asyncio.Event | None = None
) -> list[int]:
    """Greedy tokens of one job over the two hops, each step naming the job's flow and the hop it goes to next;
    `started` is set once its prefill passed the first hop."""
    flow = object()
    x, pos, tokens = prompt, 0, []
    for _ in range(n):
        hidden = await coalescer.step(
            urls[0], clients[0], sids[0], x, pos, None, flow=flow, next_endpoint=urls[1]
        )
        if started is not None:
            started.set()
        res = await coalescer.step(
            urls[1], clients[1], sids[1], hidden.tensor, pos, None, flow=flow, next_endpoint=urls[0]
        )
        pos += int(x.shape[1])
        tokens.append(int(res.tensor[0, -1].argmax()))
        x = torch.tensor([[tokens[-1]]])
    coalescer.release(flow)
    return tokens


async def _scenario(urls, addresses, domain, account, prompts):  # type: ignore[no-untyped-def]
    clients = [WorkerClient(u) for u in urls]

    async def open_all(count: int) -> list[list[str]]:
        return [
            [
                str((await c.open_session(ticket(domain, account, a, s), "fp32"))["session_id"])
                for c, a, s in zip(clients, addresses, SPANS, strict=True)
            ]
            for _ in range(count)
        ]

    try:
        alone = []
        lone = StepCoalescer(timeout_s=30.0, gather_s=5.0)
        for prompt, sids in zip(prompts, await open_all(len(prompts)), strict=True):
            alone.append(await _generate(lone, clients, urls, sids, prompt, NEW_TOKENS))
            for c, s in zip(clients, sids, strict=True):
                await c.close(s)
        await lone.aclose()
        assert lone.stats.largest == 1 and lone.stats.gathered == 0  # one job alone never waits

        # a long gathering bound: the groups merge by the rule, not by the timing of a loaded machine
        coalescer = StepCoalescer(timeout_s=30.0, max_steps=16, gather_s=5.0)
        sids = await open_all(len(prompts))
        first_passed = asyncio.Event()

        async def second_group() -> list[list[int]]:
            await first_passed.wait()  # the second group starts one hop behind the first
            return list(
                await asyncio.gather(
                    *(
                        _generate(coalescer, clients, urls, s, p, NEW_TOKENS)
                        for s, p in zip(sids[GROUP:], prompts[GROUP:], strict=True)
                    )
                )
            )

        first, second = await asyncio.gather(
            asyncio.gather(
                *(
                    _generate(coalescer, clients, urls, s, p, NEW_TOKENS, started=first_passed)
                    for s, p in zip(sids[:GROUP], prompts[:GROUP], strict=True)
                )
            ),
            second_group(),
        )
        for job in sids:
            for c, s in zip(clients, job, strict=True):
                await c.close(s)
        stats = coalescer.stats
        await coalescer.aclose()
        return alone, list(first) + second, stats
    finally:
        for c in clients:
            await c.aclose()


def test_groups_one_hop_apart_merge_into_one_batch_with_the_tokens_of_each_job_alone(
    tmp_path_factory, anvil, accounts, module_deployment, tiny_llama_store
) -> None:
    owner, _store, _manifest, workers = _serve(
        tmp_path_factory, anvil, accounts, module_deployment, tiny_llama_store, SPANS
    )
    try:
        for w in workers:
            w.wait_ready()
        prompts = _prompts(256, [3, 5, 2, 6, 4, 1, 3, 2])
        alone, together, stats = run(
            _scenario(
                [w.url for w in workers],
                [w.address for w in workers],
                owner.domain(),
                accounts[1],
                prompts,
            )
        )
    finally:
        stop_workers(workers)
    assert together == alone  # every job's tokens, one by one, as stepped alone
    assert stats.gathered > 0, stats  # a worker held its queue for the group one hop behind
    assert stats.largest == 2 * GROUP, stats  # the two groups merged: all 8 jobs' steps in one request
