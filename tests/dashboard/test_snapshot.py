"""The dashboard's chain snapshot against a real registry on anvil: jobs, payout split, earnings, totals, coverage,
and incremental reading (each block's logs read once, each event folded once)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount

from shardnet.chain.registry import Registry
from shardnet.dashboard.coverage import replicas_per_layer, uncovered_ranges
from shardnet.dashboard.snapshot import ChainSnapshot
from shardnet.span import LayerSpan
from tests.chain.registry_world import MIN_STAKE, POSITIONS, STEPS, World, build_world
from tests.fixtures_chain import TEST_PARAMS, DevChain


@pytest.fixture
def world(anvil: DevChain, accounts: list[LocalAccount], registry_for: Callable[..., Registry]) -> World:
    return build_world(anvil, accounts, registry_for)


def snapshot_of(world: World) -> ChainSnapshot:
    return ChainSnapshot(world.registry_for(None), min_interval_s=0)


def model_doc(doc: dict, model_id: int) -> dict:
    return next(m for m in doc["models"] if m["model_id"] == model_id)


def test_coverage_counts_replicas_and_finds_holes() -> None:
    assert replicas_per_layer(6, [(0, 2), (2, 4), (2, 4), (4, 6)]) == [1, 1, 2, 2, 1, 1]
    assert replicas_per_layer(4, [(0, 2), (3, 9)]) == [1, 1, 0, 1]
    assert uncovered_ranges([1, 0, 0, 2, 0]) == [(1, 3), (4, 5)]
    assert uncovered_ranges([0, 0]) == [(0, 2)]
    assert uncovered_ranges([1, 1]) == []


def test_a_settled_job_shows_its_route_split_gas_and_totals(world: World) -> None:
    snapshot = snapshot_of(world)
    before = {n.address: world.gov.claimable(n.address) for n in (world.node1, world.node2)}
    job_id = world.submit()
    escrow = world.quote()
    settled = world.settle(job_id)
    doc = snapshot.current()

    job = next(j for j in doc["jobs"] if j["job_id"] == job_id)
    assert job["status"] == "settled"
    assert job["tokens"] == POSITIONS
    assert job["escrow_wei"] == str(escrow)
    pay = world.pay_of()
    assert [
        (h["node"], h["span"], h["positions"], h["steps"], h["paid_wei"], h["how"]) for h in job["route"]
    ] == [
        (world.node1.address, [0, 2], POSITIONS, STEPS, str(pay), "settled"),
        (world.node2.address, [2, 4], POSITIONS, STEPS, str(pay), "settled"),
    ]
    event = settled.event("JobSettled").args
    assert job["paid_to_nodes_wei"] == str(event["paidToNodes"]) == str(2 * pay)
    assert job["coordinator_fee_wei"] == str(event["coordinatorFee"])
    assert job["refund_wei"] == str(event["refund"])
    assert job["gas_close_tx"] == settled.gas_used and job["gas_submit"] > 21_000
    assert job["output_hash"] == "0x" + bytes(event["outputHash"]).hex()
    assert job["latency_s"] is not None and job["latency_s"] >= 0

    nodes = {n["address"]: n for n in doc["nodes"]}
    for node in (world.node1, world.node2):
        assert nodes[node.address]["earned_wei"] == str(pay)
        assert int(nodes[node.address]["claimable_wei"]) == before[node.address] + pay
        assert nodes[node.address]["stake_wei"] == str(MIN_STAKE)
    totals = doc["totals"]
    assert (totals["jobs"], totals["settled"], totals["open"], totals["tokens"]) == (1, 1, 0, POSITIONS)
    assert totals["escrowed_wei"] == str(escrow)
    assert totals["paid_wei"] == str(event["paidToNodes"] + event["coordinatorFee"])
    assert sum(doc["series"]["jobs"]) == 1 and len(doc["series"]["jobs"]) == 60
    assert doc["series"]["tokens_per_s"][-1] == round(POSITIONS / 60, 3)


def test_reading_is_incremental_and_folds_each_event_once(world: World) -> None:
    snapshot = snapshot_of(world)
    first_job = world.submit()
    doc = snapshot.current()
    assert [j["job_id"] for j in doc["jobs"]] == [first_job]
    ranges_before = list(snapshot.log_ranges)
    assert ranges_before[0][0] == world.gov.deploy_block

    second_job = world.submit()
    world.settle(second_job)
    doc = snapshot.current()
    doc = snapshot.current()  # nothing new: no event folded twice
    new_ranges = snapshot.log_ranges[len(ranges_before) :]
    assert (
        new_ranges and new_ranges[0][0] == ranges_before[-1][1] + 1
    )  # from the block after the last one read
    for (_, end), (start, _) in zip(snapshot.log_ranges, snapshot.log_ranges[1:], strict=False):
        assert start == end + 1  # no block read twice
    assert [j["job_id"] for j in doc["jobs"]] == [second_job, first_job]
    assert (doc["totals"]["jobs"], doc["totals"]["settled"], doc["totals"]["open"]) == (2, 1, 1)
    assert doc["chain"]["synced_to"] == doc["chain"]["head"] and not doc["chain"]["syncing"]


def test_a_late_dashboard_catches_up_a_bounded_range_per_refresh(world: World) -> None:
    world.submit()
    snapshot = ChainSnapshot(world.registry_for(None), min_interval_s=0, max_blocks=3)
    doc = snapshot.current()
    assert doc["chain"]["syncing"] and snapshot.log_ranges[-1][1] - snapshot.log_ranges[-1][0] == 2
    for _ in range(100):
        if not snapshot.current()["chain"]["syncing"]:
            break
    doc = snapshot.current()
    assert not doc["chain"]["syncing"] and doc["totals"]["jobs"] == 1


def test_coverage_follows_announcements_and_releases(world: World) -> None:
    snapshot = snapshot_of(world)
    model = model_doc(snapshot.current(), world.model_id)
    assert model["replicas"] == [2, 2, 2, 2] and model["uncovered"] == []
    spans = sorted((a["span"], a["node"]) for a in model["assignments"])
    assert spans == sorted(
        [([0, 2], world.node1.address), ([2, 4], world.node2.address), ([0, 4], world.node3.address)]
    )
    world.reg(world.node3).release_shard(world.shard3)
    world.reg(world.node2).release_shard(world.shard2)
    model = model_doc(snapshot.current(), world.model_id)
    assert model["replicas"] == [1, 1, 0, 0] and model["uncovered"] == [[2, 4]]
    world.reg(world.node3).announce_shard(world.model_id, LayerSpan(3, 4))
    model = model_doc(snapshot.current(), world.model_id)
    assert model["replicas"] == [1, 1, 0, 1] and model["uncovered"] == [[2, 3]]


def test_names_and_endpoints_are_carried_verbatim_for_the_page_to_show_as_text(world: World) -> None:
    hostile = '<img src=x onerror="document.title=1">'
    model_id = int(
        world.gov.register_model(hostile, "bafk<b>cid</b>", 2, 1).event("ModelRegistered").args["modelId"]
    )
    world.reg(world.spare).register_node("http://h/<script>alert(1)</script>", MIN_STAKE)
    doc = snapshot_of(world).current()
    assert model_doc(doc, model_id)["name"] == hostile
    assert model_doc(doc, model_id)["uncovered"] == [[0, 2]]
    nodes = {n["address"]: n for n in doc["nodes"]}
    assert nodes[world.spare.address]["endpoint"] == "http://h/<script>alert(1)</script>"


def test_failed_and_cancelled_jobs_show_their_refunds(world: World) -> None:
    snapshot = snapshot_of(world)
    failed = world.submit()
    cancelled = world.submit()
    failing = world.gov.fail_job(failed, world.record(failed), "no route <b>today</b>")
    world.chain.advance_time(TEST_PARAMS.job_timeout + 1)
    world.reg(world.client).cancel_job(cancelled)
    doc = snapshot.current()
    jobs = {j["job_id"]: j for j in doc["jobs"]}
    assert jobs[failed]["status"] == "failed" and jobs[failed]["fail_reason"] == "no route <b>today</b>"
    assert (
        jobs[failed]["refund_wei"]
        == str(failing.event("JobFailed").args["refund"])
        == jobs[failed]["escrow_wei"]
    )
    assert (
        jobs[cancelled]["status"] == "cancelled"
        and jobs[cancelled]["refund_wei"] == jobs[cancelled]["escrow_wei"]
    )
    totals = doc["totals"]
    assert (totals["failed"], totals["cancelled"], totals["open"], totals["paid_wei"]) == (1, 1, 0, "0")
    assert totals["refunded_wei"] == str(2 * world.quote())


def test_a_refresh_folds_a_bounded_number_of_events_and_resumes_inside_a_block(world: World) -> None:
    first, second = world.submit(), world.submit()
    world.settle(second)
    whole = snapshot_of(world).current()
    snapshot = ChainSnapshot(world.registry_for(None), min_interval_s=0, max_events=1)
    refreshes = 1
    while snapshot.current()["chain"]["syncing"]:
        refreshes += 1
        assert refreshes < 200
    doc = snapshot.current()
    assert refreshes >= 10  # the world's set-up alone emits more than ten events
    assert doc["totals"] == whole["totals"] and doc["jobs"] == whole["jobs"]
    assert [j["job_id"] for j in doc["jobs"]] == [second, first]
