"""A second attack review of the protocol v2 registry (issue 9), each attack run on a real anvil: a settlement that
voids a departed node's provisional post must still pay that node for its committed work."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount

from shardnet.chain.registry import Registry
from shardnet.span import LayerSpan
from shardnet.wire.tickets import sign_ticket, ticket_proof
from tests.chain.registry_world import MAX_TOKENS, MIN_STAKE, World, assert_solvent, build_world
from tests.fixtures_chain import TEST_PARAMS

BOUND = 3 + MAX_TOKENS
VOIDED = 3


@pytest.fixture
def world(anvil: object, accounts: list[LocalAccount], registry_for: Callable[..., Registry]) -> World:
    return build_world(anvil, accounts, registry_for)  # type: ignore[arg-type]


def _ticket(world: World, worker: LocalAccount, job_id: int, span: LayerSpan) -> tuple[str, int, int, bytes, bytes]:
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
    world.reg(world.node2).post_commitment((job_id, record), hops[1], _ticket(world, world.node2, job_id, span))
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

