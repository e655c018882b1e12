"""A session evicted under memory pressure, stepped inside a coalesced request: its step alone gets a clear 404
that says it was evicted and what to do; the other session's step in the same request is computed."""

from __future__ import annotations

import json
import urllib.request

import torch

from shardnet.peer.client import WorkerClient
from shardnet.peer.errors import SessionNotFound
from shardnet.span import LayerSpan
from shardnet.wire.frames import encode_frame
from shardnet.wire.multi_step import StepItem
from tests.worker.harness import run, ticket
from tests.worker.test_worker_batching import _serve

SPAN = LayerSpan(0, 4)


def test_an_evicted_session_in_a_coalesced_request_gets_a_clear_404_alone(
    tmp_path_factory, anvil, accounts, module_deployment, tiny_llama_store
) -> None:
    owner, _store, _manifest, workers = _serve(
        tmp_path_factory,
        anvil,
        accounts,
        module_deployment,
        tiny_llama_store,
        [SPAN],
        "--max-cache-mb",
        "0.25",
    )
    worker = workers[0]

    async def scenario() -> tuple[list[object], str]:
        with urllib.request.urlopen(f"{worker.url}/health", timeout=10) as resp:
            memory = json.loads(resp.read())["memory"]
        room = memory["budget_bytes"] // memory["bytes_per_position"]  # positions the cache holds
        async with WorkerClient(worker.url) as client:
            domain = owner.domain()
            # two sessions without a reservation (max_positions 0): each holds a third of the budget
            a, b = [
                str(
                    (await client.open_session(ticket(domain, accounts[1], worker.address, SPAN)))[
                        "session_id"
                    ]
                )
                for _ in range(2)
            ]
            third = room // 3
            for sid in (a, b):
                await client.step(sid, torch.randint(3, 256, (1, third)), 0)
            await client.step(b, torch.tensor([[5]]), third)  # b used last: a is the least recently used
            # a third session needs half the budget: the worker evicts a to make room
            c = str(
                (await client.open_session(ticket(domain, accounts[1], worker.address, SPAN)))["session_id"]
            )
            await client.step(c, torch.randint(3, 256, (1, room // 2)), 0)
            items = [
                StepItem(a, client.session_token(a), third, encode_frame(torch.tensor([[7]]), "int64")),
                StepItem(b, client.session_token(b), third + 1, encode_frame(torch.tensor([[7]]), "int64")),
            ]
            answers = await client.steps(items)
        return list(answers), worker.log_path.read_text()

    try:
        worker.wait_ready()
        answers, log = run(scenario())
    finally:
        worker.stop()
    evicted, computed = answers
    assert isinstance(evicted, SessionNotFound), evicted
    assert "evicted" in evicted.message and "max_positions" in evicted.message, evicted.message
    assert not isinstance(computed, Exception), computed
    assert "evicting session" in log
