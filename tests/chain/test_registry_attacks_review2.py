"""A second attack review of the protocol v2 registry (issue 9), each attack run on a real anvil: a settlement that
voids a departed node's provisional post must still pay that node for its committed work; a cheat that diverts its
slashed stake to a client of its own (open, marked xfail: a design change)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount

from shardnet.chain.commitments import sign_verdict
from shardnet.chain.registry import Registry, Settlement, SlashEvidence
from shardnet.span import LayerSpan
from shardnet.wire.commitment import merkle_proof
from shardnet.wire.tickets import sign_ticket, ticket_proof
from tests.chain.registry_world import (
    INPUT,
    MAX_TOKENS,
    MIN_STAKE,
    OUTPUT,
    World,
    assert_solvent,
    build_world,
    leaves,
)
from tests.fixtures_chain import TEST_PARAMS, DevChain

BOUND = 3 + MAX_TOKENS
VOIDED = 3


@pytest.fixture
def world(anvil: DevChain, accounts: list[LocalAccount], registry_for: Callable[..., Registry]) -> World:
    return build_world(anvil, accounts, registry_for)


def _ticket(
    world: World, worker: LocalAccount, job_id: int, span: LayerSpan
) -> tuple[str, int, int, bytes, bytes]:
    t = sign_ticket(
        world.owner,
        worker=worker.address,
        session_id=f"s{job_id}",
        job_id=job_id,
        span=span,
        max_positions=BOUND,
        expires_at=2**40,
        chain_id=world.domain.chain_id,
        registry=world.domain.registry,
    )
    return ticket_proof(t)


def test_a_settlement_voiding_a_departed_nodes_post_still_pays_the_node(world: World) -> None:
    """node2 served its hop, posted its signed commitment and left (shard released, stake unstaked). The job's
    coordinator (with the client's interest) then settles within the post's window, citing node2's own commitment:
    the post is voided, and node2 must still get the settled pay, not the client."""
    job_id = world.submit()
    record = world.record(job_id)
    hops = world.route(job_id)
    span = LayerSpan(2, 4)
    world.reg(world.node2).post_commitment(
        (job_id, record), hops[1], _ticket(world, world.node2, job_id, span)
    )
    world.reg(world.node2).release_shard(world.shard2)
    world.reg(world.node2).request_unstake(MIN_STAKE)
    client_before = world.gov.claimable(world.client.address)
    settled = world.settle(job_id, hops).event("JobSettled").args
    assert world.gov.posted_commitment(job_id, world.node2.address, span)[2] == VOIDED
    assert world.gov.claimable(world.node2.address) == world.pay_of()  # committed work is paid
    assert settled["paidToNodes"] == 2 * world.pay_of()
    assert world.gov.claimable(world.client.address) - client_before == settled["refund"]
    world.chain.advance_time(TEST_PARAMS.dispute_window + 1)
    assert world.gov.claimable(world.node2.address) == world.pay_of()  # once
    assert_solvent(world.gov)


def _slash(world: World, settlement: Settlement, close_block: int, signers: dict[str, LocalAccount]) -> int:
    """Slashes the settlement's first hop with guilty verdicts of every drawn verifier; returns the amount."""
    c = settlement.hops[0]
    job_id = settlement.job_id
    steps = leaves(f"{job_id}/{c.node}/{c.span}")
    drawn = world.gov.draw_verifiers(job_id, settlement.job, close_block, c.node, c.span, c.root)
    verdicts = [
        sign_verdict(
            signers[a], world.domain, job_id=job_id, accused=c.node, root=c.root, leaf_index=0, leaf=steps[0]
        )
        for a, _ in drawn
    ]
    evidence = SlashEvidence(
        job_id, settlement.job, close_block, c, 0, steps[0], merkle_proof(steps, 0), verdicts
    )
    return int(world.reg(world.outsider).slash(evidence).event("NodeSlashed").args["amount"])


@pytest.mark.xfail(
    strict=True,
    reason="open (design): a slash pays the cited job's client, so a cheat slashed first over a job of its own "
    "client gets its stake back and the harmed client's later slash finds a half (or nothing at slashBps 10000)",
)
def test_a_cheat_cannot_divert_its_slash_to_a_client_of_its_own(
    world: World, accounts: list[LocalAccount]
) -> None:
    verifiers = [accounts[4], accounts[7]]
    for v in verifiers:
        world.reg(v).register_node("http://127.0.0.1:8400", MIN_STAKE)
        world.reg(v).announce_shard(world.model_id, LayerSpan(0, 4))
    own_client = accounts[9]  # the cheat's sybil
    victim_job = world.submit()
    submitted = world.reg(own_client).submit_job(
        world.model_id, INPUT, MAX_TOKENS, world.owner.address, world.quote()
    )
    own_job = int(submitted.event("JobSubmitted").args["jobId"])
    # node1 served (and cheated on) both jobs; both are settled
    settlements = [
        Settlement(job_id, world.record(job_id), OUTPUT, world.route(job_id)[:1])
        for job_id in (victim_job, own_job)
    ]
    close_block = world.gov.settle_jobs(settlements).block_number
    world.chain.mine(world.gov.constant("DRAW_DELAY") + 1)
    signers = {a.address: a for a in (*verifiers, world.node3)}
    # the cheat (or anyone it pays) lands the slash over its own client's job first
    refunded = world.gov.claimable(own_client.address)
    diverted = _slash(world, settlements[1], close_block, signers)
    assert world.gov.claimable(own_client.address) - refunded == diverted
    assert diverted == MIN_STAKE * TEST_PARAMS.slash_bps // 10_000
    compensated = _slash(world, settlements[0], close_block, signers)
    assert_solvent(world.gov)
    # what the harmed client would have got had the cheat not dealt with itself first
    assert compensated == MIN_STAKE * TEST_PARAMS.slash_bps // 10_000
