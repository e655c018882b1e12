"""SIGKILL a worker mid-stream with several jobs, restart it: every job it served gets its signed commitment on
chain exactly once (posted by the worker itself: no coordinator settles them), the cut one included."""

from __future__ import annotations

import collections
import time

import torch

from shardnet.peer.client import WorkerClient
from shardnet.span import LayerSpan
from shardnet.wire.commitment import merkle_root, step_hash
from shardnet.wire.frames import encode_frame
from tests.worker.harness import posted_roots, run, start_worker, submit_for, ticket, tiny_llama_on_chain
from worker.verification import commit_step

FULL = LayerSpan(0, 4)


def test_sigkill_then_restart_posts_each_commitment_once_and_misses_none(
    tmp_path_factory, anvil, accounts, module_deployment, tiny_llama_store
) -> None:
    tmp = tmp_path_factory.mktemp("crash")
    store, cid, _manifest = tiny_llama_store
    dep_file, owner, model_id = tiny_llama_on_chain(
        tmp, anvil, accounts[0], module_deployment, cid, [accounts[1]]
    )
    client = owner.with_account(accounts[6])
    worker = start_worker(
        tmp, accounts[7], dep_file, "tiny-llama", store, "--layers", "0:4", "--settle-window-s", "1", name="w"
    )
    domain = owner.domain()
    try:
        worker.wait_ready()
        me = worker.address
        routed = [submit_for(client, accounts[1].address, model_id) for _ in range(3)]
        late_job = submit_for(client, accounts[1].address, model_id)
        expected: dict[int, bytes] = {}

        async def stream(w: WorkerClient, job_id: int, steps: int, close: bool) -> None:
            sid = (await w.open_session(ticket(domain, accounts[1], me, FULL, job_id)))["session_id"]
            x, pos, hashes = torch.tensor([[1, 2, job_id]]), 0, []  # a different stream per job
            for _ in range(steps):
                logits, digest = await w.step(sid, x, pos)
                assert digest == step_hash(encode_frame(logits, "fp32"))
                hashes.append(
                    commit_step(step_hash(encode_frame(x, "int64")), encode_frame(logits, "fp32"))[1]
                )
                pos += x.shape[1]
                x = torch.tensor([[int(logits[0, -1].argmax())]])
            expected[job_id] = merkle_root(hashes)
            if close:
                assert await w.close(sid) == expected[job_id]

        async def before_crash() -> None:
            async with WorkerClient(worker.url) as w:
                await stream(w, routed[0], 3, close=True)
                await stream(w, late_job, 2, close=True)
                await stream(w, routed[1], 4, close=True)
                await stream(w, routed[2], 2, close=False)  # mid-stream when the worker dies

        run(before_crash())
        worker.signal(9)
        assert worker.wait(timeout=20) == -9

        worker.start()  # same data dir and port: resumes from its cursor and its database
        worker.wait_ready()
        jobs = [*routed, late_job]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(posted_roots(owner, j) for j in jobs):
            time.sleep(0.2)
        assert {j: posted_roots(owner, j).get(me) for j in jobs} == expected
        worker.signal(15)
        assert worker.wait(timeout=60) == 0
        posted = owner.get_logs(module_deployment.deploy_block, owner.block_number(), ["CommitmentPosted"])
        assert collections.Counter(e.args["jobId"] for e in posted if e.args["node"] == me) == {
            j: 1 for j in jobs
        }
        assert "left open by an earlier run" in worker.log()
    finally:
        worker.stop()
