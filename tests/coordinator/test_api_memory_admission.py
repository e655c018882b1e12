"""Issue 11 (memory): the OpenAI API pays for a request only when the route's workers have the cache memory for
its worst case, so no paid job fails because a worker's cache budget ran out.

A real network on 127.0.0.1: anvil, one `worker run` of the tiny chat model (layers 0:6, the last hop, so it keeps
what it keeps of the logits) with a cache budget of a few hundred KiB, and one `coordinator run` that may run more
jobs at once than that budget holds. Many concurrent long requests: each is served with the tokens of its prompt
run alone, or refused with 429/503 before paying; the registry's job count counts exactly the requests served.
(Before: all were admitted for their free sessions, the budget ran out mid-generation, sessions of running jobs
were evicted or answered 503 "memory budget used up", the worker was marked down and paid jobs failed.)
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from shardnet.chain.registry import JobStatus
from tests.coordinator.harness import http_json, wait_for
from tests.coordinator.tiny_chat_net import OneWorkerNet, admission_coordinator_flags, one_worker_network

PRICE = 10**9
CACHE_MB = 0.75  # the tiny model costs ~1.5 KiB of KV cache a position: ~500 positions in all
PROMPT_CHARS = 30  # one token a byte
NEW_TOKENS = 150  # a job needs ~180 positions: 2 fit at once, not 6


MemNet = OneWorkerNet


@pytest.fixture(scope="module")
def mem_net(tmp_path_factory, anvil, accounts, module_deployment) -> Iterator[MemNet]:
    with one_worker_network(
        tmp_path_factory,
        anvil,
        accounts,
        module_deployment,
        "memory-admission",
        price=PRICE,
        coordinator_args=[*admission_coordinator_flags(queue_wait_s=60), "--step-timeout-s", "10"],
        worker_args=["--max-length", "256", "--max-sessions", "8", "--max-cache-mb", str(CACHE_MB)],
    ) as net:
        yield net


def _complete(net: MemNet, prompt: str, max_tokens: int = NEW_TOKENS) -> tuple[int, Any]:
    body = {
        "model": "tiny-chat",
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
    }
    return http_json("POST", net.coordinator.url + "/v1/completions", body, timeout=300)


def test_concurrent_long_requests_are_served_or_refused_before_paying_never_paid_then_failed(
    mem_net: MemNet,
) -> None:
    prompts = [f"{i:02d}" + "m" * (PROMPT_CHARS - 2) for i in range(3)]
    jobs_before = mem_net.owner.job_count()
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda i: (prompts[i % 3], _complete(mem_net, prompts[i % 3])), range(6)))
    served = [(p, a) for p, (status, a) in answers if status == 200]
    refused = [a for _, (status, a) in answers if status in (429, 503)]
    assert len(served) + len(refused) == len(answers), [a for _, a in answers]
    assert all("nothing was paid" in a["error"]["message"] for a in refused), refused
    assert served, answers
    assert mem_net.owner.job_count() - jobs_before == len(served)  # a refused request paid nothing
    alone = {p: _complete(mem_net, p)[1]["choices"][0]["text"] for p in {p for p, _ in served}}
    for prompt, answer in served:
        assert answer["usage"]["completion_tokens"] == NEW_TOKENS
        assert answer["choices"][0]["text"] == alone[prompt]
    for job_id in range(jobs_before + 1, mem_net.owner.job_count() + 1):
        assert mem_net.owner.get_job(job_id).status in (JobStatus.Settled, JobStatus.Open), job_id
    log = mem_net.coordinator.log()
    assert " is down " not in log and "failed" not in log.lower().replace("failed over", ""), log[-3000:]
    assert "evicting" not in mem_net.worker.log()


def test_preflight_answers_503_while_the_workers_memory_is_taken_and_200_after(mem_net: MemNet) -> None:
    """A client-paid job asks first: while two long API requests hold the worker's cache memory, a job needing
    as much is refused 503 no_capacity (nothing paid; retry), and accepted once they are done."""
    url = mem_net.coordinator.url
    body = {"model": "tiny-chat", "prompt": "p" * PROMPT_CHARS, "max_tokens": NEW_TOKENS}
    per_job = None
    with ThreadPoolExecutor(2) as pool:
        running = [pool.submit(_complete, mem_net, f"{i}" * PROMPT_CHARS) for i in range(2)]

        def held() -> bool:
            memory = http_json("GET", mem_net.worker.url + "/health")[1]["memory"]
            nonlocal per_job
            per_job = (PROMPT_CHARS + NEW_TOKENS) * memory["bytes_per_position"]
            return memory["free_bytes"] < per_job

        wait_for(held, 60, "both requests' sessions holding the worker's memory", interval=0.02)
        status, answer = http_json("POST", url + "/v1/jobs/preflight", body)
        assert status == 503 and answer["error"]["code"] == "no_capacity", answer
        assert "nothing was paid" in answer["error"]["message"]
        assert all(f.result()[0] == 200 for f in running)
    status, answer = http_json("POST", url + "/v1/jobs/preflight", body)
    assert status == 200 and answer["max_tokens"] == NEW_TOKENS, answer


def test_a_worker_checks_every_hop_the_registry_lets_a_job_hold(mem_net: MemNet) -> None:
    """`worker run` bounds its checks (POST /v1/verify) by the registry's largest job within the model's context,
    not by its sessions' max_length: a drawn verifier never has to refuse a valid check (a refusal is a fault)."""
    health = http_json("GET", mem_net.worker.url + "/health")[1]
    registry = mem_net.owner
    largest = registry.max_job_tokens() + registry.max_prompt_tokens()
    context = 512  # the tiny chat model's max_position_embeddings (tests/coordinator/harness.py)
    assert health["max_length"] <= health["max_verify_positions"] == min(largest, context), (health, largest)
