"""Verifier-draw grinding, run on a real anvil: once the dispute seed (blockhash(closeBlock + 2)) is public, a node
that leaves the candidate set (adds 1 wei, unstakes, releases its shard, withdraws) must not shift the stake-weighted
draw of the others, or an operator of several identities re-rolls the draw until its identities hold the majority.
The draw reads only the state at the close block: stake checkpoints and assignments held then."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount

from shardnet.chain.commitments import sign_verdict
from shardnet.chain.registry import Registry, Settlement, SlashEvidence
from shardnet.span import LayerSpan
from shardnet.wire.commitment import merkle_proof
from tests.chain.registry_world import MIN_STAKE, OUTPUT, World, assert_solvent, build_world, leaves, reverts
from tests.fixtures_chain import TEST_PARAMS

BLOCKHASH_REACH = 256  # blocks blockhash() looks back


@pytest.fixture
def world(anvil: object, accounts: list[LocalAccount], registry_for: Callable[..., Registry]) -> World:
    return build_world(anvil, accounts, registry_for)  # type: ignore[arg-type]


def _closed_job(world: World) -> tuple[int, Settlement, int]:
    job_id = world.submit()
    settlement = Settlement(job_id, world.record(job_id), OUTPUT, world.route(job_id))
    close_block = world.gov.settle_jobs([settlement]).block_number
    world.chain.mine(world.gov.constant("DRAW_DELAY") + 1)  # the seed is public now
    return job_id, settlement, close_block


def test_candidates_leaving_after_the_seed_do_not_move_the_draw(
    world: World, accounts: list[LocalAccount]
) -> None:
    verifiers = [accounts[4], accounts[7]]
    shards = []
    for v in verifiers:
        world.reg(v).register_node("http://127.0.0.1:8400", 2 * MIN_STAKE)
        result = world.reg(v).announce_shard(world.model_id, LayerSpan(0, 4))
        shards.append(int(result.event("ShardAnnounced").args["assignmentId"]))
    job_id, settlement, close_block = _closed_job(world)
    c = settlement.hops[0]  # node1's hop [0, 2): node3 and both verifiers cover it
    at_close = {
        world.node3.address: MIN_STAKE,
        verifiers[0].address: 2 * MIN_STAKE,
        verifiers[1].address: 2 * MIN_STAKE,
    }
    before = world.gov.draw_verifiers(job_id, settlement.job, close_block, c.node, c.span, c.root)
    assert dict(before) == at_close
    # every way out of the set, once the seed is known: 1 wei more stake, a released shard, a full withdrawal
    world.reg(world.node3).add_stake(1)
    world.reg(world.node3).release_shard(world.shard3)
    leaver = world.reg(verifiers[0])
    leaver.release_shard(shards[0])
    leaver.request_unstake(2 * MIN_STAKE)
    world.chain.advance_time(TEST_PARAMS.unbonding_period + 1)
    leaver.withdraw_stake()
    assert not world.gov.get_node(verifiers[0].address).registered
    assert sorted(world.gov.live_assignments(world.model_id)) == sorted(
        [world.shard1, world.shard2, shards[1]]
    )
    after = world.gov.draw_verifiers(job_id, settlement.job, close_block, c.node, c.span, c.root)
    assert after == before
    # the drawn verifiers that left still sign, with their weight at the close: node1 is slashed
    steps = leaves(f"{job_id}/{c.node}/{c.span}")
    signers = {a.address: a for a in (*verifiers, world.node3)}
    verdicts = [
        sign_verdict(
            signers[a], world.domain, job_id=job_id, accused=c.node, root=c.root, leaf_index=1, leaf=steps[1]
        )
        for a, _ in after
    ]
    evidence = SlashEvidence(
        job_id, settlement.job, close_block, c, 1, steps[1], merkle_proof(steps, 1), verdicts
    )
    slashed = world.reg(world.outsider).slash(evidence).event("NodeSlashed")
    assert slashed.args["drawnStake"] == sum(at_close.values())
    assert world.gov.get_node(world.node1.address).jailed
    assert_solvent(world.gov)


def test_a_shard_announced_after_the_close_or_released_before_it_is_not_drawn(
    world: World, accounts: list[LocalAccount]
) -> None:
    early, late = accounts[4], accounts[7]
    world.reg(early).register_node("http://127.0.0.1:8400", 2 * MIN_STAKE)
    gone = int(
        world.reg(early)
        .announce_shard(world.model_id, LayerSpan(0, 4))
        .event("ShardAnnounced")
        .args["assignmentId"]
    )
    world.reg(early).release_shard(gone)
    world.reg(late).register_node("http://127.0.0.1:8401", 2 * MIN_STAKE)
    job_id, settlement, close_block = _closed_job(world)
    world.reg(late).announce_shard(world.model_id, LayerSpan(0, 4))
    c = settlement.hops[0]
    drawn = world.gov.draw_verifiers(job_id, settlement.job, close_block, c.node, c.span, c.root)
    assert drawn == [(world.node3.address, MIN_STAKE)]


def test_a_released_shard_holds_its_model_slot_until_no_draw_can_reach_it(
    world: World, accounts: list[LocalAccount]
) -> None:
    maximum = world.gov.constant("MAX_LIVE_PER_MODEL")
    extra = [accounts[4], accounts[7]]
    for account in extra:
        world.reg(account).register_node("http://127.0.0.1:8400", MIN_STAKE)
    live = len(world.gov.live_assignments(world.model_id))
    mine: list[tuple[LocalAccount, int]] = []
    for account in (world.node1, world.node2, world.node3, *extra):
        while live < maximum and world.gov.get_node(account.address).live_assignments < 16:
            result = world.reg(account).announce_shard(world.model_id, LayerSpan(0, 1))
            mine.append((account, int(result.event("ShardAnnounced").args["assignmentId"])))
            live += 1
    owner, released = mine[-1]
    world.reg(owner).release_shard(released)
    assert released not in world.gov.live_assignments(world.model_id)
    assert len(world.gov.live_assignments(world.model_id)) == maximum - 1
    # a job closed before the release may still draw it for BLOCKHASH_REACH + DRAW_DELAY blocks
    other = extra[1]  # a node with room under its own cap
    assert other.address != owner.address and world.gov.get_node(other.address).live_assignments == 0
    with reverts("ShardRegistryModelFull", modelId=world.model_id, count=maximum):
        world.reg(other).announce_shard(world.model_id, LayerSpan(0, 1))
    world.chain.mine(BLOCKHASH_REACH + world.gov.constant("DRAW_DELAY"))
    world.reg(other).announce_shard(world.model_id, LayerSpan(0, 1))
    assert len(world.gov.live_assignments(world.model_id)) == maximum


def test_a_node_churning_shards_holds_no_more_model_slots_than_its_cap(world: World) -> None:
    # released assignments keep their model slots for the draw, so they count against the node's cap too: one
    # staked node cannot fill a model by announcing and releasing
    cap = world.gov.constant("MAX_LIVE_PER_NODE")
    reg = world.reg(world.node1)
    for _ in range(cap - 1):
        reg.announce_shard(world.model_id, LayerSpan(0, 1))
    reg.release_shard(world.shard1)
    with reverts("ShardRegistryTooManyAssignments", node=world.node1.address, count=cap):
        reg.announce_shard(world.model_id, LayerSpan(0, 1))
    assert world.gov.get_node(world.node1.address).live_assignments == cap - 1
    world.chain.mine(BLOCKHASH_REACH + world.gov.constant("DRAW_DELAY"))
    reg.announce_shard(world.model_id, LayerSpan(0, 1))
    assert world.gov.get_node(world.node1.address).live_assignments == cap
