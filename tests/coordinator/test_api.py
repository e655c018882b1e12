"""The coordinator's HTTP API against a running coordinator: an OpenAI request no chain of workers can serve."""

from __future__ import annotations

from pathlib import Path

from shardnet.chain.registry import Registry
from tests.coordinator.harness import NUM_LAYERS, build_tiny_chat_model, http_json, start_coordinator


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
