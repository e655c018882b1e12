"""The OpenAI-compatible API through the real network (tests/coordinator/network.py): completions and chat,
streamed or not, seeded sampling, and concurrent requests spread over replicas."""

from __future__ import annotations

import time
from typing import Any

from shardnet.chain.registry import JobStatus
from tests.coordinator.harness import http_json, wait_for
from tests.coordinator.network import Net, reference_text, second_coordinator


def test_openai_api(net: Net) -> None:
    import openai

    api = openai.OpenAI(base_url=net.coordinator.url + "/v1", api_key="unused", max_retries=0)
    assert "tiny-chat" in [m.id for m in api.models.list().data]

    prompt = "The sky is"
    _, expected = reference_text(net, prompt, 10)
    done = api.completions.create(model="tiny-chat", prompt=prompt, max_tokens=10, temperature=0)
    assert done.choices[0].text == expected
    streamed = "".join(
        c.choices[0].text
        for c in api.completions.create(
            model="tiny-chat", prompt=prompt, max_tokens=10, temperature=0, stream=True
        )
    )
    assert streamed == expected

    messages = [{"role": "user", "content": "hi"}]
    chat_prompt = net.reference["tokenizer"].apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    _, expected_chat = reference_text(net, chat_prompt, 8)
    chat = api.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=8, temperature=0)
    assert chat.choices[0].message.content == expected_chat
    chunks = list(
        api.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=8, stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected_chat
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")

    # seeded sampling is reproducible through the network
    a = api.completions.create(
        model="tiny-chat", prompt=prompt, max_tokens=10, temperature=1.0, top_p=0.9, seed=5
    )
    b = api.completions.create(
        model="tiny-chat", prompt=prompt, max_tokens=10, temperature=1.0, top_p=0.9, seed=5
    )
    assert a.choices[0].text == b.choices[0].text


def test_concurrent_jobs_spread_over_replicas(net: Net) -> None:
    """While one job holds a session on a 2:4 replica, the next job is routed through the other one."""
    import threading

    import openai

    api = openai.OpenAI(base_url=net.coordinator.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    results: dict[str, Any] = {}
    started = threading.Event()

    def run(name: str, prompt: str) -> None:
        pieces = []
        for chunk in api.completions.create(
            model="tiny-chat", prompt=prompt, max_tokens=120, temperature=0, stream=True
        ):
            results.setdefault(name + "_job", int(chunk.id.split("-")[1]))
            pieces.append(chunk.choices[0].text)
            started.set()
        results[name] = "".join(pieces)

    first = threading.Thread(target=run, args=("first", "one job"))
    first.start()
    assert started.wait(60)
    second = threading.Thread(target=run, args=("second", "another job"))
    second.start()
    first.join(120)
    second.join(120)
    assert results["first"] == reference_text(net, "one job", 120)[1]
    assert results["second"] == reference_text(net, "another job", 120)[1]

    def middle(job_id: int) -> str:
        route = http_json("GET", f"{net.coordinator.url}/v1/jobs/{job_id}")[1]["route"]
        return next(h["node"] for h in route if h["span"] == [2, 4])

    assert middle(results["first_job"]) != middle(results["second_job"])


def test_the_answer_does_not_wait_for_the_settlement(net: Net, accounts: Any) -> None:
    """A coordinator whose settleJobs waits 5 s for other jobs to share it: the client has every token and the
    stream's end while the job is still settling (its output saved, so a restart would finish it), for the
    streamed and the whole answer alike; the settlements follow on chain without the client."""
    import openai

    coord = second_coordinator(
        net, accounts[6], "--verify-share", "0", "--settle-batch-s", "5", name="coordinator-late-settle"
    )
    try:
        wait_for(
            lambda: len(http_json("GET", coord.url + "/v1/workers")[1]["workers"]) >= len(net.workers),
            30,
            "the workers routable from the second coordinator",
        )

        def status(job_id: int) -> str:
            return http_json("GET", f"{coord.url}/v1/jobs/{job_id}")[1]["status"]

        api = openai.OpenAI(base_url=coord.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        prompt = "The sky is"
        _, expected = reference_text(net, prompt, 10)
        chunks = list(
            api.completions.create(
                model="tiny-chat", prompt=prompt, max_tokens=10, temperature=0, stream=True
            )
        )
        streamed_job = int(chunks[0].id.split("-")[1])  # cmpl-<job id>-<nonce>
        assert status(streamed_job) == "settling"
        assert "".join(c.choices[0].text for c in chunks) == expected
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")

        started = time.monotonic()
        whole = api.completions.create(model="tiny-chat", prompt=prompt, max_tokens=10, temperature=0)
        answered = time.monotonic() - started
        whole_job = int(whole.model_extra["shardnet_job_id"])
        assert status(whole_job) == "settling" and whole.choices[0].text == expected

        for job_id in (streamed_job, whole_job):
            wait_for(lambda j=job_id: status(j) == "finalized", 30, f"job {job_id} settled after its answer")
            assert net.owner.get_job(job_id).status == JobStatus.Settled
        assert answered < 5  # the answer did not sit through the settlement window
    finally:
        coord.stop()
