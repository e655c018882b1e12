"""The dashboard under attack and under a bad chain node, against a real registry on anvil: errors that would leak
the RPC URL (and its API key), a flaky node (no event folded twice), a reorg or restarted node (no stale jobs), a
flood of models registered by a stranger (served models still listed, the page bounded), a settlement that is
not a direct settleJobs call."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import replace

import pytest
from eth_account.signers.local import LocalAccount
from web3 import HTTPProvider, Web3

from shardnet.chain.deploy import deploy_registry
from shardnet.chain.devnet import free_port
from shardnet.chain.registry import Registry, VerificationPayment
from shardnet.dashboard.snapshot import MAX_IDLE_MODELS, MAX_MODELS, ChainSnapshot
from shardnet.dashboard.web import EncodedSnapshot, SnapshotSource, chain_source
from shardnet.span import LayerSpan
from tests.chain.registry_world import World, build_world
from tests.dashboard.flaky_rpc import FlakyRelay, flaky_relay
from tests.fixtures_chain import TEST_PARAMS, DevChain


@pytest.fixture
def world(anvil: DevChain, accounts: list[LocalAccount], registry_for: Callable[..., Registry]) -> World:
    return build_world(anvil, accounts, registry_for)


def reader_at(world: World, rpc_url: str) -> ChainSnapshot:
    w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": 10}))
    return ChainSnapshot(
        Registry(w3, world.gov.address, deploy_block=world.gov.deploy_block), min_interval_s=0
    )


def test_a_chain_error_on_the_page_never_holds_the_rpc_url(world: World) -> None:
    secret = "v3-SECRET-API-KEY-1234"
    doc = reader_at(world, f"http://127.0.0.1:{free_port()}/{secret}").current()
    assert doc["chain"]["error"] and "does not answer" in doc["chain"]["error"]
    assert secret not in json.dumps(doc) and "127.0.0.1" not in json.dumps(doc)


def test_a_flaky_node_never_makes_an_event_count_twice(world: World, anvil: DevChain) -> None:
    with flaky_relay(anvil.rpc_url) as (relay, url):
        snapshot = reader_at(world, url)
        job_id = world.submit()
        assert snapshot.current()["totals"]["jobs"] == 1
        settled = world.settle(job_id).event("JobSettled").args
        relay.fail("eth_getTransactionReceipt")  # the settle tx's gas, read while folding JobSettled
        assert snapshot.current()["chain"]["error"] and relay.failed == ["eth_getTransactionReceipt"]
        doc = snapshot.current()
    assert doc["chain"]["error"] is None
    totals = doc["totals"]
    assert (totals["jobs"], totals["settled"], totals["open"]) == (1, 1, 0)
    assert totals["paid_to_nodes_wei"] == str(settled["paidToNodes"])
    assert totals["refunded_wei"] == str(settled["refund"])
    earned = sum(int(n["earned_wei"]) for n in doc["nodes"])
    assert earned == settled["paidToNodes"]


def test_a_reorg_or_a_restarted_node_drops_what_is_no_longer_on_chain(world: World, anvil: DevChain) -> None:
    snapshot = ChainSnapshot(world.registry_for(None), min_interval_s=0)
    before = anvil.snapshot()
    job_id = world.submit()
    world.settle(job_id)
    assert [j["job_id"] for j in snapshot.current()["jobs"]] == [job_id]
    anvil.revert(before)
    anvil.mine(6)  # the new chain is as long as the old one: only the hashes tell them apart
    doc = snapshot.current()
    assert doc["jobs"] == [] and doc["totals"]["jobs"] == 0 and doc["totals"]["paid_wei"] == "0"
    assert snapshot.resets == 1
    again = world.submit()
    assert [j["job_id"] for j in snapshot.current()["jobs"]] == [again]


def test_a_flood_of_models_hides_no_served_model_and_keeps_the_page_bounded(world: World) -> None:
    for i in range(MAX_MODELS + 6):
        world.reg(world.outsider).register_model(f"junk-{i}", "bafkjunk", 65535, 1)
    served = int(world.gov.register_model("late", "bafklate", 4, 1).event("ModelRegistered").args["modelId"])
    world.reg(world.node1).announce_shard(served, LayerSpan(0, 4))
    for i in range(3):
        world.reg(world.outsider).register_model(f"junk-after-{i}", "bafkjunk", 65535, 1)
    doc = ChainSnapshot(world.registry_for(None), min_interval_s=0).current()
    listed = {m["model_id"]: m for m in doc["models"]}
    assert served > MAX_MODELS and world.model_id in listed and served in listed
    assert listed[served]["replicas"] == [1, 1, 1, 1]
    idle = [m for m in doc["models"] if not m["assignments"]]
    assert len(idle) <= MAX_IDLE_MODELS
    assert max(m["model_id"] for m in idle) == served + 3  # the newest are the ones shown


def test_a_settlement_not_sent_as_a_direct_settle_call_does_not_wedge_the_reader(world: World) -> None:
    world.submit()
    snapshot = ChainSnapshot(world.registry_for(None), min_interval_s=0)
    submitted = next(
        e
        for e in world.gov.get_logs(world.gov.deploy_block, world.chain.block_number())
        if e.name == "JobSubmitted"
    )
    assert snapshot.settlements(submitted.tx_hash) == []


def test_totals_account_for_every_wei_escrowed_with_a_protocol_fee(
    isolated_anvil: DevChain, accounts: list[LocalAccount]
) -> None:
    anvil = isolated_anvil
    deployment = deploy_registry(anvil.w3, accounts[0], replace(TEST_PARAMS, protocol_fee_bps=1000))

    def registry_for(account: LocalAccount | None) -> Registry:
        return Registry(anvil.w3, deployment.registry, account, deploy_block=deployment.deploy_block)

    world = build_world(anvil, accounts, registry_for)
    snapshot = ChainSnapshot(world.registry_for(None), min_interval_s=0)
    settled, failed, still_open = world.submit(), world.submit(), world.submit()
    world.settle(settled)
    world.gov.fail_job(failed, world.record(failed), "no route")
    totals = snapshot.current()["totals"]
    protocol = world.gov.protocol_fees()
    assert protocol > 0 and totals["protocol_fees_wei"] == str(protocol)
    open_escrow = world.gov.open_escrow()
    assert open_escrow == world.quote() and still_open
    accounted = int(totals["paid_wei"]) + protocol + int(totals["refunded_wei"]) + open_escrow
    assert int(totals["escrowed_wei"]) == accounted


def test_totals_account_for_the_verification_share_settlements_hold(
    isolated_anvil: DevChain, accounts: list[LocalAccount]
) -> None:
    anvil = isolated_anvil
    params = replace(TEST_PARAMS, protocol_fee_bps=1000, verify_bps=1000)
    deployment = deploy_registry(anvil.w3, accounts[0], params)

    def registry_for(account: LocalAccount | None) -> Registry:
        return Registry(anvil.w3, deployment.registry, account, deploy_block=deployment.deploy_block)

    world = build_world(anvil, accounts, registry_for)
    snapshot = ChainSnapshot(world.registry_for(None), min_interval_s=0)
    held_job, refunded_job = world.submit(), world.submit()
    world.settle(held_job)
    close = world.settle(refunded_job).block_number
    world.chain.mine(3)
    # its coordinator pays nobody for the second job: the whole share goes back to the client
    world.gov.pay_verifiers([VerificationPayment(refunded_job, world.record(refunded_job), close, [])])
    totals = snapshot.current()["totals"]
    protocol = world.gov.protocol_fees()
    assert protocol > 0 and totals["protocol_fees_wei"] == str(protocol)
    held = world.gov.verification_held()
    assert held == world.gov.verification_share(world.record(held_job)) > 0
    accounted = int(totals["paid_wei"]) + protocol + int(totals["refunded_wei"]) + held
    assert int(totals["escrowed_wei"]) == accounted


def test_the_snapshot_json_is_encoded_once_per_document() -> None:
    encoded = EncodedSnapshot()
    doc = {"jobs": [{"escrow_wei": str(2**200)}]}
    first = encoded.of(doc)
    assert encoded.of(doc) is first and json.loads(first) == doc
    assert encoded.of(dict(doc)) is not first  # a new document (a refresh) is encoded again


def test_a_slow_chain_node_delays_one_refresh_not_the_pages(world: World, anvil: DevChain) -> None:
    async def polls(source: SnapshotSource, relay: FlakyRelay) -> list[float]:
        await source()  # the first document
        relay.delay_s = 0.5  # the node turns slow: every refresh now takes seconds
        world.submit()
        refreshing = asyncio.create_task(source())
        await asyncio.sleep(0.3)
        waits = []
        for _ in range(5):
            start = time.monotonic()
            await source()
            waits.append(time.monotonic() - start)
        doc = await refreshing
        assert doc["totals"]["jobs"] == 1  # the slow refresh still lands
        return waits

    with flaky_relay(anvil.rpc_url) as (relay, url):
        waits = asyncio.run(polls(chain_source(reader_at(world, url)), relay))
    assert max(waits) < 0.2, waits  # the last document, at once, while the slow refresh runs


def test_catching_up_a_chain_full_of_events_decodes_each_about_once(world: World, anvil: DevChain) -> None:
    for i in range(30):
        world.reg(world.outsider).register_model(f"spam-{i}", "bafkspam", 2, 1)
    total = len(world.gov.get_logs(world.gov.deploy_block, world.chain.block_number()))
    with flaky_relay(anvil.rpc_url) as (relay, url):
        w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": 10}))
        registry = Registry(w3, world.gov.address, deploy_block=world.gov.deploy_block)
        snapshot = ChainSnapshot(registry, min_interval_s=0, max_events=4)
        refreshes = 1
        while snapshot.current()["chain"]["syncing"]:
            refreshes += 1
            assert refreshes < 100
    assert refreshes >= total // 4
    # every refresh used to ask for (and decode) all the logs from where it stopped to the head again
    assert sum(relay.logs_answered) <= 3 * total, (total, relay.logs_answered)
