"""`POST /v1/steps` on a real worker process: many sessions' steps in one request, each answered on its own.

The steps of a request batch together on the worker and each equals its session run alone through the
single-step endpoint; one malformed or misplaced step fails its own session with its 4xx, the others finish."""

from __future__ import annotations

import json

import aiohttp
import torch

from shardnet.peer.client import StepResult, WorkerClient
from shardnet.peer.errors import WorkerAPIError
from shardnet.span import LayerSpan
from shardnet.wire.frames import encode_frame
from shardnet.wire.multi_step import StepItem
from tests.worker.concurrent_sessions import batched_steps
from tests.worker.harness import run, ticket
from tests.worker.test_worker_batching import _prompts, _serve

SPAN = LayerSpan(0, 4)  # the whole tiny Llama: the worker answers logits
N_SESSIONS, NEW_TOKENS = 6, 5


async def _open(client: WorkerClient, domain, account, address: str) -> str:  # type: ignore[no-untyped-def]
    return str((await client.open_session(ticket(domain, account, address, SPAN), "fp32"))["session_id"])


async def _alone(url: str, domain, account, address: str, prompt: torch.Tensor) -> list[int]:  # type: ignore[no-untyped-def]
    """Greedy tokens of `prompt`, one single-step request at a time."""
    async with WorkerClient(url) as client:
        sid = await _open(client, domain, account, address)
        x, pos, tokens = prompt, 0, []
        for _ in range(NEW_TOKENS):
            res = await client.step_full(sid, x, pos)
            pos += int(x.shape[1])
            tokens.append(int(res.tensor[0, -1].argmax()))
            x = torch.tensor([[tokens[-1]]])
        await client.close(sid)
        return tokens


async def _coalesced(url: str, domain, account, address: str, prompts: list[torch.Tensor]):  # type: ignore[no-untyped-def]
    """All prompts stepped together, one POST /v1/steps per position; at the second decode step, session 1
    is sent a malformed frame and session 3 a wrong start position. Returns (tokens per session, the
    answers of that step)."""
    async with WorkerClient(url) as client:
        sids = [await _open(client, domain, account, address) for _ in prompts]
        xs, pos = list(prompts), [0] * len(prompts)
        tokens: list[list[int]] = [[] for _ in prompts]
        alive = set(range(len(prompts)))
        broken: list[StepResult | WorkerAPIError] = []
        for step in range(NEW_TOKENS):
            order = sorted(alive)
            items = [
                StepItem(sids[i], client.session_token(sids[i]), pos[i], encode_frame(xs[i], "int64"))
                for i in order
            ]
            if step == 2:
                items[order.index(1)] = StepItem(sids[1], items[order.index(1)].token, pos[1], b"\x00garbage")
                items[order.index(3)] = StepItem(
                    sids[3], items[order.index(3)].token, pos[3] + 7, items[3].frame
                )
            answers = await client.steps(items)
            if step == 2:
                broken = answers
            for i, answer in zip(order, answers, strict=True):
                if isinstance(answer, WorkerAPIError):
                    alive.discard(i)
                    continue
                pos[i] += int(xs[i].shape[1])
                tokens[i].append(int(answer.tensor[0, -1].argmax()))
                xs[i] = torch.tensor([[tokens[i][-1]]])
        return tokens, broken


def test_a_multi_step_request_batches_and_one_bad_step_fails_its_session_alone(
    tmp_path_factory, anvil, accounts, module_deployment, tiny_llama_store
) -> None:
    owner, _store, _manifest, workers = _serve(
        tmp_path_factory,
        anvil,
        accounts,
        module_deployment,
        tiny_llama_store,
        [SPAN],
        "--batch-window-ms",
        "50",
    )
    worker = workers[0]
    try:
        worker.wait_ready()
        domain = owner.domain()
        prompts = _prompts(256, [3, 1, 6, 2, 5, 4])
        tokens, broken = run(_coalesced(worker.url, domain, accounts[1], worker.address, prompts))
        count, steps = run(batched_steps(worker.url))
        alone = [run(_alone(worker.url, domain, accounts[1], worker.address, p)) for p in prompts]

        async def hostile() -> list[int]:
            async with aiohttp.ClientSession() as http:
                statuses = []
                for body in (b"", b"SNMS", b"SNMS\x00\x01\x00\x00", b"SNMS\x00\x01\x01\x01" + b"\xff" * 40):
                    async with http.post(f"{worker.url}/v1/steps", data=body) as resp:
                        statuses.append(resp.status)
                        assert "error" in json.loads(await resp.read())
                return statuses

        statuses = run(hostile())
    finally:
        worker.stop()
    assert isinstance(broken[1], WorkerAPIError) and broken[1].status == 400, broken[1]
    assert isinstance(broken[3], WorkerAPIError) and broken[3].status == 409, broken[3]
    assert "position" in broken[3].message
    for i in (0, 2, 4, 5):  # the others finished, each equal to its prompt alone
        assert tokens[i] == alone[i], i
    for i in (1, 3):  # the failed ones made their first 2 tokens, as alone
        assert tokens[i] == alone[i][:2], i
    # batches formed: the prompts after the first (which found the worker idle and ran at once) in one prefill,
    # then every decode step
    assert count >= NEW_TOKENS and steps >= 5 + 4 * (NEW_TOKENS - 2), (count, steps)
    assert all(400 <= s < 500 for s in statuses), statuses
