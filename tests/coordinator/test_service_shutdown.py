"""Stopping the coordinator (SIGTERM) mid-job: the job fails on chain at once and the client is refunded."""

from __future__ import annotations

from pathlib import Path

from shardnet.chain.registry import Registry
from tests.coordinator.harness import NUM_LAYERS, build_tiny_chat_model, http_json, start_coordinator


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
        job_id = client.pay(prompt, model_id, 400, coordinator=accounts[1].address)
        escrow = owner.get_job(job_id).escrow
        before = owner.claimable(client_account.address)
        client.hand_over(coord.url, job_id, prompt, {"ignore_eos": True})
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
