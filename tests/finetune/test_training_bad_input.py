"""A worker's training API refuses bad input with a 4xx that says what to do, and other sessions go on (item 5)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest
import torch

from shardnet.finetune.spans import RemoteSpan
from shardnet.peer.errors import WorkerAPIError
from shardnet.wire.tensor_dict import encode_tensors
from tests.finetune.harness import STRANGER, open_route, serve_workers, ticket
from tests.fixtures_model import TinyModel
from worker.training import TrainingLimits

H = 32  # the tiny llama's hidden size


async def _expect(status: int, words: str, call: object) -> None:
    with pytest.raises(WorkerAPIError) as info:
        await call  # type: ignore[misc]
    assert info.value.status == status, info.value
    assert words in info.value.message, info.value.message


def test_bad_training_input_is_refused_and_other_sessions_go_on(
    tiny_models: Callable[[str], TinyModel],
) -> None:
    tiny = tiny_models("llama")
    limits = TrainingLimits(max_kept_bytes=12_000, max_kept_steps=8)

    async def scenario() -> None:
        async with (
            serve_workers(tiny.parts_dir, tiny.config, [(2, 4)], limits) as (worker,),
            aiohttp.ClientSession() as http,
        ):
            span, other = await open_route(http, [worker, worker])
            x = torch.randn(2, 5, H)
            lora = {"lora.2.q_proj.A": torch.randn(4, H) * 0.1, "lora.2.q_proj.B": torch.randn(32, 4) * 0.1}
            out_other = await other.forward(0, x, lora)

            # a backward for a step that never ran forward
            await _expect(409, "never ran forward", span.backward(7, torch.randn(2, 5, H)))
            out = await span.forward(1, x, lora)
            # gradients of the wrong shape, and NaN / inf
            await _expect(422, "shape", span.backward(1, torch.randn(2, 4, H)))
            await _expect(422, "NaN or infinite", span.backward(1, torch.full((2, 5, H), float("nan"))))
            await _expect(422, "NaN or infinite", span.forward(2, torch.full((2, 5, H), float("inf")), {}))
            # hidden states and adapters that do not fit this block
            await _expect(422, "shape", span.forward(2, torch.randn(2, 5, H + 1), {}))
            await _expect(422, "outside this block", span.forward(2, x, {"prompt.0": torch.zeros(2, H)}))
            await _expect(422, "both A and B", span.forward(2, x, {"lora.2.q_proj.A": torch.zeros(4, H)}))
            await _expect(422, "unknown adapter", span.forward(2, x, {"weights": torch.zeros(1)}))
            # the step is still there after all that: its backward works, once
            grad_in, grads = await span.backward(1, torch.ones_like(out))
            assert grad_in.shape == x.shape and set(grads) == set(lora)
            await _expect(409, "already ran backward", span.backward(1, torch.ones_like(out)))

            # over the session's budget: one step too large is refused; many evict the oldest, which then says so
            await _expect(413, "budget", span.forward(3, torch.randn(8, 40, H), {}))
            await _expect(422, "only 5", span.forward(3, x, {"prompt.2": torch.zeros(6, H)}))
            for step in range(10, 13):  # 8*5*32*4 = 5120 bytes each: two fit in 12,000
                await span.forward(step, torch.randn(8, 5, H), {})
            await _expect(410, "evicted", span.backward(10, torch.ones(8, 5, H)))
            await span.backward(12, torch.ones(8, 5, H))
            await span.backward(11, torch.ones(8, 5, H))

            # a malformed body, and no token
            headers = {"X-Session-Token": span._token, "X-Step-Id": "20"}
            async with http.post(
                f"{worker.url}/v1/train/{span.session_id}/forward", data=b"junk", headers=headers
            ) as r:
                assert r.status == 400 and "safetensors" in (await r.json())["error"]
            body = encode_tensors({"hidden": x})
            async with http.post(f"{worker.url}/v1/train/{span.session_id}/forward", data=body,
                                 headers={"X-Step-Id": "20"}) as r:  # fmt: skip
                assert r.status == 401
            # a ticket of an unapproved signer opens nothing
            await _expect(
                401,
                "not an approved coordinator",
                RemoteSpan.open(http, worker.url, ticket(worker, STRANGER)),
            )

            # the other session was unaffected: its step's backward still works and matches a fresh forward
            g, _ = await other.backward(0, torch.ones_like(out_other))
            assert torch.isfinite(g).all()
            assert torch.equal(await other.forward(1, x, lora), out_other)
            await span.close()
            await other.close()

    asyncio.run(scenario())


def test_a_training_session_bills_no_more_than_its_ticket_allows(
    tiny_models: Callable[[str], TinyModel],
) -> None:
    """The coordinator's ticket bounds the positions (forward + factor x backward) a worker may bill for a job:
    a pass beyond it is refused (413) before any compute, and the close answer never bills above the bound."""
    tiny = tiny_models("llama")

    async def scenario() -> None:
        async with (
            serve_workers(tiny.parts_dir, tiny.config, [(2, 4)]) as (worker,),
            aiohttp.ClientSession() as http,
        ):
            factor = worker.training.limits.backward_factor
            # room for one forward of 10 positions and its backward, not for a second forward
            (span,) = await open_route(http, [worker], max_positions=10 + factor * 10 + 5)
            x = torch.randn(2, 5, H)
            out = await span.forward(1, x, {})
            await span.backward(1, torch.ones_like(out))
            await _expect(413, "max_positions", span.forward(2, x, {}))
            closed = await span.close()
            assert closed["positions"] == 10 + factor * 10

    asyncio.run(scenario())
