"""Faults through the real network (tests/coordinator/network.py): a worker SIGKILLed mid-generation, the
coordinator killed mid-job and while settling, and a cheating worker caught, excluded and left unpaid."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

from eth_utils import keccak

from coordinator.settlement import expected_split
from shardnet.chain.registry import JobStatus
from shardnet.chain.tx import rpc
from tests.coordinator.harness import CoordinatorProc, http_json, wait_for
from tests.coordinator.network import PRICE, Net, claimables, job_status, reference_text, workers_view
from tests.worker.harness import WorkerProc, start_worker


def test_failover_after_sigkill_gives_identical_tokens(net: Net) -> None:
    import openai

    api = openai.OpenAI(base_url=net.coordinator.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    prompt = "failover test"
    n = 150
    expected_tokens, expected = reference_text(net, prompt, n)
    assert len(expected_tokens) > 40, "the reference stopped too early for a mid-generation kill"

    pieces: list[str] = []
    arrivals: list[float] = []
    killed_at = None
    victim = None
    stream = api.completions.create(
        model="tiny-chat", prompt=prompt, max_tokens=n, temperature=0, stream=True
    )
    for chunk in stream:
        pieces.append(chunk.choices[0].text)
        arrivals.append(time.monotonic())
        if killed_at is None and len(pieces) == 10:
            job_id = int(chunk.id.split("-")[1])
            route = http_json("GET", f"{net.coordinator.url}/v1/jobs/{job_id}")[1]["route"]
            victim_addr = next(h["node"] for h in route if h["span"] == [2, 4])
            victim = next(w for w in net.workers.values() if w.address.lower() == victim_addr)
            assert victim.proc is not None
            victim.proc.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
    assert killed_at is not None and victim is not None
    after_kill = [t for t in arrivals if t > killed_at]
    stall = after_kill[0] - killed_at
    print(f"\nfailover stall between SIGKILL and the next token: {stall:.3f} s")
    assert "".join(pieces) == expected
    assert stall < 2.0
    route = http_json("GET", f"{net.coordinator.url}/v1/jobs/{job_id}")[1]["route"]
    replacement = [h for h in route if h["reason"] == "failover"]
    assert [(h["span"], h["node"] != victim.address.lower()) for h in replacement] == [([2, 4], True)]
    assert replacement[0]["positions"] > 0  # it replayed the history and went on

    # the dead worker is out of routing until it answers /health again
    down = workers_view(net)[victim.address.lower()]
    assert down["down"] is True
    victim.proc.wait(timeout=10)
    restarted = WorkerProc(victim.account, victim.args, victim.log_path, victim.port).start()
    net.workers[next(k for k, w in net.workers.items() if w is victim)] = restarted
    restarted.wait_ready()
    wait_for(
        lambda: not workers_view(net)[victim.address.lower()]["down"],
        20,
        "the restarted worker back in routing",
    )


def test_coordinator_killed_mid_job_fails_it_on_chain_after_restart(net: Net) -> None:
    client_reg = net.owner.with_account(net.client_account)
    job_id = net.client.pay("kill the coordinator", net.model_id, 400)
    escrow = net.owner.get_job(job_id).escrow
    before = client_reg.claimable(net.client_account.address)
    net.client.hand_over(net.coordinator.url, job_id, "kill the coordinator", {})  # 202, or ClientError
    wait_for(
        lambda: http_json("GET", f"{net.coordinator.url}/v1/jobs/{job_id}")[1]["status"] == "generating",
        20,
        "the job to run",
        interval=0.02,
    )
    net.coordinator.kill()
    assert net.owner.get_job(job_id).status == JobStatus.Open  # nothing of a route goes on chain
    restarted = CoordinatorProc(
        net.coordinator.key, net.coordinator.args, net.coordinator.log_path, net.coordinator.port
    ).start()
    net.coordinator = restarted
    restarted.wait_ready()
    wait_for(lambda: net.owner.get_job(job_id).status == JobStatus.Failed, 30, "failJob after the restart")
    assert client_reg.claimable(net.client_account.address) - before == escrow
    view = http_json("GET", f"{restarted.url}/v1/jobs/{job_id}")[1]
    assert view["status"] == "failed" and "restarted" in view["error"]
    # and the restarted coordinator serves new jobs
    assert (
        net.client.submit("after restart", model="tiny-chat", max_tokens=3).text
        == reference_text(net, "after restart", 3)[1]
    )


def test_coordinator_killed_while_settling_finishes_the_settlement_after_restart(net: Net) -> None:
    """Every worker handed its signed commitment, then the coordinator dies right before settleJobs (a test hook
    SIGKILLs it there): the restarted coordinator settles the job from its saved state and the commitments it holds,
    so the workers are paid, not refunded."""
    from coordinator.settling import DIE_BEFORE_FINALIZE_ENV

    base = net.coordinator
    base.stop()
    dying = CoordinatorProc(
        base.key, base.args, base.log_path, base.port, env={DIE_BEFORE_FINALIZE_ENV: "1"}
    ).start()
    net.coordinator = dying
    dying.wait_ready()
    nodes = [w.address for w in net.workers.values()]
    before = claimables(net.owner, [*nodes, net.coordinator_address, net.client_account.address])
    prompt = "settle after a crash"
    job_id = net.client.pay(prompt, net.model_id, 6)
    net.client.hand_over(dying.url, job_id, prompt, {})
    assert dying.wait(timeout=60) == -signal.SIGKILL, dying.log()[-3000:]
    assert f"dying before settleJobs of job {job_id}" in dying.log()
    assert net.owner.get_job(job_id).status == JobStatus.Open

    restarted = CoordinatorProc(base.key, base.args, base.log_path, base.port).start()
    net.coordinator = restarted
    restarted.wait_ready()
    wait_for(
        lambda: net.owner.get_job(job_id).status == JobStatus.Settled, 30, "settleJobs after the restart"
    )
    _, expected_text = reference_text(net, prompt, 6)
    job = net.owner.get_job(job_id)
    assert net.owner.output_hash(job_id) == keccak(expected_text.encode())
    view = net.client.wait(restarted.url, job_id, timeout_s=30)
    assert view["status"] == "finalized" and view["output"] == expected_text and view["finalize_tx"]
    [settlement] = [s for s in net.owner.settlements_in(view["finalize_tx"]) if s.job_id == job_id]
    hops = settlement.sorted_hops()
    assert len(hops) >= 3 and all(c["settled"] for c in view["commitments"])
    layer_tokens = [r["layer_tokens"] for r in view["route"]]
    assert len(layer_tokens) == len(hops) and all(t > 0 for t in layer_tokens)
    split = expected_split(
        layer_tokens,
        [True] * len(hops),
        price_per_layer_token=PRICE,
        coordinator_fee_bps=net.owner.coordinator_fee_bps(),
        escrow=job.escrow,
    )
    after = claimables(net.owner, [*nodes, net.coordinator_address, net.client_account.address])
    by_node = {r["node"]: pay for r, pay in zip(view["route"], split.per_hop, strict=True)}
    for h in hops:
        assert (
            by_node[h.node.lower()] > 0
            and after[h.node.lower()] - before[h.node.lower()] == by_node[h.node.lower()]
        )
    assert (
        after[net.coordinator_address.lower()] - before[net.coordinator_address.lower()]
        == split.coordinator_fee
    )
    assert (
        after[net.client_account.address.lower()] - before[net.client_account.address.lower()] == split.refund
    )


def test_cheating_worker_is_caught_refereed_excluded_left_unpaid_and_slashed(net: Net, accounts) -> None:
    """A worker started with --perturb-outputs on layers 2:4 is put on the route (the two honest replicas are
    paused while the job is routed, then resumed); a verified step disagrees with a replica, the third worker
    referees, the cheat is excluded, its evidence recorded, its hop left out of the settlement, and the job is
    re-run on honest workers. After the settlement the registry draws the two honest replicas as verifiers of
    the cheat's committed hop; both find it guilty (POST /v1/verify) and the coordinator slashes it on chain: its
    stake goes to the job's client."""
    import sqlite3

    cheat = start_worker(
        net.tmp,
        accounts[8],
        net.dep_file,
        "tiny-chat",
        net.store,
        "--layers",
        "2:4",
        "--perturb-outputs",
        "0.5",
        "--drain-grace-s",
        "2",
        name="cheat",
    )
    try:
        cheat.wait_ready(timeout=300)
        wait_for(lambda: cheat.address.lower() in workers_view(net), 60, "the cheat in the directory")
        honest = [w for w in net.workers.values() if workers_view(net)[w.address.lower()]["span"] == [2, 4]]
        assert len(honest) == 2
        prompt = "catch the cheat"
        n = 300
        expected_tokens, expected = reference_text(net, prompt, n)
        assert len(expected_tokens) > 60
        stake_before = net.owner.get_node(cheat.address).stake

        for w in honest:  # paused: their /health probes time out, so routing takes the cheat
            w.signal(signal.SIGSTOP)
        try:
            wait_for(
                lambda: all(workers_view(net)[w.address.lower()]["down"] for w in honest), 20, "replicas down"
            )
            job_id = net.client.pay(prompt, net.model_id, n)
            net.client.hand_over(net.coordinator.url, job_id, prompt, {})
            wait_for(
                lambda: job_status(net, job_id) not in ("prompt", "routed"),
                20,
                "the route chosen",
                interval=0.02,
            )
        finally:
            for w in honest:
                w.signal(signal.SIGCONT)
        first = http_json("GET", f"{net.coordinator.url}/v1/jobs/{job_id}")[1]["route"]
        assert [(h["node"], h["span"]) for h in first if h["reason"] == "route"][1] == (
            cheat.address.lower(),
            [2, 4],
        )

        view = net.client.wait(net.coordinator.url, job_id, timeout_s=180)
        job = net.client.check(job_id, view)
        assert view["output"] == expected and net.owner.output_hash(job.job_id) == keccak(expected.encode())

        assert workers_view(net)[cheat.address.lower()]["excluded"] is True

        def slashes() -> list[Any]:
            events = net.owner.get_logs(0, net.owner.block_number(), ["NodeSlashed"])
            return [e for e in events if int(e.args["jobId"]) == job_id]

        # the draw needs blockhash(closeBlock + 2): mine past it, then the coordinator's check slashes the cheat
        for _ in range(3):
            rpc(net.owner.w3, "evm_mine", [])
        wait_for(lambda: bool(slashes()), 120, "the cheat slashed on chain by the drawn verifiers' verdicts")
        [slashed] = slashes()
        assert slashed.args["node"] == cheat.address and slashed.args["client"] == net.client_account.address

        def report() -> Any:
            view = http_json("GET", f"{net.coordinator.url}/v1/jobs/{job_id}")[1]["verification"]
            return view if view["done"] else None

        # the status endpoint reports the cheat; the answer came from the live re-run, so nothing is re-run
        verification = wait_for(report, 60, "the check's report")
        assert verification["status"] == "cheat_detected" and verification["slashed"] == [
            cheat.address.lower()
        ]
        assert verification["answer_affected"] is False and verification["replaced_count"] == 0
        node = net.owner.get_node(cheat.address)
        assert node.jailed and node.stake < stake_before
        assert int(slashed.args["guiltyStake"]) == int(slashed.args["drawnStake"])  # both honest replicas
        # the live evidence is in the coordinator's database (no transaction of its own), its hash the keccak of
        # the record; the dispute's record carries the slash transaction
        db = sqlite3.connect(net.tmp / "coordinator" / "coordinator.db")
        ((evidence, evidence_hash, tx_hash),) = db.execute(
            "SELECT evidence, evidence_hash, tx_hash FROM coordinator_slashes WHERE job_id = ? AND tx_hash IS NULL",
            (job_id,),
        ).fetchall()
        disputed = db.execute(
            "SELECT tx_hash FROM coordinator_slashes WHERE job_id = ? AND tx_hash IS NOT NULL", (job_id,)
        ).fetchall()
        db.close()
        assert disputed == [(slashed.tx_hash,)]
        record = json.loads(evidence)
        assert record["node"] == cheat.address.lower() and record["span"] == [2, 4] and tx_hash is None
        assert {record["replica"], record["referee"]} <= {w.address.lower() for w in honest}
        assert evidence_hash == "0x" + keccak(evidence.encode()).hex()
        # the cheat's signed commitment is left out of the settlement
        [settlement] = [s for s in net.owner.settlements_in(view["finalize_tx"]) if s.job_id == job_id]
        assert cheat.address.lower() not in {h.node.lower() for h in settlement.hops}
        # the re-run went through honest workers; the cheat's hop is paid nothing
        by_node = {(r["node"], tuple(r["span"])): r for r in view["route"]}
        assert by_node[(cheat.address.lower(), (2, 4))]["layer_tokens"] == 0
        assert any(
            node in {w.address.lower() for w in honest} and span == (2, 4) and r["reason"] == "rerun"
            for (node, span), r in by_node.items()
        )
        # and the excluded cheat is never routed again
        again = net.client.submit("after the cheat", model="tiny-chat", max_tokens=4)
        assert cheat.address.lower() not in {h["node"] for h in again.route}
        assert again.text == reference_text(net, "after the cheat", 4)[1]
    finally:
        cheat.stop()
