"""Issue 12, items 1 and 2: `shardnet submit` asks the coordinator's POST /v1/jobs/preflight before paying.

A real network on 127.0.0.1: anvil, one `worker run` of the tiny chat model (layers 0:6, --max-length 64)
and one `coordinator run`. Every refused job leaves the client's nonce and the registry's job count as they
were: nothing was sent on chain.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.coordinator.harness import http_json
from tests.coordinator.tiny_chat_net import OneWorkerNet, one_worker_network
from tests.service_proc import REPO

SHARDNET = [str(Path(sys.executable).parent / "shardnet")]
MAX_LENGTH = 64
PRICE = 10**9


SmallNet = OneWorkerNet


@pytest.fixture(scope="module")
def small_net(tmp_path_factory, anvil, accounts, module_deployment) -> Iterator[SmallNet]:
    with one_worker_network(
        tmp_path_factory,
        anvil,
        accounts,
        module_deployment,
        "preflight",
        price=PRICE,
        worker_args=["--max-length", str(MAX_LENGTH)],
        unserved_models=["nobody-serves"],
        coordinator_reads_the_import_store=True,
    ) as net:
        yield net


def _submit(net: SmallNet, key: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFLIGHT_CLIENT_KEY": key}
    return subprocess.run(
        [
            *SHARDNET,
            "submit",
            *args,
            "--deployment",
            str(net.dep_file),
            "--key-env",
            "PREFLIGHT_CLIENT_KEY",
            "--raw",
            "--timeout",
            "120",
        ],
        cwd=REPO,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.parametrize(
    "case,args,message",
    [
        ("empty", ["", "--model", "tiny-chat"], "the prompt is empty"),
        ("too long", ["x" * 600, "--model", "tiny-chat"], "more than the registry's maxPromptTokens (512)"),
        (
            "beyond max_length",
            ["hello", "--model", "tiny-chat", "--max-tokens", "100"],
            f"its workers hold {MAX_LENGTH} positions, the prompt takes 5, so at most {MAX_LENGTH - 5} new tokens",
        ),
        ("span not covered", ["hello", "--model", "nobody-serves"], "cannot be served now"),
    ],
)
def test_a_job_that_cannot_run_is_refused_before_paying(
    small_net: SmallNet, accounts, anvil, case: str, args: list[str], message: str
) -> None:
    client = accounts[8]
    nonce, jobs = anvil.w3.eth.get_transaction_count(client.address), small_net.owner.job_count()
    out = _submit(small_net, client.key.hex(), *args)
    assert out.returncode == 1, (case, out.stdout, out.stderr)
    assert "nothing was paid" in out.stderr and message in out.stderr, (case, out.stderr)
    assert "Traceback" not in out.stderr
    assert anvil.w3.eth.get_transaction_count(client.address) == nonce
    assert small_net.owner.job_count() == jobs


def test_preflight_answers_the_quote_and_the_cap(small_net: SmallNet) -> None:
    status, answer = http_json(
        "POST",
        small_net.coordinator.url + "/v1/jobs/preflight",
        {"model": "tiny-chat", "prompt": "hello", "max_tokens": 8},
    )
    assert status == 200, answer
    assert answer["prompt_tokens"] == 5 and answer["max_new_tokens"] == MAX_LENGTH - 5
    assert answer["route_max_length"] == MAX_LENGTH
    assert answer["quote_wei"] == small_net.owner.quote(small_net.model_id, 8)
    assert answer["route"] == [{"node": small_net.worker.address.lower(), "span": [0, 6]}]
    status, answer = http_json(
        "POST",
        small_net.coordinator.url + "/v1/jobs/preflight",
        {"model": "tiny-chat", "prompt": "hello", "max_tokens": -3},
    )
    assert status == 400 and answer["error"]["code"] == "bad_max_tokens"


def test_preflight_refuses_max_tokens_above_the_registrys_max_job_tokens(small_net: SmallNet) -> None:
    limit = small_net.owner.max_job_tokens()
    status, answer = http_json(
        "POST",
        small_net.coordinator.url + "/v1/jobs/preflight",
        {"model": "tiny-chat", "prompt": "hello", "max_tokens": limit + 1},
    )
    assert status == 400 and answer["error"]["code"] == "max_tokens_too_large", answer
    assert f"more than the registry's maxJobTokens ({limit})" in answer["error"]["message"]


def test_escrow_above_max_escrow_is_refused_without_a_terminal_and_paid_with_yes(
    small_net: SmallNet, accounts, anvil
) -> None:
    client = accounts[8]
    nonce = anvil.w3.eth.get_transaction_count(client.address)
    quote = small_net.owner.quote(small_net.model_id, 4)
    args = [
        "hello",
        "--model",
        "tiny-chat",
        "--max-tokens",
        "4",
        "--max-escrow",
        f"{quote / 2 / 10**18:.18f}",
    ]
    out = _submit(small_net, client.key.hex(), *args)
    assert out.returncode == 1, out.stderr
    assert "quote: " in out.stderr  # the quote is shown before anything else happens
    assert "above --max-escrow" in out.stderr and "stdin is not a terminal" in out.stderr, out.stderr
    assert "nothing was paid" in out.stderr
    assert anvil.w3.eth.get_transaction_count(client.address) == nonce

    out = _submit(small_net, client.key.hex(), *args, "--yes")
    assert out.returncode == 0, out.stderr
    assert "quote: " in out.stderr and "finalized" in out.stderr
    assert anvil.w3.eth.get_transaction_count(client.address) > nonce
