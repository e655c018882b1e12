"""`POST /v1/push/answers` in process: only an awaited answer id with the key its last worker was given is taken;
unknown ids (404), a middle worker without the key (403) and malformed answers (400) are refused."""

from __future__ import annotations

import asyncio

import aiohttp
import torch
from aiohttp import web

from coordinator.push_answers import PushAnswers
from shardnet.chain.devnet import free_port
from shardnet.wire.commitment import step_hash
from shardnet.wire.frames import encode_frame


def test_only_the_keyed_answer_of_a_waiting_step_is_taken() -> None:
    async def scenario() -> tuple[list[int], torch.Tensor, list[bytes]]:
        answers = PushAnswers()
        app = web.Application()
        app.add_routes(answers.routes())
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        answers.url = f"http://127.0.0.1:{port}/v1/push/answers"
        frame = encode_frame(torch.arange(6, dtype=torch.float32).reshape(1, 1, 6), "fp32")
        digest = "0x" + step_hash(frame).hex()
        headers = {
            "X-Answer-Id": "s1",
            "X-Step-Hash": digest,
            "X-Hop-Hashes": f'["{"0x" + "11" * 32}", "{digest}"]',
        }
        future = answers.expect("s1", "k" * 32)
        statuses = []
        try:
            async with aiohttp.ClientSession() as http:
                for url, hdrs, body in (
                    (answers.answer_to("k" * 32), {**headers, "X-Answer-Id": "nobody"}, frame),  # unknown id
                    (answers.url, headers, frame),  # no key: a middle worker knows the id, not the key
                    (answers.answer_to("x" * 32), headers, frame),  # another chain's key
                    (answers.answer_to("k" * 32), {**headers, "X-Step-Hash": "zz"}, frame),  # malformed
                    (answers.answer_to("k" * 32), headers, frame),
                    (answers.answer_to("k" * 32), headers, frame),  # answered already
                ):
                    async with http.post(str(url), data=body, headers=hdrs) as resp:
                        statuses.append(resp.status)
        finally:
            await runner.cleanup()
        result = future.result()
        return statuses, result.tensor, result.hop_hashes

    statuses, tensor, hashes = asyncio.run(scenario())
    assert statuses == [404, 403, 403, 400, 200, 404]
    assert tensor.flatten().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert len(hashes) == 2


def test_workers_are_given_a_reachable_answer_url() -> None:
    from coordinator.push_answers import answers_base

    listed = "http://10.55.7.3:8000"
    # --public-url wins
    assert (
        answers_base("http://coord.example:80/", "http://127.0.0.1:8600", listed) == "http://coord.example:80"
    )
    # a loopback or wildcard listener names the worker's own host: the registry's endpoint is where workers reach it
    for local in (
        "http://127.0.0.1:8000",
        "http://0.0.0.0:8600",
        "http://localhost:8600",
        "http://[::1]:8600",
    ):
        assert answers_base(None, local, listed) == listed
    # a loopback registry endpoint (a test's placeholder) is no better than where it listens
    assert answers_base(None, "http://127.0.0.1:8000", "http://127.0.0.1:9") == "http://127.0.0.1:8000"
    assert answers_base(None, "http://127.0.0.1:8000", None) == "http://127.0.0.1:8000"
    # a routable listener is kept
    assert answers_base(None, "http://10.0.0.5:8600", listed) == "http://10.0.0.5:8600"
