"""Fine-tuning through 3 remote workers equals the same training in one process (issue 16 items 1 and 2)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
import torch

from shardnet.finetune.data import Example, batches
from shardnet.finetune.ends import ModelEnds
from shardnet.finetune.params import TrainableParams
from shardnet.finetune.spans import LocalSpan
from shardnet.finetune.trainer import Trainer
from shardnet.model import load_block_from_parts
from shardnet.span import LayerSpan
from tests.finetune.harness import open_route, serve_workers
from tests.fixtures_model import TinyModel

STEPS = 20
SPANS = ((0, 2), (2, 4), (4, 6))


def tiny_examples(seed: int = 0, count: int = 12) -> list[Example]:
    """A synthetic mapping: the completion is the prompt's tokens reversed, shifted by one."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        prompt = torch.randint(
            1, 90, (int(torch.randint(3, 7, (1,), generator=gen)),), generator=gen
        ).tolist()
        out.append(Example(prompt, [t + 1 for t in reversed(prompt[:3])]))
    return out


def _params(tiny: TinyModel, method: str) -> TrainableParams:
    ends = ModelEnds(tiny.parts_dir, tiny.config)
    return TrainableParams.create(
        ends.config, method, family="llama", num_layers=6, rank=4, prompt_len=3, seed=0
    )  # type: ignore[arg-type]


def train_remote(tiny: TinyModel, method: str) -> list[float]:
    params = _params(tiny, method)
    trainer = Trainer(ModelEnds(tiny.parts_dir, tiny.config), params, lr=1e-2)
    data = batches(tiny_examples(), 4, STEPS, params.prompt_len)

    async def run() -> list[float]:
        async with (
            serve_workers(tiny.parts_dir, tiny.config, SPANS) as workers,
            aiohttp.ClientSession() as http,
        ):
            spans = await open_route(http, workers)
            losses = [await trainer.step(spans, batch) for batch in data]
            closed = [await s.close() for s in spans]
            for answer in closed:  # every forward and backward answer is hashed; backward counts double
                assert answer["steps"] == 2 * STEPS
                assert answer["positions"] == answer["forward_positions"] * 3
        return losses

    return asyncio.run(run())


def train_one_process(tiny: TinyModel, method: str) -> list[float]:
    params = _params(tiny, method)
    trainer = Trainer(ModelEnds(tiny.parts_dir, tiny.config), params, lr=1e-2)
    block = load_block_from_parts(tiny.parts_dir, tiny.config, LayerSpan(0, 6))
    return [
        trainer.reference_step(block, batch)
        for batch in batches(tiny_examples(), 4, STEPS, params.prompt_len)
    ]


@pytest.mark.parametrize("method", ["lora", "prompt"])
def test_loss_curve_over_three_workers_equals_one_process(
    method: str, tiny_models: Callable[[str], TinyModel], one_thread: None
) -> None:
    tiny = tiny_models("llama")
    remote = train_remote(tiny, method)
    local = train_one_process(tiny, method)
    assert len(remote) == len(local) == STEPS
    diff = max(abs(a - b) for a, b in zip(remote, local, strict=True))
    assert diff < 1e-4, f"remote {remote} vs one process {local}"
    assert local[-1] < local[0] - 0.5, f"training did not learn: {local}"


def test_first_lora_loss_is_the_unsplit_models_loss(
    tiny_models: Callable[[str], TinyModel], one_thread: None
) -> None:
    """LoRA starts with B = 0: the first loss is the HF model's own loss on the completion tokens."""
    tiny = tiny_models("llama")
    batch = batches(tiny_examples(), 4, 1)[0]
    params = _params(tiny, "lora")
    trainer = Trainer(ModelEnds(tiny.parts_dir, tiny.config), params, lr=1e-2)
    block = load_block_from_parts(tiny.parts_dir, tiny.config, LayerSpan(0, 6))
    loss = trainer.reference_step(block, batch)
    with torch.no_grad():
        logits = tiny.model(batch.ids).logits
    expected = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), batch.labels.reshape(-1)
    )
    assert abs(loss - float(expected)) < 1e-5


def test_adapter_saved_as_safetensors_loads_back(
    tmp_path: Path, tiny_models: Callable[[str], TinyModel]
) -> None:
    params = _params(tiny_models("llama"), "lora")
    params.save(tmp_path / "adapter.safetensors")
    loaded = TrainableParams.load(tmp_path / "adapter.safetensors")
    assert loaded.method == "lora" and loaded.meta["rank"] == 4
    assert set(loaded.params) == set(params.params)
    assert all(torch.equal(loaded.params[k], params.params[k]) for k in params.params)


def test_evaluation_forwards_keep_nothing_and_match_one_process(
    tiny_models: Callable[[str], TinyModel],
) -> None:
    tiny = tiny_models("llama")
    params = _params(tiny, "prompt")
    trainer = Trainer(ModelEnds(tiny.parts_dir, tiny.config), params, lr=1e-2)
    batch = batches(tiny_examples(), 8, 1, params.prompt_len)[0]
    block = load_block_from_parts(tiny.parts_dir, tiny.config, LayerSpan(0, 6))
    with torch.no_grad():
        params.params["prompt.input"].normal_()  # something to recognise
    local = asyncio.run(trainer.exact_match([LocalSpan(block)], batch))

    async def remote() -> list[bool]:
        async with (
            serve_workers(tiny.parts_dir, tiny.config, SPANS) as workers,
            aiohttp.ClientSession() as http,
        ):
            spans = await open_route(http, workers)
            hits = await trainer.exact_match(spans, batch)
            for worker in workers:  # an evaluation forward keeps nothing for a backward
                (session,) = worker.training.sessions._sessions.values()
                assert not session.kept and session.forward_positions == batch.ids.numel() + 8 * 3
            return hits

    assert asyncio.run(remote()) == local
