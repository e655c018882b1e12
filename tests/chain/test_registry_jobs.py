"""ShardRegistry jobs: submit, route, failover hops, commitments, finalize with its split, fail, cancel."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount

from shardnet.chain.registry import HopInfo, JobInfo, JobStatus, Registry
from shardnet.span import LayerSpan
from tests.chain.registry_world import (
    INPUT,
    MAX_TOKENS,
    NUM_LAYERS,
    OUTPUT,
    PRICE,
    World,
    assert_solvent,
    build_world,
    reverts,
)
from tests.fixtures_chain import TEST_PARAMS, DevChain

ZERO = "0x0000000000000000000000000000000000000000"
C1, C2, C3 = b"\x11" * 32, b"\x22" * 32, b"\x33" * 32
POSITIONS = MAX_TOKENS + TEST_PARAMS.max_prompt_tokens
FEE_BPS = TEST_PARAMS.coordinator_fee_bps


@pytest.fixture
def world(anvil: DevChain, accounts: list[LocalAccount], registry_for: Callable[..., Registry]) -> World:
    return build_world(anvil, accounts, registry_for)


def open_jobs(world: World, node: LocalAccount) -> int:
    return world.gov.get_node(node.address).open_jobs


# ---------------------------------------------------------------- submit


def test_submit_job_escrows_payment(world: World) -> None:
    value = world.quote() + 123  # overpaying is fine: the rest comes back at settlement
    result = world.reg(world.client).submit_job(world.model_id, INPUT, MAX_TOKENS, value)
    deadline = world.chain.timestamp() + TEST_PARAMS.job_timeout
    assert result.event("JobSubmitted").args == {
        "jobId": 1, "client": world.client.address, "modelId": world.model_id, "inputHash": INPUT,
        "maxTokens": MAX_TOKENS, "escrow": value, "deadline": deadline,
    }
    assert world.gov.get_job(1) == JobInfo(
        1, world.client.address, world.model_id, INPUT, MAX_TOKENS, value, deadline, JobStatus.Submitted, ZERO, bytes(32)
    )
    assert (world.gov.job_count(), world.gov.total_escrow(), world.gov.get_hops(1)) == (1, value, [])
    assert_solvent(world.gov)


def test_submit_job_reverts(world: World) -> None:
    cli = world.reg(world.client)
    quote = world.quote()
    with reverts("ShardRegistryEscrowTooLow", provided=quote - 1, required=quote):
        cli.submit_job(world.model_id, INPUT, MAX_TOKENS, quote - 1)
    with reverts("ShardRegistryUnknownModel", modelId=7):
        cli.submit_job(7, INPUT, MAX_TOKENS, quote)
    with reverts("ShardRegistryZeroAmount"):
        cli.submit_job(world.model_id, INPUT, 0, quote)


@pytest.mark.parametrize("job_id", [0, 1])
def test_unknown_job_views_revert(world: World, job_id: int) -> None:
    with reverts("ShardRegistryUnknownJob", jobId=job_id):
        world.gov.get_job(job_id)
    with reverts("ShardRegistryUnknownJob", jobId=job_id):
        world.gov.get_hops(job_id)


# ---------------------------------------------------------------- route


def test_assign_route(world: World) -> None:
    job_id = world.submit()
    hops = [(world.node1.address, LayerSpan(0, 2)), (world.node2.address, LayerSpan(2, 4))]
    ev = world.gov.assign_route(job_id, hops).event("JobRouted")
    assert ev.args == {
        "jobId": job_id, "coordinator": world.owner.address,
        "nodes": [world.node1.address, world.node2.address], "starts": [0, 2], "ends": [2, 4],
    }
    job = world.gov.get_job(job_id)
    assert (job.status, job.coordinator) == (JobStatus.Routed, world.owner.address)
    assert world.gov.get_hops(job_id) == [
        HopInfo(0, world.node1.address, 0, 2, bytes(32)), HopInfo(1, world.node2.address, 2, 4, bytes(32))
    ]
    assert (open_jobs(world, world.node1), open_jobs(world, world.node2), open_jobs(world, world.node3)) == (1, 1, 0)


def test_route_through_a_node_serving_a_wider_span(world: World) -> None:
    job_id = world.submit()
    world.gov.assign_route(job_id, [(world.node3.address, LayerSpan(0, 1)), (world.node3.address, LayerSpan(1, 4))])
    assert open_jobs(world, world.node3) == 2


def test_assign_route_reverts(world: World) -> None:
    job_id = world.submit()
    gov, n1, n2, n3 = world.gov, world.node1.address, world.node2.address, world.node3.address
    with reverts("ShardRegistryNotCoordinator", account=world.outsider.address):
        world.reg(world.outsider).assign_route(job_id, [(n3, LayerSpan(0, 4))])
    with reverts("ShardRegistryUnknownJob", jobId=99):
        gov.assign_route(99, [(n3, LayerSpan(0, 4))])
    with reverts("ShardRegistryLengthMismatch", expected=2, got=1):
        gov._send("assignRoute", job_id, [n1, n2], [0], [2, 4])
    with reverts("ShardRegistryLengthMismatch", expected=1, got=2):
        gov._send("assignRoute", job_id, [n3], [0], [2, 4])
    with reverts("ShardRegistryRouteNotCovering", jobId=job_id):
        gov.assign_route(job_id, [])
    with reverts("ShardRegistryRouteNotCovering", jobId=job_id):
        gov.assign_route(job_id, [(n2, LayerSpan(2, 4))])  # does not start at 0
    with reverts("ShardRegistryRouteNotCovering", jobId=job_id):
        gov.assign_route(job_id, [(n1, LayerSpan(0, 2))])  # stops short of numLayers
    with reverts("ShardRegistryRouteNotCovering", jobId=job_id):
        gov.assign_route(job_id, [(n1, LayerSpan(0, 2)), (n3, LayerSpan(1, 4))])  # overlap
    with reverts("ShardRegistryInvalidSpan", start=0, end=0, numLayers=NUM_LAYERS):
        gov._send("assignRoute", job_id, [n1], [0], [0])
    with reverts("ShardRegistryInvalidSpan", start=0, end=5, numLayers=NUM_LAYERS):
        gov.assign_route(job_id, [(n3, LayerSpan(0, 5))])
    with reverts("ShardRegistryNodeNotServing", node=n1, start=0, end=4):
        gov.assign_route(job_id, [(n1, LayerSpan(0, 4))])
    with reverts("ShardRegistryNodeNotServing", node=world.spare.address, start=0, end=4):
        gov.assign_route(job_id, [(world.spare.address, LayerSpan(0, 4))])
    world.reg(world.node3).release_shard(world.shard3)
    with reverts("ShardRegistryNodeNotServing", node=n3, start=0, end=4):
        gov.assign_route(job_id, [(n3, LayerSpan(0, 4))])
    gov.slash(n2, b"\x01" * 32, 0)
    with reverts("ShardRegistryNodeJailed", node=n2):
        gov.assign_route(job_id, [(n1, LayerSpan(0, 2)), (n2, LayerSpan(2, 4))])
    world.reg(world.node3).announce_shard(world.model_id, LayerSpan(0, 4))
    gov.assign_route(job_id, [(n3, LayerSpan(0, 4))])
    with reverts("ShardRegistryInvalidJobStatus", jobId=job_id, status=JobStatus.Routed):
        gov.assign_route(job_id, [(n3, LayerSpan(0, 4))])


def test_routing_needs_a_model_of_the_job(world: World) -> None:
    other = int(world.gov.register_model("other", "bafkreiother", NUM_LAYERS, PRICE).event("ModelRegistered").args["modelId"])
    job_id = world.submit()
    world.reg(world.spare).register_node("http://127.0.0.1:8300", TEST_PARAMS.min_stake)
    world.reg(world.spare).announce_shard(other, LayerSpan(0, 4))  # serves another model only
    with reverts("ShardRegistryNodeNotServing", node=world.spare.address, start=0, end=4):
        world.gov.assign_route(job_id, [(world.spare.address, LayerSpan(0, 4))])


# ---------------------------------------------------------------- failover hops


def test_add_hop(world: World) -> None:
    job_id = world.routed_job()
    ev = world.gov.add_hop(job_id, world.node3.address, LayerSpan(2, 4)).event("HopAdded")
    assert ev.args == {"jobId": job_id, "hopIndex": 2, "node": world.node3.address, "start": 2, "end": 4}
    assert world.gov.get_hops(job_id)[2] == HopInfo(2, world.node3.address, 2, 4, bytes(32))
    assert open_jobs(world, world.node3) == 1


def test_add_hop_reverts(world: World) -> None:
    submitted = world.submit()
    job_id = world.routed_job()
    n3 = world.node3.address
    with reverts("ShardRegistryNotCoordinator", account=world.outsider.address):
        world.reg(world.outsider).add_hop(job_id, n3, LayerSpan(2, 4))
    with reverts("ShardRegistryUnknownJob", jobId=99):
        world.gov.add_hop(99, n3, LayerSpan(2, 4))
    with reverts("ShardRegistryInvalidJobStatus", jobId=submitted, status=JobStatus.Submitted):
        world.gov.add_hop(submitted, n3, LayerSpan(2, 4))
    with reverts("ShardRegistryNotJobCoordinator", jobId=job_id, account=world.coordinator2.address):
        world.reg(world.coordinator2).add_hop(job_id, n3, LayerSpan(2, 4))
    with reverts("ShardRegistryInvalidSpan", start=2, end=9, numLayers=NUM_LAYERS):
        world.gov.add_hop(job_id, n3, LayerSpan(2, 9))
    with reverts("ShardRegistryNodeNotServing", node=world.node1.address, start=2, end=4):
        world.gov.add_hop(job_id, world.node1.address, LayerSpan(2, 4))


def test_revoked_coordinator_loses_its_jobs(world: World) -> None:
    job_id = world.routed_job()
    world.gov.set_coordinator(world.owner.address, "", False)
    with reverts("ShardRegistryNotCoordinator", account=world.owner.address):
        world.gov.finalize_job(job_id, OUTPUT, [0, 0])


# ---------------------------------------------------------------- commitments


def test_post_commitment(world: World) -> None:
    job_id = world.routed_job()
    ev = world.reg(world.node2).post_commitment(job_id, C2).event("CommitmentPosted")
    assert ev.args == {"jobId": job_id, "node": world.node2.address, "hopIndex": 1, "commitment": C2}
    assert [h.commitment for h in world.gov.get_hops(job_id)] == [bytes(32), C2]


def test_node_on_two_hops_commits_once_per_hop(world: World) -> None:
    job_id = world.submit()
    world.gov.assign_route(job_id, [(world.node3.address, LayerSpan(0, 2)), (world.node3.address, LayerSpan(2, 4))])
    reg3 = world.reg(world.node3)
    assert reg3.post_commitment(job_id, C1).event("CommitmentPosted").args["hopIndex"] == 0
    assert reg3.post_commitment(job_id, C2).event("CommitmentPosted").args["hopIndex"] == 1
    with reverts("ShardRegistryAlreadyCommitted", jobId=job_id, node=world.node3.address):
        reg3.post_commitment(job_id, C3)


def test_post_commitment_reverts(world: World) -> None:
    submitted = world.submit()
    job_id = world.routed_job()
    reg1 = world.reg(world.node1)
    with reverts("ShardRegistryUnknownJob", jobId=99):
        reg1.post_commitment(99, C1)
    with reverts("ShardRegistryInvalidJobStatus", jobId=submitted, status=JobStatus.Submitted):
        reg1.post_commitment(submitted, C1)
    with reverts("ShardRegistryZeroCommitment"):
        reg1.post_commitment(job_id, bytes(32))
    with reverts("ShardRegistryNotRoutedNode", jobId=job_id, account=world.node3.address):
        world.reg(world.node3).post_commitment(job_id, C3)
    reg1.post_commitment(job_id, C1)
    with reverts("ShardRegistryAlreadyCommitted", jobId=job_id, node=world.node1.address):
        reg1.post_commitment(job_id, C1)
    world.gov.finalize_job(job_id, OUTPUT, [0, 0])
    with reverts("ShardRegistryInvalidJobStatus", jobId=job_id, status=JobStatus.Finalized):
        world.reg(world.node2).post_commitment(job_id, C2)


# ---------------------------------------------------------------- finalize


def test_finalize_splits_escrow_and_skips_uncommitted_hops(world: World) -> None:
    escrow = world.quote() + 1_000_000
    job_id = world.routed_job(escrow)
    world.gov.add_hop(job_id, world.node3.address, LayerSpan(2, 4))  # failover for node2, which never commits
    world.reg(world.node1).post_commitment(job_id, C1)
    world.reg(world.node3).post_commitment(job_id, C3)
    layer_tokens = [2 * 20, 2 * 7, 2 * 13]  # node2's hop is claimed but carries no commitment
    result = world.gov.finalize_job(job_id, OUTPUT, layer_tokens)
    paid = (2 * 20 + 2 * 13) * PRICE
    fee = paid * FEE_BPS // 10_000
    assert result.event("JobFinalized").args == {
        "jobId": job_id, "outputHash": OUTPUT, "paidToNodes": paid, "coordinatorFee": fee,
        "refund": escrow - paid - fee,
    }
    gov = world.gov
    assert gov.claimable(world.node1.address) == 2 * 20 * PRICE
    assert gov.claimable(world.node2.address) == 0
    assert gov.claimable(world.node3.address) == 2 * 13 * PRICE
    assert gov.claimable(world.owner.address) == fee
    assert gov.claimable(world.client.address) == escrow - paid - fee
    job = gov.get_job(job_id)
    assert (job.status, job.output_hash, job.escrow) == (JobStatus.Finalized, OUTPUT, escrow)
    assert (gov.total_escrow(), gov.total_claimable()) == (0, escrow)
    assert [open_jobs(world, n) for n in (world.node1, world.node2, world.node3)] == [0, 0, 0]
    assert_solvent(gov)


def test_finalize_at_the_billing_bound_uses_the_whole_quote(world: World) -> None:
    job_id = world.routed_job()
    world.reg(world.node1).post_commitment(job_id, C1)
    world.reg(world.node2).post_commitment(job_id, C2)
    fin = world.gov.finalize_job(job_id, OUTPUT, [2 * POSITIONS, 2 * POSITIONS]).event("JobFinalized")
    assert fin.args["refund"] == 0 and fin.args["paidToNodes"] + fin.args["coordinatorFee"] == world.quote()


def test_finalize_reverts(world: World) -> None:
    submitted = world.submit()
    job_id = world.routed_job()
    gov = world.gov
    with reverts("ShardRegistryNotCoordinator", account=world.outsider.address):
        world.reg(world.outsider).finalize_job(job_id, OUTPUT, [0, 0])
    with reverts("ShardRegistryUnknownJob", jobId=99):
        gov.finalize_job(99, OUTPUT, [0, 0])
    with reverts("ShardRegistryInvalidJobStatus", jobId=submitted, status=JobStatus.Submitted):
        gov.finalize_job(submitted, OUTPUT, [])
    with reverts("ShardRegistryNotJobCoordinator", jobId=job_id, account=world.coordinator2.address):
        world.reg(world.coordinator2).finalize_job(job_id, OUTPUT, [0, 0])
    with reverts("ShardRegistryLengthMismatch", expected=2, got=1):
        gov.finalize_job(job_id, OUTPUT, [0])
    with reverts("ShardRegistryLayerTokensTooHigh", hopIndex=1, layerTokens=2 * POSITIONS + 1, maximum=2 * POSITIONS):
        gov.finalize_job(job_id, OUTPUT, [0, 2 * POSITIONS + 1])
    # a failover hop lets the claimed work exceed what the client paid for
    gov.add_hop(job_id, world.node3.address, LayerSpan(0, 4))
    for node, c in ((world.node1, C1), (world.node2, C2), (world.node3, C3)):
        world.reg(node).post_commitment(job_id, c)
    tokens = [2 * POSITIONS, 2 * POSITIONS, 4 * POSITIONS]
    paid = sum(tokens) * PRICE
    with reverts("ShardRegistryPayoutExceedsEscrow", payout=paid + paid * FEE_BPS // 10_000, escrow=world.quote()):
        gov.finalize_job(job_id, OUTPUT, tokens)
    gov.finalize_job(job_id, OUTPUT, [1, 1, 1])
    with reverts("ShardRegistryInvalidJobStatus", jobId=job_id, status=JobStatus.Finalized):
        gov.finalize_job(job_id, OUTPUT, [1, 1, 1])


# ---------------------------------------------------------------- fail and cancel


def test_fail_routed_job_refunds_everything(world: World) -> None:
    escrow = world.quote() + 5
    job_id = world.routed_job(escrow)
    world.reg(world.node1).post_commitment(job_id, C1)
    ev = world.gov.fail_job(job_id, "worker 2 died").event("JobFailed")
    assert ev.args == {"jobId": job_id, "reason": "worker 2 died", "refund": escrow}
    assert world.gov.get_job(job_id).status == JobStatus.Failed
    assert world.gov.claimable(world.client.address) == escrow
    assert world.gov.claimable(world.node1.address) == 0
    assert (open_jobs(world, world.node1), open_jobs(world, world.node2), world.gov.total_escrow()) == (0, 0, 0)
    assert_solvent(world.gov)


def test_any_coordinator_fails_an_unrouted_job(world: World) -> None:
    job_id = world.submit()
    ev = world.reg(world.coordinator2).fail_job(job_id, "no route").event("JobFailed")
    assert ev.args["refund"] == world.quote()


def test_fail_job_reverts(world: World) -> None:
    job_id = world.routed_job()
    with reverts("ShardRegistryNotCoordinator", account=world.client.address):
        world.reg(world.client).fail_job(job_id, "x")
    with reverts("ShardRegistryUnknownJob", jobId=99):
        world.gov.fail_job(99, "x")
    with reverts("ShardRegistryNotJobCoordinator", jobId=job_id, account=world.coordinator2.address):
        world.reg(world.coordinator2).fail_job(job_id, "x")
    world.gov.fail_job(job_id, "x")
    with reverts("ShardRegistryInvalidJobStatus", jobId=job_id, status=JobStatus.Failed):
        world.gov.fail_job(job_id, "again")


def test_cancel_after_deadline_refunds_and_frees_nodes(world: World) -> None:
    job_id = world.routed_job()
    cli = world.reg(world.client)
    deadline = cli.get_job(job_id).deadline
    with reverts("ShardRegistryDeadlineNotReached", jobId=job_id, deadline=deadline):
        cli.cancel_job(job_id)
    world.chain.advance_time(TEST_PARAMS.job_timeout + 1)
    ev = cli.cancel_job(job_id).event("JobCancelled")
    assert ev.args == {"jobId": job_id, "refund": world.quote()}
    assert cli.get_job(job_id).status == JobStatus.Cancelled
    assert cli.claimable(world.client.address) == world.quote()
    assert (open_jobs(world, world.node1), open_jobs(world, world.node2)) == (0, 0)
    assert_solvent(cli)
    with reverts("ShardRegistryInvalidJobStatus", jobId=job_id, status=JobStatus.Cancelled):
        cli.cancel_job(job_id)
    with reverts("ShardRegistryInvalidJobStatus", jobId=job_id, status=JobStatus.Cancelled):
        world.gov.finalize_job(job_id, OUTPUT, [0, 0])


def test_cancel_job_reverts(world: World) -> None:
    job_id = world.submit()
    with reverts("ShardRegistryUnknownJob", jobId=99):
        world.reg(world.client).cancel_job(99)
    with reverts("ShardRegistryNotJobClient", jobId=job_id, account=world.outsider.address):
        world.reg(world.outsider).cancel_job(job_id)
    world.chain.advance_time(TEST_PARAMS.job_timeout + 1)
    world.gov.fail_job(job_id, "expired")  # a coordinator may still fail it first
    with reverts("ShardRegistryInvalidJobStatus", jobId=job_id, status=JobStatus.Failed):
        world.reg(world.client).cancel_job(job_id)
