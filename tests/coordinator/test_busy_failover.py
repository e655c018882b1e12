"""Issue 11 (paid, then busy): a paid job whose route's worker refuses its session as busy is routed around at
once to another worker serving the span, not waited for and then failed with a refund.

The shared network (tests/coordinator/network.py) serves layers 2:4 on two workers (b, b2). Another approved
coordinator holds every session slot of one of them with reserved sessions (what a second coordinator admitting
at the same time, or a worker whose /health lied, leaves behind); the client pays a job; when the route picks the
full worker, its open is refused 503 `sessions_full` and the job must go on on the other replica within a few
seconds (before: the coordinator waited `busy_wait_s`, 30 s, on the full worker).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from eth_utils import keccak

from shardnet.chain.registry import JobStatus
from shardnet.peer.client import WorkerClient
from shardnet.peer.errors import SessionNotFound, WorkerAPIError
from shardnet.span import LayerSpan
from tests.coordinator.network import Net, reference_text
from tests.worker.harness import run, ticket

SPAN = LayerSpan(2, 4)
BUSY_WAIT_S = 30.0  # the coordinator's default wait for a busy worker: a routed-around job takes far less


async def _submit_while_full(net: Net, other, full_url: str, full: str, prompt: str) -> tuple[Any, float]:
    """Open reserved sessions (never evicted) on worker `full` as coordinator `other` until it refuses one as
    full, then pay and run a job through the coordinator; the sessions are closed afterwards."""
    async with WorkerClient(full_url) as client:
        held: list[str] = []
        try:
            while True:
                assert len(held) < 64, "the worker never refused a session: it has no session limit"
                try:
                    opened = await client.open_session(
                        ticket(net.owner.domain(), other, full, SPAN), max_positions=1
                    )
                except WorkerAPIError:
                    break
                held.append(str(opened["session_id"]))
            t0 = time.monotonic()
            outcome = await asyncio.to_thread(net.client.submit, prompt, model="tiny-chat", max_tokens=8)
            return outcome, time.monotonic() - t0
        finally:
            for sid in held:
                try:
                    await client.close(sid)
                except (
                    SessionNotFound
                ):  # its reservation expired unused (the job waited on it, before the fix)
                    pass


def test_a_paid_jobs_busy_hop_is_routed_around_at_once_not_waited_for(net: Net, accounts) -> None:
    other = accounts[7]
    net.owner.set_coordinator(other.address, "http://127.0.0.1:9", True)
    prompt = "busy replica"
    _, expected = reference_text(net, prompt, 8)
    hit = False
    try:
        for name in ["b", "b2", "b", "b2"]:  # until the route picked the full replica (the router's choice)
            full = net.workers[name]
            log_before = len(net.coordinator.log())
            outcome, elapsed = run(_submit_while_full(net, other, full.url, full.address, prompt))
            assert outcome.text == expected
            assert net.owner.get_job(outcome.job_id).status == JobStatus.Settled
            assert outcome.output_hash == keccak(expected.encode())
            print(f"{name} full: job {outcome.job_id} served in {elapsed:.2f} s")
            if f"worker {full.address.lower()} is busy" in net.coordinator.log()[log_before:].lower():
                hit = True
                assert elapsed < BUSY_WAIT_S / 2, f"the job waited {elapsed:.1f} s on the busy worker"
                replica = net.workers["b2" if name == "b" else "b"].address.lower()
                assert replica in {r["node"].lower() for r in outcome.route}, outcome.route
                break
    finally:
        net.owner.set_coordinator(other.address, "http://127.0.0.1:9", False)
    assert hit, "the route never picked the full replica: nothing was tested"
