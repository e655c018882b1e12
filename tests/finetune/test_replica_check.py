"""A share of training steps is re-run on a replica of the span: honest workers agree, a worker that cheats on
its forward or only on its backward is caught with the evidence (issue 16 item 4)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest
import torch

from shardnet.chain.devnet import DEV_KEYS
from shardnet.finetune.data import batches
from shardnet.finetune.ends import ModelEnds
from shardnet.finetune.params import TrainableParams
from shardnet.finetune.replica import ReplicaCheck, StepMismatch
from shardnet.finetune.spans import Grads, LocalSpan, SpanRunner
from shardnet.finetune.trainer import Trainer
from shardnet.model import load_block_from_parts
from shardnet.span import LayerSpan
from tests.finetune.harness import open_route, serve_workers
from tests.finetune.test_remote_training import tiny_examples
from tests.fixtures_model import TinyModel

MIDDLE = LayerSpan(2, 4)


class LazyBackward(LocalSpan):
    """Computes forwards honestly but returns gradients 1% off (cheaper to fake than to compute)."""

    async def backward(self, step_id: int, grad: torch.Tensor) -> Grads:
        grad_in, grads = await super().backward(step_id, grad)
        return grad_in * 1.01, grads


def _trainer(tiny: TinyModel) -> Trainer:
    ends = ModelEnds(tiny.parts_dir, tiny.config)
    params = TrainableParams.create(ends.config, "lora", family="llama", num_layers=6, rank=4, seed=0)
    return Trainer(ends, params, lr=1e-2)


def _run(
    tiny: TinyModel, middle: Callable[[], SpanRunner] | None, steps: int
) -> tuple[list[float], ReplicaCheck]:
    trainer = _trainer(tiny)
    keys = [DEV_KEYS[2], DEV_KEYS[3], DEV_KEYS[4], DEV_KEYS[6]]

    async def run() -> tuple[list[float], ReplicaCheck]:
        spans_served = [(0, 2), (2, 4), (4, 6), (2, 4)]
        async with serve_workers(tiny.parts_dir, tiny.config, spans_served, keys=keys) as workers:
            async with aiohttp.ClientSession() as http:
                first, second, third, replica = await open_route(http, workers)
                check = ReplicaCheck({MIDDLE: replica}, every=2)
                route = [first, middle() if middle is not None else second, third]
                data = batches(tiny_examples(), 4, steps)
                return [await trainer.step(route, b, check) for b in data], check

    return asyncio.run(run())


def test_honest_workers_agree_with_their_replica(
    tiny_models: Callable[[str], TinyModel], one_thread: None
) -> None:
    tiny = tiny_models("llama")
    losses, check = _run(tiny, None, 6)
    assert check.checked == 3 * 2  # steps 0, 2 and 4 of 6: their forward and their backward
    assert check.worst <= 1e-6
    assert losses[-1] < losses[0]


def test_a_worker_faking_its_backward_is_caught(tiny_models: Callable[[str], TinyModel]) -> None:
    tiny = tiny_models("llama")
    block = load_block_from_parts(tiny.parts_dir, tiny.config, MIDDLE)
    with pytest.raises(StepMismatch, match=r"backward of step 0, layers 2:4: grad_hidden .* replica"):
        _run(tiny, lambda: LazyBackward(block), 2)


def test_a_worker_with_other_weights_is_caught_on_its_forward(
    tiny_models: Callable[[str], TinyModel],
) -> None:
    tiny = tiny_models("llama")
    block = load_block_from_parts(tiny.parts_dir, tiny.config, MIDDLE)
    with torch.no_grad():
        for p in block.module.parameters():
            p.mul_(1.001)
    with pytest.raises(StepMismatch, match=r"forward of step 0, layers 2:4: hidden"):
        _run(tiny, lambda: LocalSpan(block), 2)
