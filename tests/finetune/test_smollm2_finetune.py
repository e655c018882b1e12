"""SmolLM2-135M (fp32): 20 LoRA steps over 3 workers give the loss curve of the same training in one process."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shardnet.finetune.data import Example, batches
from shardnet.finetune.run import FinetuneSettings, new_trainer
from shardnet.model import load_block_from_parts
from shardnet.span import LayerSpan
from tests.finetune.harness import open_route, serve_workers

STEPS = 20
SPANS = ((0, 10), (10, 20), (20, 30))


@pytest.mark.slow
def test_smollm2_loss_curve_over_three_workers_equals_one_process(
    smollm2_parts: tuple[Path, dict[str, Any], Any], tmp_path: Path
) -> None:
    parts_dir, config, tokenizer = smollm2_parts
    if not (parts_dir / "config.json").exists():
        (parts_dir / "config.json").write_text(json.dumps(config))
    rows = [
        (f"Question: what is {a} plus {b}?\nAnswer:", f" <<{a + b}>>") for a in range(4) for b in range(4)
    ]
    train = [
        Example(
            tokenizer(p, add_special_tokens=False)["input_ids"],
            tokenizer(c, add_special_tokens=False)["input_ids"],
        )
        for p, c in rows
    ]
    settings = FinetuneSettings(parts_dir, "lora", STEPS, batch_size=2, lr=3e-3, rank=4)
    data = batches(train, settings.batch_size, STEPS)

    async def remote() -> list[float]:
        trainer = new_trainer(settings)
        async with serve_workers(parts_dir, config, SPANS) as workers, aiohttp.ClientSession() as http:
            spans = await open_route(http, workers)
            return [await trainer.step(spans, b) for b in data]

    over_network = asyncio.run(remote())
    trainer = new_trainer(settings)
    block = load_block_from_parts(parts_dir, config, LayerSpan(0, 30))
    one_process = [trainer.reference_step(block, b) for b in data]
    diff = max(abs(a - b) for a, b in zip(over_network, one_process, strict=True))
    print(
        f"SmolLM2 loss curves: largest difference {diff:.2e}; {over_network[0]:.4f} -> {over_network[-1]:.4f}"
    )
    assert diff < 1e-4, (over_network, one_process)
    assert one_process[-1] < one_process[0]
