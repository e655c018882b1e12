"""The holes an attack review found in the protocol v2 registry (issue 9), each attack run on a real anvil and shown
to fail: overbilling through postCommitment, sybils drawn as verifiers after the randomness is public, an endpoint
change locking a coordinator's jobs, overlapping hops paid twice, and expired tickets."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount

from shardnet.chain.commitments import sign_verdict
from shardnet.chain.deploy import deploy_registry
from shardnet.chain.registry import Registry, RegistryParams, Settlement, SlashEvidence
from shardnet.span import LayerSpan
from shardnet.wire.commitment import merkle_proof
from shardnet.wire.tickets import sign_ticket, ticket_proof
from tests.chain.registry_world import (
    MAX_TOKENS,
    MIN_STAKE,
    OUTPUT,
    POSITIONS,
    World,
    assert_solvent,
    build_world,
    leaves,
    reverts,
)
from tests.fixtures_chain import TEST_PARAMS, DevChain

PROMPT = 3  # the coordinator's ticket bounds a hop to prompt + max tokens
BOUND = PROMPT + MAX_TOKENS
PENDING, PAID, VOIDED = 1, 2, 3


@pytest.fixture
def world(anvil: DevChain, accounts: list[LocalAccount], registry_for: Callable[..., Registry]) -> World:
    return build_world(anvil, accounts, registry_for)


def _ticket(
    world: World,
    worker: LocalAccount,
    job_id: int,
    span: LayerSpan,
    *,
    bound: int = BOUND,
    expires_at: int = 2**40,
) -> tuple[str, int, int, bytes, bytes]:
    t = sign_ticket(
        world.owner,
        worker=worker.address,
        session_id=f"s{job_id}",
        job_id=job_id,
        span=span,
        max_positions=bound,
        expires_at=expires_at,
        chain_id=world.domain.chain_id,
        registry=world.domain.registry,
    )
    return ticket_proof(t)


# ---------------------------------------------------------------- 1. overbilling through postCommitment


def test_a_post_cannot_bill_more_positions_than_the_ticket_allows(world: World) -> None:
    job_id = world.submit()
    record = world.record(job_id)
    span = LayerSpan(2, 4)
    greedy = MAX_TOKENS + TEST_PARAMS.max_prompt_tokens  # the chain's own bound: ~87x the honest work before
    inflated = world.commit(world.node2, job_id, span, positions=greedy)
    with reverts("ShardRegistryPositionsTooHigh", jobId=job_id, hopIndex=0, positions=greedy, maximum=BOUND):
        world.reg(world.node2).post_commitment(
            (job_id, record), inflated, _ticket(world, world.node2, job_id, span)
        )
    # raising the bound in the ticket breaks the coordinator's signature
    session, _, expires, r, vs = _ticket(world, world.node2, job_id, span)
    with reverts("ShardRegistryBadTicket", jobId=job_id, worker=world.node2.address):
        world.reg(world.node2).post_commitment((job_id, record), inflated, (session, greedy, expires, r, vs))
    assert world.gov.job_state(job_id)[1:] == (0, 0)


def test_the_coordinators_settlement_replaces_an_inflated_post_within_the_window(world: World) -> None:
    job_id = world.submit()
    record = world.record(job_id)
    span = LayerSpan(2, 4)
    inflated = world.commit(world.node2, job_id, span, positions=BOUND, tag="inflated")
    ev = world.reg(world.node2).post_commitment(
        (job_id, record), inflated, _ticket(world, world.node2, job_id, span)
    )
    posted = ev.event("CommitmentPosted").args
    assert (
        posted["paid"] == world.pay_of(BOUND)
        and posted["payableAt"] == world.chain.timestamp() + TEST_PARAMS.dispute_window
    )
    assert world.gov.claimable(world.node2.address) == 0  # provisional: nothing credited yet
    assert world.gov.pending_posted() == world.pay_of(BOUND)
    assert_solvent(world.gov)
    with reverts(
        "ShardRegistryPostProvisional", jobId=job_id, node=world.node2.address, payableAt=posted["payableAt"]
    ):
        world.reg(world.outsider).collect_posted(job_id, world.node2.address, span)
    # the coordinator settles with the worker's honest commitment (POSITIONS): it wins
    result = world.settle(job_id)
    (voided,) = [e for e in result.events if e.name == "PostedCommitmentVoided"]
    assert voided.args["reserved"] == world.pay_of(BOUND)
    settled = result.event("JobSettled").args
    assert (settled["paidHops"], settled["paidToNodes"]) == (0b11, 2 * world.pay_of())
    assert world.gov.claimable(world.node2.address) == world.pay_of()  # the honest pay, once
    assert world.gov.posted_commitment(job_id, world.node2.address, span)[2] == VOIDED
    assert world.gov.pending_posted() == 0
    world.chain.advance_time(TEST_PARAMS.dispute_window + 1)
    with reverts("ShardRegistryNothingToCollect", jobId=job_id, node=world.node2.address):
        world.reg(world.outsider).collect_posted(job_id, world.node2.address, span)
    assert world.gov.claimable(world.node2.address) == world.pay_of()
    assert_solvent(world.gov)


def test_an_honest_post_is_paid_after_the_window_when_the_coordinator_vanished(world: World) -> None:
    job_id = world.submit()
    record = world.record(job_id)
    span = LayerSpan(0, 2)
    c = world.commit(world.node1, job_id, span)
    world.reg(world.node1).post_commitment((job_id, record), c, _ticket(world, world.node1, job_id, span))
    world.chain.advance_time(TEST_PARAMS.dispute_window + 1)
    # the job is cancelled after its deadline: the post is not voided by that
    world.chain.advance_time(TEST_PARAMS.job_timeout)
    refund = world.reg(world.client).cancel_job(job_id).event("JobCancelled").args["refund"]
    assert refund == record.escrow - world.pay_of()
    paid = (
        world.reg(world.outsider)
        .collect_posted(job_id, world.node1.address, span)
        .event("PostedCommitmentPaid")
    )
    assert (paid.args["to"], paid.args["amount"]) == (world.node1.address, world.pay_of())
    assert world.gov.claimable(world.node1.address) == world.pay_of()
    assert world.gov.posted_commitment(job_id, world.node1.address, span)[2] == PAID
    with reverts("ShardRegistryNothingToCollect", jobId=job_id, node=world.node1.address):
        world.reg(world.node1).collect_posted(job_id, world.node1.address, span)
    assert_solvent(world.gov)


def test_a_settlement_after_the_window_skips_the_posted_hop(world: World) -> None:
    job_id = world.submit()
    record = world.record(job_id)
    hops = world.route(job_id)
    world.reg(world.node2).post_commitment(
        (job_id, record), hops[1], _ticket(world, world.node2, job_id, LayerSpan(2, 4))
    )
    world.chain.advance_time(TEST_PARAMS.dispute_window + 1)
    settled = world.settle(job_id, hops).event("JobSettled").args
    assert (settled["paidHops"], settled["paidToNodes"]) == (0b01, world.pay_of())
    world.reg(world.node2).collect_posted(job_id, world.node2.address, LayerSpan(2, 4))
    assert world.gov.claimable(world.node2.address) == world.pay_of()  # once, not twice
    assert_solvent(world.gov)


def test_a_failover_is_paid_by_posts_but_a_ticket_backs_one_post(world: World) -> None:
    job_id = world.submit()
    record = world.record(job_id)
    # node1 served [0,2) and failed; node3 replaced it over [0,4): both were asked (one ticket each), both post
    for node, span in ((world.node1, LayerSpan(0, 2)), (world.node3, LayerSpan(0, 4))):
        c = world.commit(node, job_id, span)
        world.reg(node).post_commitment((job_id, record), c, _ticket(world, node, job_id, span))
        # the same ticket cannot back a second commitment (inflated or not)
        with reverts("ShardRegistryAlreadyCommitted", jobId=job_id, node=node.address):
            world.reg(node).post_commitment(
                (job_id, record),
                world.commit(node, job_id, span, tag="again"),
                _ticket(world, node, job_id, span),
            )
    world.chain.advance_time(TEST_PARAMS.dispute_window + 1)
    for node, span in ((world.node1, LayerSpan(0, 2)), (world.node3, LayerSpan(0, 4))):
        world.reg(world.outsider).collect_posted(job_id, node.address, span)
    assert world.gov.claimable(world.node1.address) == world.pay_of()
    assert world.gov.claimable(world.node3.address) == world.pay_of(layers=4)
    assert_solvent(world.gov)


# ---------------------------------------------------------------- 5. expired tickets


def test_an_expired_ticket_cannot_back_a_post_after_the_window(world: World) -> None:
    job_id = world.submit()
    record = world.record(job_id)
    span = LayerSpan(0, 2)
    expires = world.chain.timestamp() + 5
    ticket = _ticket(world, world.node1, job_id, span, expires_at=expires)
    world.chain.advance_time(5 + TEST_PARAMS.dispute_window + 1)
    with reverts("ShardRegistryTicketExpired", jobId=job_id, expiresAt=expires):
        world.reg(world.node1).post_commitment(
            (job_id, record), world.commit(world.node1, job_id, span), ticket
        )


# ---------------------------------------------------------------- 4. one layer paid once


def test_overlapping_or_repeated_hops_are_refused(world: World) -> None:
    job_id = world.submit()
    # node3 [0,4) and node1 [0,2) both claim layers 0-1: a coordinator paying a sybil twice for the same layers
    with reverts("ShardRegistryHopsNotSorted", jobId=job_id, hopIndex=1):
        world.settle(
            job_id,
            [
                world.commit(world.node1, job_id, LayerSpan(0, 2)),
                world.commit(world.node3, job_id, LayerSpan(0, 4)),
            ],
        )
    # the same node for the same layers twice (two signed commitments)
    with reverts("ShardRegistryHopsNotSorted", jobId=job_id, hopIndex=1):
        world.settle(
            job_id,
            [
                world.commit(world.node3, job_id, LayerSpan(0, 4), tag="a"),
                world.commit(world.node3, job_id, LayerSpan(0, 4), tag="b"),
            ],
        )
    # disjoint spans in layer order are paid
    settled = world.settle(job_id).event("JobSettled").args
    assert settled["paidToNodes"] == 2 * world.pay_of()
    assert_solvent(world.gov)


# ---------------------------------------------------------------- 2. verifier draw


def test_sybils_staked_after_the_close_are_never_drawn_and_cannot_frame(
    world: World, accounts: list[LocalAccount]
) -> None:
    job_id = world.submit()
    settlement = Settlement(job_id, world.record(job_id), OUTPUT, world.route(job_id))
    close_block = world.gov.settle_jobs([settlement]).block_number
    world.chain.mine(world.gov.constant("DRAW_DELAY") + 1)  # the randomness is public now
    sybils = [accounts[4], accounts[7], accounts[9]]
    for s in sybils:
        world.reg(s).register_node("http://127.0.0.1:8400", 50 * MIN_STAKE)
        world.reg(s).announce_shard(world.model_id, LayerSpan(0, 4))
    world.reg(world.node3).add_stake(
        MIN_STAKE
    )  # an old node's stake added after the close does not count either
    c = settlement.hops[0]  # node1's honest hop [0, 2)
    drawn = world.gov.draw_verifiers(job_id, settlement.job, close_block, c.node, c.span, c.root)
    # node3, the only node bonded at the close on [0,2), weighs what it had staked at the close
    assert drawn == [(world.node3.address, MIN_STAKE)]
    steps = leaves(f"{job_id}/{c.node}/{c.span}")
    verdicts = [
        sign_verdict(s, world.domain, job_id=job_id, accused=c.node, root=c.root, leaf_index=1, leaf=steps[1])
        for s in sybils
    ]
    evidence = SlashEvidence(
        job_id, settlement.job, close_block, c, 1, steps[1], merkle_proof(steps, 1), verdicts
    )
    with reverts("ShardRegistryNotEnoughVerifiers", drawn=1, required=2):
        world.reg(sybils[0]).slash(evidence)
    assert not world.gov.get_node(world.node1.address).jailed


def test_nodes_bonded_before_the_close_are_still_drawn(world: World, accounts: list[LocalAccount]) -> None:
    verifiers = [accounts[4], accounts[7]]
    for v in verifiers:
        world.reg(v).register_node("http://127.0.0.1:8400", 2 * MIN_STAKE)
        world.reg(v).announce_shard(world.model_id, LayerSpan(0, 4))
    job_id = world.submit()
    settlement = Settlement(job_id, world.record(job_id), OUTPUT, world.route(job_id))
    close_block = world.gov.settle_jobs([settlement]).block_number
    world.chain.mine(world.gov.constant("DRAW_DELAY") + 1)
    late = accounts[9]
    world.reg(late).register_node("http://127.0.0.1:8401", 100 * MIN_STAKE)
    world.reg(late).announce_shard(world.model_id, LayerSpan(0, 4))
    # a drawn node cannot reshape the draw by unstaking once the seed is known: its weight is stake + unbonding
    world.reg(verifiers[0]).request_unstake(MIN_STAKE)
    c = settlement.hops[0]
    drawn = dict(world.gov.draw_verifiers(job_id, settlement.job, close_block, c.node, c.span, c.root))
    assert drawn == {
        world.node3.address: MIN_STAKE,
        verifiers[0].address: 2 * MIN_STAKE,
        verifiers[1].address: 2 * MIN_STAKE,
    }


# ---------------------------------------------------------------- 3. endpoint change


def test_changing_an_approved_coordinators_endpoint_keeps_its_jobs_settleable(
    anvil: DevChain, accounts: list[LocalAccount]
) -> None:
    owner, node, client = accounts[0], accounts[1], accounts[5]
    dep = deploy_registry(anvil.w3, owner, RegistryParams(approval_delay=3600))
    gov = Registry(anvil.w3, dep.registry, owner, deploy_block=dep.deploy_block)
    first = gov.set_coordinator(owner.address, "http://old", True).event("CoordinatorSet").args["activeFrom"]
    anvil.advance_time(3601)
    reg_node = Registry(anvil.w3, dep.registry, node, deploy_block=dep.deploy_block)
    reg_node.register_node("http://n", MIN_STAKE)
    model_id = int(gov.register_model("m", "bafk", 2, 1_000).event("ModelRegistered").args["modelId"])
    reg_node.announce_shard(model_id, LayerSpan(0, 2))
    reg_client = Registry(anvil.w3, dep.registry, client, deploy_block=dep.deploy_block)
    quote = gov.quote(model_id, MAX_TOKENS)
    job_id = int(
        reg_client.submit_job(model_id, b"\x01" * 32, MAX_TOKENS, owner.address, quote)
        .event("JobSubmitted")
        .args["jobId"]
    )
    ev = gov.set_coordinator(owner.address, "http://new", True).event("CoordinatorSet")
    assert ev.args["activeFrom"] == first and gov.is_coordinator(owner.address)
    assert gov.coordinator_info(owner.address) == ("http://new", first)
    from shardnet.chain.commitments import sign_commitment
    from shardnet.wire.commitment import merkle_root

    c = sign_commitment(
        node,
        gov.domain(),
        job_id=job_id,
        span=LayerSpan(0, 2),
        positions=POSITIONS,
        steps=2,
        root=merkle_root(leaves("x", 2)),
    )
    settled = gov.settle_jobs([Settlement(job_id, gov.job_record(job_id), OUTPUT, [c])]).event("JobSettled")
    assert settled.args["paidHops"] == 1
    # a revoked and re-approved coordinator waits the delay again
    gov.set_coordinator(owner.address, "http://new", False)
    again = gov.set_coordinator(owner.address, "http://new", True).event("CoordinatorSet").args["activeFrom"]
    assert again >= anvil.timestamp() + 3600 - 1 and not gov.is_coordinator(owner.address)


def test_a_posted_hop_is_paid_to_a_node_that_left_but_not_to_one_jailed_since(
    world: World, accounts: list[LocalAccount]
) -> None:
    verifiers = [accounts[4], accounts[7]]
    for v in verifiers:
        world.reg(v).register_node("http://127.0.0.1:8400", MIN_STAKE)
        world.reg(v).announce_shard(world.model_id, LayerSpan(0, 4))
    left, jailed = world.submit(), world.submit()
    # node2 posts for `left`, then leaves the network (shard released, all stake unstaked)
    c2 = world.commit(world.node2, left, LayerSpan(2, 4))
    world.reg(world.node2).post_commitment(
        (left, world.record(left)), c2, _ticket(world, world.node2, left, LayerSpan(2, 4))
    )
    world.reg(world.node2).release_shard(world.shard2)
    world.reg(world.node2).request_unstake(MIN_STAKE)
    # node1 posts for `jailed`, then is slashed over another job (a majority of the drawn stake signs)
    c1 = world.commit(world.node1, jailed, LayerSpan(0, 2))
    world.reg(world.node1).post_commitment(
        (jailed, world.record(jailed)), c1, _ticket(world, world.node1, jailed, LayerSpan(0, 2))
    )
    disputed = world.submit()
    settlement = Settlement(disputed, world.record(disputed), OUTPUT, world.route(disputed)[:1])
    close_block = world.gov.settle_jobs([settlement]).block_number
    world.chain.mine(world.gov.constant("DRAW_DELAY") + 1)
    c = settlement.hops[0]
    steps = leaves(f"{disputed}/{c.node}/{c.span}")
    signers = {a.address: a for a in (*verifiers, world.node3)}
    drawn = world.gov.draw_verifiers(disputed, settlement.job, close_block, c.node, c.span, c.root)
    verdicts = [
        sign_verdict(
            signers[a],
            world.domain,
            job_id=disputed,
            accused=c.node,
            root=c.root,
            leaf_index=0,
            leaf=steps[0],
        )
        for a, _ in drawn
    ]
    world.reg(world.outsider).slash(
        SlashEvidence(disputed, settlement.job, close_block, c, 0, steps[0], merkle_proof(steps, 0), verdicts)
    )
    assert world.gov.get_node(world.node1.address).jailed
    world.chain.advance_time(TEST_PARAMS.dispute_window + 1)
    paid = world.reg(world.outsider).collect_posted(left, world.node2.address, LayerSpan(2, 4))
    assert paid.event("PostedCommitmentPaid").args["to"] == world.node2.address
    assert world.gov.claimable(world.node2.address) == world.pay_of()
    client_before = world.gov.claimable(world.client.address)
    node1_before = world.gov.claimable(
        world.node1.address
    )  # its pay for the disputed job, settled before the slash
    forfeited = world.reg(world.outsider).collect_posted(jailed, world.node1.address, LayerSpan(0, 2))
    assert forfeited.event("PostedCommitmentPaid").args["to"] == world.client.address
    assert world.gov.claimable(world.client.address) == client_before + world.pay_of()
    assert world.gov.claimable(world.node1.address) == node1_before
    assert_solvent(world.gov)
