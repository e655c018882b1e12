"""Every attack of issue 9 against the protocol v2 registry, each shown to fail on a real anvil.

Unbounded lists, slashing on a coordinator's word (framing, replay, the owner collecting), weak jail, jobs not bound
to their coordinator, settlement races, governance, and signatures replayed across deployments.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount

from shardnet.chain.commitments import sign_commitment, sign_verdict
from shardnet.chain.deploy import deploy_registry
from shardnet.chain.registry import JobStatus, Registry, RegistryParams, Settlement, SlashEvidence
from shardnet.span import LayerSpan
from shardnet.wire.commitment import merkle_proof, merkle_root
from shardnet.wire.eip712 import Domain
from shardnet.wire.tickets import sign_ticket, ticket_proof
from tests.chain.registry_world import (
    MIN_STAKE,
    OUTPUT,
    STEPS,
    World,
    assert_solvent,
    build_world,
    leaves,
    reverts,
)
from tests.fixtures_chain import TEST_PARAMS, DevChain

BPS = 10_000
TICKET_POSITIONS = (
    64  # what the coordinator lets a hop bill: prompt + max tokens of the test jobs, generously
)


@pytest.fixture
def world(anvil: DevChain, accounts: list[LocalAccount], registry_for: Callable[..., Registry]) -> World:
    return build_world(anvil, accounts, registry_for)


def _ticket(
    world: World,
    worker: LocalAccount,
    job_id: int,
    span: LayerSpan,
    signer: LocalAccount | None = None,
    domain: Domain | None = None,
    max_positions: int = TICKET_POSITIONS,
    expires_at: int = 2**40,
) -> tuple[str, int, int, bytes, bytes]:
    d = domain or world.domain
    t = sign_ticket(
        signer or world.owner,
        worker=worker.address,
        session_id=f"s{job_id}",
        job_id=job_id,
        span=span,
        max_positions=max_positions,
        expires_at=expires_at,
        chain_id=d.chain_id,
        registry=d.registry,
    )
    return ticket_proof(t)


# ---------------------------------------------------------------- bounded lists


def test_unbounded_hops_fail_and_closing_stays_cheap(world: World) -> None:
    job_id = world.submit()
    hops = [world.commit(world.node3, job_id, LayerSpan(0, 4), tag=f"h{i}") for i in range(17)]
    # 17 hops of distinct nodes are impossible here; sortedness is checked first, the count before anything else
    with reverts("ShardRegistryTooManyHops", jobId=job_id, count=17, maximum=16):
        world.settle(job_id, hops)
    with reverts("ShardRegistryHopsNotSorted", jobId=job_id, hopIndex=1):
        world.settle(job_id, hops[:2])
    # the client can always get its escrow back after the deadline, in one cheap call
    world.chain.advance_time(TEST_PARAMS.job_timeout + 1)
    result = world.reg(world.client).cancel_job(job_id)
    assert result.gas_used < 80_000
    assert world.gov.job_state(job_id)[0] == JobStatus.Cancelled
    assert_solvent(world.gov)


def test_live_assignments_per_node_and_strings_are_bounded(world: World) -> None:
    reg = world.reg(world.node3)
    for _ in range(15):  # node3 already holds one
        reg.announce_shard(world.model_id, LayerSpan(0, 1))
    with reverts("ShardRegistryTooManyAssignments", node=world.node3.address, count=16):
        reg.announce_shard(world.model_id, LayerSpan(0, 1))
    with reverts("ShardRegistryStringTooLong", field="endpoint", length=257, maximum=256):
        reg.update_endpoint("x" * 257)
    with reverts("ShardRegistryStringTooLong", field="name", length=300, maximum=256):
        world.gov.register_model("n" * 300, "bafk", 2, 1)


def test_live_assignments_per_model_are_bounded(world: World, accounts: list[LocalAccount]) -> None:
    maximum = world.gov.constant("MAX_LIVE_PER_MODEL")
    extra = [accounts[4], accounts[7]]
    for account in extra:
        world.reg(account).register_node("http://127.0.0.1:8400", MIN_STAKE)
    announcers = [world.node1, world.node2, world.node3, *extra]
    live = len(world.gov.live_assignments(world.model_id))
    for account in announcers:
        reg = world.reg(account)
        while live < maximum and world.gov.get_node(account.address).live_assignments < 16:
            reg.announce_shard(world.model_id, LayerSpan(0, 1))
            live += 1
    assert len(world.gov.live_assignments(world.model_id)) == maximum
    with reverts("ShardRegistryModelFull", modelId=world.model_id, count=maximum):
        world.reg(extra[1]).announce_shard(world.model_id, LayerSpan(0, 1))


# ---------------------------------------------------------------- settlement


def test_settlement_pays_exactly_the_signed_hops(world: World) -> None:
    job_id = world.submit()
    escrow = world.record(job_id).escrow
    ev = world.settle(job_id).event("JobSettled")
    pay = world.pay_of()
    fee = 2 * pay * TEST_PARAMS.coordinator_fee_bps // BPS
    assert ev.args == {
        "jobId": job_id,
        "outputHash": OUTPUT,
        "paidToNodes": 2 * pay,
        "coordinatorFee": fee,
        "refund": escrow - 2 * pay - fee,
        "paidHops": 0b11,
    }
    assert world.gov.claimable(world.node1.address) == pay
    assert world.gov.claimable(world.client.address) == escrow - 2 * pay - fee
    node = world.gov.get_node(world.node1.address)
    assert node.bonded_until >= world.chain.timestamp() + TEST_PARAMS.dispute_window - 1
    assert_solvent(world.gov)


def test_forged_or_foreign_commitments_are_refused(world: World, accounts: list[LocalAccount]) -> None:
    job_id = world.submit()
    good = world.commit(world.node1, job_id, LayerSpan(0, 2))
    # node2 signs for node1's address: the signature does not recover to node1
    forged = sign_commitment(
        world.node2, world.domain, job_id=job_id, span=LayerSpan(0, 2), positions=6, steps=5, root=good.root
    )
    forged = type(forged)(**{**forged.__dict__, "node": world.node1.address})
    with reverts("ShardRegistryBadCommitmentSignature", jobId=job_id, hopIndex=0, node=world.node1.address):
        world.settle(job_id, [forged])
    # a commitment signed for another registry (same chain, same keys) does not verify here
    other = Domain(world.domain.chain_id, world.spare.address)
    replayed = sign_commitment(
        world.node1, other, job_id=job_id, span=LayerSpan(0, 2), positions=6, steps=5, root=good.root
    )
    with reverts("ShardRegistryBadCommitmentSignature", jobId=job_id, hopIndex=0, node=world.node1.address):
        world.settle(job_id, [replayed])
    # a commitment for another job does not either
    with reverts("ShardRegistryBadCommitmentSignature", jobId=job_id, hopIndex=0, node=world.node1.address):
        world.settle(job_id, [world.commit(world.node1, job_id + 1, LayerSpan(0, 2))])


def test_job_record_must_match_and_positions_are_bounded(world: World) -> None:
    job_id = world.submit()
    record = world.record(job_id)
    inflated = type(record)(**{**record.__dict__, "escrow": record.escrow * 10})
    with reverts("ShardRegistryJobRecordMismatch", jobId=job_id):
        world.gov.settle_jobs([Settlement(job_id, inflated, OUTPUT, world.route(job_id))])
    maximum = record.max_tokens + TEST_PARAMS.max_prompt_tokens
    too_many = world.commit(world.node1, job_id, LayerSpan(0, 2), positions=maximum + 1)
    with reverts(
        "ShardRegistryPositionsTooHigh", jobId=job_id, hopIndex=0, positions=maximum + 1, maximum=maximum
    ):
        world.settle(job_id, [too_many])
    outside = world.commit(world.node1, job_id, LayerSpan(2, 5))
    with reverts("ShardRegistryInvalidHopSpan", jobId=job_id, hopIndex=0, start=2, end=5):
        world.settle(job_id, [outside])


def test_jobs_are_bound_to_their_coordinator(world: World) -> None:
    job_id = world.submit()
    record = world.record(job_id)
    with reverts("ShardRegistryNotJobCoordinator", jobId=job_id, account=world.coordinator2.address):
        world.settle(job_id, coordinator=world.coordinator2)
    with reverts("ShardRegistryNotJobCoordinator", jobId=job_id, account=world.coordinator2.address):
        world.reg(world.coordinator2).fail_job(job_id, record, "sniped")
    with reverts("ShardRegistryNotCoordinator", account=world.outsider.address):
        world.settle(job_id, coordinator=world.outsider)


def test_a_revoked_coordinators_job_is_closed_by_anyone_after_the_deadline(world: World) -> None:
    job_id = world.submit(coordinator=world.coordinator2)
    world.gov.set_coordinator(world.coordinator2.address, "", False)
    with reverts("ShardRegistryNotCoordinator", account=world.coordinator2.address):
        world.settle(job_id, coordinator=world.coordinator2)
    with reverts("ShardRegistryDeadlineNotReached", jobId=job_id, deadline=world.record(job_id).deadline):
        world.reg(world.outsider).cancel_job(job_id)
    world.chain.advance_time(TEST_PARAMS.job_timeout + 1)
    escrow = world.record(job_id).escrow
    ev = world.reg(world.outsider).cancel_job(job_id).event("JobCancelled")
    assert ev.args == {"jobId": job_id, "by": world.outsider.address, "refund": escrow}
    assert world.gov.claimable(world.client.address) == escrow
    # while its coordinator is approved, only the client may cancel
    other = world.submit()
    world.chain.advance_time(TEST_PARAMS.job_timeout + 1)
    with reverts("ShardRegistryNotJobClient", jobId=other, account=world.outsider.address):
        world.reg(world.outsider).cancel_job(other)


def test_posted_work_survives_fail_and_cancel(world: World) -> None:
    job_id = world.submit()
    record = world.record(job_id)
    c = world.commit(world.node2, job_id, LayerSpan(2, 4))
    ev = world.reg(world.node2).post_commitment(
        (job_id, record), c, _ticket(world, world.node2, job_id, LayerSpan(2, 4))
    )
    pay = world.pay_of()
    assert ev.event("CommitmentPosted").args["paid"] == pay
    with reverts("ShardRegistryAlreadyCommitted", jobId=job_id, node=world.node2.address):
        world.reg(world.node2).post_commitment(
            (job_id, record), c, _ticket(world, world.node2, job_id, LayerSpan(2, 4))
        )
    assert (
        world.gov.fail_job(job_id, record, "gave up").event("JobFailed").args["refund"] == record.escrow - pay
    )
    assert world.gov.claimable(world.node2.address) == 0  # provisional for the dispute window
    world.chain.advance_time(TEST_PARAMS.dispute_window + 1)
    world.reg(world.outsider).collect_posted(job_id, world.node2.address, LayerSpan(2, 4))
    assert world.gov.claimable(world.node2.address) == pay
    # and after a cancel after the deadline
    second = world.submit()
    rec2 = world.record(second)
    world.reg(world.node1).post_commitment(
        (second, rec2),
        world.commit(world.node1, second, LayerSpan(0, 2)),
        _ticket(world, world.node1, second, LayerSpan(0, 2)),
    )
    world.chain.advance_time(TEST_PARAMS.job_timeout + 1)
    assert (
        world.reg(world.client).cancel_job(second).event("JobCancelled").args["refund"] == rec2.escrow - pay
    )
    world.reg(world.node1).collect_posted(second, world.node1.address, LayerSpan(0, 2))
    assert world.gov.claimable(world.node1.address) == pay
    assert_solvent(world.gov)


def test_posting_needs_the_jobs_coordinators_ticket_and_the_deadline(world: World) -> None:
    job_id = world.submit()
    record = world.record(job_id)
    c = world.commit(world.node2, job_id, LayerSpan(2, 4))
    bad = _ticket(world, world.node2, job_id, LayerSpan(2, 4), signer=world.coordinator2)
    with reverts("ShardRegistryBadTicket", jobId=job_id, worker=world.node2.address):
        world.reg(world.node2).post_commitment((job_id, record), c, bad)
    with reverts("ShardRegistryNotHopNode", jobId=job_id, account=world.node1.address):
        world.reg(world.node1).post_commitment(
            (job_id, record), c, _ticket(world, world.node2, job_id, LayerSpan(2, 4))
        )
    world.chain.advance_time(TEST_PARAMS.job_timeout + 1)
    with reverts("ShardRegistryPostWindowClosed", jobId=job_id, deadline=record.deadline):
        world.reg(world.node2).post_commitment(
            (job_id, record), c, _ticket(world, world.node2, job_id, LayerSpan(2, 4))
        )


def test_settlement_skips_posted_hops_and_closed_jobs_without_reverting(world: World) -> None:
    job_id = world.submit()
    record = world.record(job_id)
    hops = world.route(job_id)
    world.reg(world.node2).post_commitment(
        (job_id, record), hops[1], _ticket(world, world.node2, job_id, LayerSpan(2, 4))
    )
    closed = world.submit()
    world.chain.advance_time(TEST_PARAMS.job_timeout + 1)
    world.reg(world.client).cancel_job(closed)
    result = world.gov.settle_jobs(
        [
            Settlement(job_id, record, OUTPUT, hops),
            Settlement(closed, world.record(closed), OUTPUT, world.route(closed)),
        ]
    )
    (ev,) = [e for e in result.events if e.name == "JobSettled"]
    pay = world.pay_of()
    assert (ev.args["paidHops"], ev.args["paidToNodes"]) == (
        0b01,
        pay,
    )  # node2 was paid once, by its own post (past its window: the settlement no longer replaces it)
    world.reg(world.node2).collect_posted(job_id, world.node2.address, LayerSpan(2, 4))
    assert world.gov.claimable(world.node2.address) == pay
    assert_solvent(world.gov)


def test_payout_is_capped_by_the_escrow_not_reverted(world: World) -> None:
    job_id = world.submit()
    positions = world.record(job_id).max_tokens + TEST_PARAMS.max_prompt_tokens
    hops = [  # the whole model at the most positions: the escrow's base, plus the fee, leaves nothing
        world.commit(world.node1, job_id, LayerSpan(0, 2), positions),
        world.commit(world.node2, job_id, LayerSpan(2, 4), positions),
    ]
    escrow = world.record(job_id).escrow
    ev = world.settle(job_id, hops).event("JobSettled")
    assert ev.args["paidToNodes"] + ev.args["coordinatorFee"] + ev.args["refund"] == escrow
    assert ev.args["refund"] == 0
    assert_solvent(world.gov)


# ---------------------------------------------------------------- slashing on checked evidence


def _verifiers(world: World, accounts: list[LocalAccount], count: int) -> list[LocalAccount]:
    """`count` extra nodes staked on [0, 4) (accounts 4 and 6..9, funded and otherwise idle in these tests)."""
    pool = [accounts[4], *accounts[6:10]]
    for v in pool[:count]:
        reg = world.reg(v)
        reg.register_node("http://127.0.0.1:8300", MIN_STAKE)
        reg.announce_shard(world.model_id, LayerSpan(0, 4))
    return pool[:count]


def _disputed(world: World) -> tuple[int, Settlement, int]:
    job_id = world.submit()
    settlement = Settlement(job_id, world.record(job_id), OUTPUT, world.route(job_id))
    close_block = world.gov.settle_jobs([settlement]).block_number
    world.chain.mine(world.gov.constant("DRAW_DELAY") + 1)
    return job_id, settlement, close_block


def _evidence(
    world: World, job_id: int, settlement: Settlement, close_block: int, signers: list[LocalAccount]
) -> SlashEvidence:
    c = settlement.hops[0]  # node1's hop [0, 2)
    steps = leaves(f"{job_id}/{c.node}/{c.span}")
    assert merkle_root(steps) == c.root
    verdicts = [
        sign_verdict(v, world.domain, job_id=job_id, accused=c.node, root=c.root, leaf_index=2, leaf=steps[2])
        for v in signers
    ]
    return SlashEvidence(
        job_id, settlement.job, close_block, c, 2, steps[2], merkle_proof(steps, 2), verdicts
    )


def test_slash_with_a_drawn_majority_pays_the_client_and_jails(
    world: World, accounts: list[LocalAccount]
) -> None:
    verifiers = _verifiers(world, accounts, 2)
    job_id, settlement, close_block = _disputed(world)
    drawn = world.gov.draw_verifiers(
        job_id, settlement.job, close_block, world.node1.address, LayerSpan(0, 2), settlement.hops[0].root
    )
    assert {a for a, _ in drawn} == {
        world.node3.address,
        *(v.address for v in verifiers),
    }  # all 3 drawn (<= 5)
    by_address = {a.address: a for a in (*verifiers, world.node3)}
    client_before = world.gov.claimable(world.client.address)
    fees_before = world.gov.protocol_fees()
    evidence = _evidence(world, job_id, settlement, close_block, [by_address[a] for a, _ in drawn][:2])
    ev = world.reg(world.outsider).slash(evidence).event("NodeSlashed")
    taken = MIN_STAKE * TEST_PARAMS.slash_bps // BPS
    assert ev.args["amount"] == taken and ev.args["client"] == world.client.address
    assert world.gov.claimable(world.client.address) == client_before + taken
    assert world.gov.protocol_fees() == fees_before  # never the owner's
    assert world.gov.claimable(world.outsider.address) == 0  # nor the slasher's
    node = world.gov.get_node(world.node1.address)
    assert (node.jailed, node.stake, node.live_assignments) == (True, MIN_STAKE - taken, 0)
    assert_solvent(world.gov)
    # once per evidence
    with reverts("ShardRegistryAlreadySlashed", jobId=job_id, node=world.node1.address):
        world.reg(world.outsider).slash(evidence)


def test_a_minority_of_stake_cannot_frame(world: World, accounts: list[LocalAccount]) -> None:
    # five identities on the span besides the accused: node3 + 4 verifiers; two colluders sign
    verifiers = _verifiers(world, accounts, 4)
    job_id, settlement, close_block = _disputed(world)
    colluders = verifiers[:2]
    with pytest.raises(Exception) as info:
        world.reg(colluders[0]).slash(_evidence(world, job_id, settlement, close_block, colluders))
    assert getattr(info.value, "error", "") == "ShardRegistryNoMajority"
    assert not world.gov.get_node(world.node1.address).jailed


def test_the_owner_and_coordinators_cannot_slash_on_their_word(
    world: World, accounts: list[LocalAccount]
) -> None:
    _verifiers(world, accounts, 2)
    job_id, settlement, close_block = _disputed(world)
    # the owner (also a coordinator) and the other coordinator sign verdicts: they are not drawn verifiers
    evidence = _evidence(world, job_id, settlement, close_block, [world.owner])
    with reverts("ShardRegistryVerdictNotFromDrawnVerifier", index=0, signer=world.owner.address):
        world.gov.slash(evidence)
    # no verdicts at all: no majority
    with reverts("ShardRegistryNoMajority", guiltyStake=0, drawnStake=3 * MIN_STAKE):
        world.gov.slash(_evidence(world, job_id, settlement, close_block, []))


def test_slash_evidence_must_be_the_accuseds_own_and_in_its_root(
    world: World, accounts: list[LocalAccount]
) -> None:
    verifiers = _verifiers(world, accounts, 2)
    job_id, settlement, close_block = _disputed(world)
    evidence = _evidence(world, job_id, settlement, close_block, verifiers)
    wrong_leaf = SlashEvidence(**{**evidence.__dict__, "leaf": leaves("other")[0]})
    with reverts("ShardRegistryBadMerkleProof", jobId=job_id, leafIndex=2):
        world.gov.slash(wrong_leaf)
    c = evidence.commitment
    framed = sign_commitment(
        world.node2, world.domain, job_id=job_id, span=c.span, positions=c.positions, steps=STEPS, root=c.root
    )
    framed = type(framed)(**{**framed.__dict__, "node": world.node1.address})
    with reverts("ShardRegistryBadCommitmentSignature", jobId=job_id, hopIndex=0, node=world.node1.address):
        world.gov.slash(SlashEvidence(**{**evidence.__dict__, "commitment": framed}))
    with reverts("ShardRegistryJobRecordMismatch", jobId=job_id):
        world.gov.slash(SlashEvidence(**{**evidence.__dict__, "close_block": close_block - 1}))


# ---------------------------------------------------------------- jail and bonding


def test_jail_is_not_lifted_by_stake_nor_forgotten_by_exit(
    world: World, accounts: list[LocalAccount]
) -> None:
    verifiers = _verifiers(world, accounts, 2)
    job_id, settlement, close_block = _disputed(world)
    world.gov.slash(_evidence(world, job_id, settlement, close_block, verifiers))
    reg1 = world.reg(world.node1)
    reg1.add_stake(1)
    reg1.add_stake(5 * MIN_STAKE)
    assert world.gov.get_node(world.node1.address).jailed
    with reverts("ShardRegistryNodeJailed", node=world.node1.address):
        reg1.announce_shard(world.model_id, LayerSpan(0, 2))
    stake = world.gov.get_node(world.node1.address).stake
    reg1.request_unstake(stake)
    world.chain.advance_time(max(TEST_PARAMS.unbonding_period, TEST_PARAMS.dispute_window) + 1)
    reg1.withdraw_stake()
    assert not world.gov.get_node(world.node1.address).registered
    with reverts("ShardRegistryNodeJailed", node=world.node1.address):
        reg1.register_node("http://127.0.0.1:8101", MIN_STAKE)
    assert_solvent(world.gov)


def test_stake_stays_bonded_for_the_dispute_window_after_the_last_job(world: World) -> None:
    reg2 = world.reg(world.node2)
    reg2.add_stake(MIN_STAKE)
    until = int(reg2.request_unstake(MIN_STAKE).event("UnstakeRequested").args["unbondingUntil"])
    world.chain.advance_time(TEST_PARAMS.unbonding_period - 10)
    # node2 serves a job just before its unbonding ends: its stake stays slashable for the dispute window after it
    world.settle(world.submit())
    bonded = world.gov.get_node(world.node2.address).bonded_until
    assert bonded > until
    world.chain.advance_time(20)
    assert until < world.chain.timestamp() < bonded
    with reverts("ShardRegistryStillUnbonding", until=bonded):
        reg2.withdraw_stake()
    world.chain.advance_time(TEST_PARAMS.dispute_window)
    assert reg2.withdraw_stake().event("StakeWithdrawn").args["amount"] == MIN_STAKE


# ---------------------------------------------------------------- governance


def test_ownership_moves_in_two_steps(world: World) -> None:
    world.gov.transfer_ownership(world.spare.address)
    assert (world.gov.owner(), world.gov.pending_owner()) == (world.owner.address, world.spare.address)
    with reverts("OwnableUnauthorizedAccount", account=world.outsider.address):
        world.reg(world.outsider).accept_ownership()
    world.reg(world.spare).accept_ownership()
    assert world.gov.owner() == world.spare.address
    with reverts("OwnableUnauthorizedAccount", account=world.owner.address):
        world.gov.set_coordinator(world.owner.address, "", False)


def test_withdraw_fees_refuses_zero_and_the_registry(world: World) -> None:
    from shardnet.chain.registry import ZERO_ADDRESS

    with reverts("ShardRegistryInvalidRecipient", to=ZERO_ADDRESS):
        world.gov.withdraw_fees(ZERO_ADDRESS)
    with reverts("ShardRegistryInvalidRecipient", to=world.gov.address):
        world.gov.withdraw_fees(world.gov.address)
    with reverts("ShardRegistryZeroAmount"):
        world.gov.withdraw_fees(world.spare.address)


def test_coordinator_approval_takes_effect_after_the_delay(
    anvil: DevChain, accounts: list[LocalAccount]
) -> None:
    owner, coordinator = accounts[0], accounts[6]
    dep = deploy_registry(anvil.w3, owner, RegistryParams(approval_delay=3600))
    gov = Registry(anvil.w3, dep.registry, owner, deploy_block=dep.deploy_block)
    ev = gov.set_coordinator(coordinator.address, "http://c", True).event("CoordinatorSet")
    assert not gov.is_coordinator(coordinator.address)
    assert gov.coordinator_info(coordinator.address) == ("http://c", ev.args["activeFrom"])
    assert ev.args["activeFrom"] >= anvil.timestamp() + 3600 - 1
    anvil.advance_time(3601)
    assert gov.is_coordinator(coordinator.address)


@pytest.mark.parametrize(
    "field,value",
    [
        ("job_timeout", 10**12),
        ("job_timeout", 0),
        ("unbonding_period", 10**12),
        ("approval_delay", 10**9),
        ("dispute_window", 0),
        ("protocol_fee_bps", 1001),
        ("slash_bps", 0),
    ],
)
def test_constructor_bounds_time_and_fee_parameters(
    anvil: DevChain, accounts: list[LocalAccount], field: str, value: int
) -> None:
    name = {
        "job_timeout": "jobTimeout",
        "unbonding_period": "unbondingPeriod",
        "approval_delay": "approvalDelay",
        "dispute_window": "disputeWindow",
        "protocol_fee_bps": "protocolFeeBps",
        "slash_bps": "slashBps",
    }[field]
    with reverts("ShardRegistryInvalidParameter", name=name):
        deploy_registry(anvil.w3, accounts[0], RegistryParams(**{field: value}))
