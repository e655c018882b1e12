"""Gaps found by auditing issue 5 (the coordinator) against a running network, each pinned by a test."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from coordinator.router import NoRouteError, WorkerInfo, choose_route
from shardnet.chain.registry import Registry
from shardnet.span import LayerSpan
from tests.coordinator.harness import NUM_LAYERS, build_tiny_chat_model, http_json, start_coordinator
from worker.cli import build_parser


def test_no_route_error_suggests_a_worker_command_that_parses() -> None:
    """The command a NoRouteError suggests must be one `worker` accepts, with the missing layers."""
    workers = [WorkerInfo("0xa", "http://a", LayerSpan(0, 10))]
    with pytest.raises(NoRouteError) as caught:
        choose_route(workers, 30)
    suggested = re.search(r"`(worker run [^`]*)`", str(caught.value))
    assert suggested is not None, str(caught.value)
    args = build_parser().parse_args(shlex.split(suggested.group(1))[1:])
    assert args.command == "run" and args.layers == "10:30"


def test_openai_request_that_no_worker_can_serve_is_503_and_pays_nothing(
    tmp_path: Path, anvil, accounts, module_deployment
) -> None:
    """A real coordinator with no workers: the API answers 503 at once instead of paying a job into escrow
    that can only fail (which costs the operator gas and leaves a failed job on chain)."""
    from shardnet.model.importer import import_model

    dep_file = module_deployment.save(tmp_path / "deployment.json")
    owner = Registry(
        anvil.w3, module_deployment.registry, accounts[0], deploy_block=module_deployment.deploy_block
    )
    build_tiny_chat_model(tmp_path / "hf")
    store = tmp_path / "store"  # the coordinator finds the manifest and tokenizer here
    cid, _ = import_model(tmp_path / "hf", store, name="tiny-chat", progress=False)
    owner.register_model("tiny-chat", cid, NUM_LAYERS, 10**6)
    coordinator = accounts[1]
    owner.set_coordinator(coordinator.address, "http://127.0.0.1:9", True)
    proc = start_coordinator(tmp_path, coordinator.key.hex(), dep_file, store)
    try:
        proc.wait_ready()
        jobs_before = owner.job_count()
        balance_before = anvil.w3.eth.get_balance(coordinator.address)
        for path, body in (
            ("/v1/completions", {"model": "tiny-chat", "prompt": "hi", "max_tokens": 3}),
            (
                "/v1/chat/completions",
                {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}], "stream": True},
            ),
        ):
            status, answer = http_json("POST", proc.url + path, body)
            assert status == 503, answer
            message = answer["error"]["message"]
            assert "cannot be served now (nothing was paid)" in message
            assert "worker run --layers 0:6" in message
        assert owner.job_count() == jobs_before
        assert anvil.w3.eth.get_balance(coordinator.address) == balance_before
    finally:
        proc.stop()


@pytest.mark.parametrize("metric", [float("inf"), float("nan")])
def test_evidence_of_a_non_finite_metric_is_strict_json(metric: float) -> None:
    """Evidence whose comparison was infinite (shape mismatch, NaN output) still hashes as standard JSON."""
    import json

    from eth_utils import keccak

    from coordinator.verifier import canonical_json, evidence_hash, evidence_record

    record = evidence_record(
        job_id=1,
        node="0xA",
        hop_index=0,
        step_index=2,
        span=(0, 2),
        start_pos=5,
        input_hash=b"\x01" * 32,
        claimed_hash=b"\x02" * 32,
        replica="0xB",
        replica_hash=b"\x03" * 32,
        referee="0xC",
        referee_hash=b"\x04" * 32,
        metric=metric,
    )
    data = canonical_json(record)
    assert b"Infinity" not in data and b"NaN" not in data
    assert json.loads(data, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}")) == record
    assert evidence_hash(record) == keccak(data)


def test_sigterm_mid_job_fails_it_on_chain_at_once_so_the_client_is_refunded(
    tmp_path: Path, anvil, accounts, module_deployment
) -> None:
    """A coordinator stopped (SIGTERM) mid-generation refunds the client now, without waiting for a restart
    or the job's deadline; it exits 0."""
    import signal

    from shardnet.chain.registry import JobStatus
    from shardnet.client import ShardnetClient
    from shardnet.model.importer import import_model
    from tests.coordinator.harness import wait_for
    from tests.worker.harness import start_worker

    dep_file = module_deployment.save(tmp_path / "deployment.json")
    owner = Registry(
        anvil.w3, module_deployment.registry, accounts[0], deploy_block=module_deployment.deploy_block
    )
    build_tiny_chat_model(tmp_path / "hf")
    store = tmp_path / "store"
    cid, _ = import_model(tmp_path / "hf", store, name="tiny-chat", progress=False)
    model_id = int(
        owner.register_model("tiny-chat", cid, NUM_LAYERS, 10**6).event("ModelRegistered").args["modelId"]
    )
    owner.set_coordinator(accounts[1].address, "http://127.0.0.1:9", True)
    workers = [
        start_worker(
            tmp_path,
            accounts[2 + i],
            dep_file,
            str(model_id),
            store,
            "--layers",
            span,
            "--drain-grace-s",
            "1",
            name=f"w{i}",
        )
        for i, span in enumerate(("0:2", "2:4", "4:6"))
    ]
    coord = start_coordinator(tmp_path, accounts[1].key.hex(), dep_file, tmp_path / "coord-store")
    try:
        for w in workers:
            w.wait_ready(timeout=300)
        coord.wait_ready(timeout=300)
        wait_for(lambda: len(http_json("GET", coord.url + "/v1/workers")[1]["workers"]) == 3, 30, "3 workers")
        client_account = accounts[9]
        client = ShardnetClient(owner.with_account(client_account), coordinator_url=coord.url)
        prompt = "stop the coordinator"
        job_id = client.pay(prompt, model_id, 400)
        escrow = owner.get_job(job_id).escrow
        before = owner.claimable(client_account.address)
        status, _ = http_json(
            "POST", f"{coord.url}/v1/jobs/{job_id}/prompt", {"prompt": prompt, "ignore_eos": True}
        )
        assert status == 202
        wait_for(
            lambda: http_json("GET", f"{coord.url}/v1/jobs/{job_id}")[1]["status"] == "generating",
            30,
            "the job to run",
            interval=0.02,
        )
        assert coord.proc is not None
        coord.proc.send_signal(signal.SIGTERM)
        assert coord.proc.wait(timeout=30) == 0
        job = owner.get_job(job_id)
        assert job.status == JobStatus.Failed, coord.log()[-3000:]
        assert owner.claimable(client_account.address) - before == escrow
        assert "coordinator stopped mid-job" in coord.log()
    finally:
        coord.stop()
        for w in workers:
            if w.proc is not None and w.proc.poll() is None:
                w.signal(signal.SIGTERM)
        for w in workers:
            w.stop()
