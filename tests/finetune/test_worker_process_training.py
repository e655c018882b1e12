"""A real `worker run` process serves training sessions beside inference (the routes `worker/node.py` mounts)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import torch

from shardnet.chain.registry import Registry
from shardnet.finetune.spans import RemoteSpan
from shardnet.model.block import load_block
from shardnet.model.training import span_backward
from shardnet.peer.errors import TicketRejected
from shardnet.span import LayerSpan
from tests.worker.harness import start_worker, ticket

SPAN = LayerSpan(1, 3)


def test_worker_process_runs_training_steps_with_tickets_from_the_chain(
    tmp_path: Path, anvil: Any, accounts: list[Any], deployment: Any, tiny_llama_store: Any
) -> None:
    owner = Registry(anvil.w3, deployment.registry, accounts[0], deploy_block=deployment.deploy_block)
    store, cid, manifest = tiny_llama_store
    owner.register_model("tiny-llama", cid, 4, 10**6)
    owner.set_coordinator(accounts[1].address, "http://127.0.0.1:9", True)
    dep_file = deployment.save(tmp_path / "deployment.json")
    worker = start_worker(tmp_path, accounts[2], dep_file, "tiny-llama", store, "--layers", str(SPAN))
    try:
        worker.wait_ready(timeout=120)
        block = load_block(store, manifest.to_json(), SPAN)
        hidden = torch.randn(2, 5, block.hidden_size)
        lora = {"lora.2.v_proj.A": torch.randn(3, 64) * 0.1, "lora.2.v_proj.B": torch.randn(32, 3) * 0.1}
        grad = torch.randn(2, 5, block.hidden_size)

        async def scenario() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            async with aiohttp.ClientSession() as http:
                with pytest.raises(TicketRejected):  # a ticket of an account the registry never approved
                    await RemoteSpan.open(
                        http, worker.url, ticket(owner.domain(), accounts[6], worker.address, SPAN)
                    )
                span = await RemoteSpan.open(
                    http, worker.url, ticket(owner.domain(), accounts[1], worker.address, SPAN)
                )
                await span.forward(0, hidden, lora)
                result = await span.backward(0, grad)
                closed = await span.close()
                assert closed["steps"] == 2 and closed["positions"] == 10 + 2 * 10
                return result

        grad_in, grads = asyncio.run(scenario())
        want_in, want = span_backward(block, hidden, lora, grad)
        assert torch.allclose(grad_in, want_in, atol=1e-6)
        assert all(torch.allclose(grads[k], want[k], atol=1e-6) for k in lora)
    finally:
        worker.stop()
