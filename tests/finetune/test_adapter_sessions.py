"""A worker's inference sessions with a LoRA adapter (`POST /v1/sessions/{id}/adapter`, worker.adapter_sessions):
bad adapters are 4xx before any compute, the adapter applies to its own session only (another session's steps
in between stay plain), and it is loaded once, before the first step."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import torch
from safetensors.torch import save as save_safetensors

from shardnet.peer.client import WorkerClient
from shardnet.peer.errors import WorkerAPIError
from tests.finetune.harness import serve_workers, ticket
from tests.fixtures_model import TinyModel

H = 32  # the tiny llama's hidden size
KV = 16  # its key/value projections' width (grouped-query attention)


def _lora(layers: range, seed: int = 3) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for layer in layers:
        out[f"lora.{layer}.q_proj.A"] = torch.randn(4, H, generator=gen) * 0.3
        out[f"lora.{layer}.q_proj.B"] = torch.randn(H, 4, generator=gen) * 0.3
        out[f"lora.{layer}.v_proj.A"] = torch.randn(4, H, generator=gen) * 0.3
        out[f"lora.{layer}.v_proj.B"] = torch.randn(KV, 4, generator=gen) * 0.3
    return out


async def _expect(status: int, words: str, call: object) -> None:
    with pytest.raises(WorkerAPIError) as info:
        await call  # type: ignore[misc]
    assert info.value.status == status, info.value
    assert words in info.value.message, info.value.message


def test_adapter_per_session_and_bad_adapters(tiny_models: Callable[[str], TinyModel]) -> None:
    tiny = tiny_models("llama")

    async def scenario() -> None:
        async with serve_workers(tiny.parts_dir, tiny.config, [(2, 4)]) as (worker,):
            client = WorkerClient(worker.url)
            try:
                opened = [await client.open_session(ticket(worker)) for _ in range(3)]
                adapted, plain, fresh = (str(o["session_id"]) for o in opened)
                good = save_safetensors(_lora(range(2, 4)))

                stranger = WorkerClient(worker.url)  # no session token
                await _expect(401, "token", stranger.load_adapter(adapted, good))
                await stranger.aclose()
                await _expect(
                    422,
                    "outside this block",
                    client.load_adapter(adapted, save_safetensors(_lora(range(1, 3)))),
                )
                wrong = _lora(range(2, 4))
                wrong["lora.2.q_proj.A"] = torch.zeros(4, H + 1)
                await _expect(422, "shape", client.load_adapter(adapted, save_safetensors(wrong)))
                nan = _lora(range(2, 4))
                nan["lora.3.v_proj.B"][1, 1] = float("nan")
                await _expect(422, "NaN", client.load_adapter(adapted, save_safetensors(nan)))
                prompt = {"prompt.2": torch.zeros(2, H)}
                await _expect(422, "deep prompts", client.load_adapter(adapted, save_safetensors(prompt)))
                await _expect(400, "safetensors", client.load_adapter(adapted, b"\x01" * 40))

                assert await client.load_adapter(adapted, good)  # the worker states the part's keccak
                await _expect(409, "once", client.load_adapter(adapted, good))

                x0, x1 = torch.randn(1, 5, H), torch.randn(1, 1, H)
                a0, _ = await client.step(adapted, x0, 0)
                p0, _ = await client.step(plain, x0, 0)  # between two steps of the adapted session
                a1, _ = await client.step(adapted, x1, 5)
                p1, _ = await client.step(plain, x1, 5)
                f0, _ = await client.step(fresh, x0, 0)
                f1, _ = await client.step(fresh, x1, 5)
                assert torch.equal(p0, f0) and torch.equal(p1, f1)  # the plain session stayed plain
                assert (a0 - p0).abs().max() > 1e-3 and (a1 - p1).abs().max() > 1e-3
                await _expect(409, "before the session's first step", client.load_adapter(plain, good))
            finally:
                await client.aclose()

    asyncio.run(scenario())
