"""Paid verification on a real anvil (issue 10 item 5): a settled job's escrow holds a verification share, its
coordinator pays each drawn verifier's signed verdict (guilty or innocent) from it once, the rest goes back to the
client; a verdict of anyone the registry did not draw for that hop, a forged one, or one for another job or hop is
refused, every array is bounded, and an unspent share goes back to the client once no draw can reach the job."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from eth_account.signers.local import LocalAccount

from shardnet.chain.commitments import INNOCENT_LEAF, INNOCENT_LEAF_INDEX, SignedCommitment, sign_verdict
from shardnet.chain.deploy import Deployment, deploy_registry
from shardnet.chain.explain import SENTENCES, explain
from shardnet.chain.registry import (
    HopVerdicts,
    JobStatus,
    PaidVerdict,
    Registry,
    Settlement,
    SlashEvidence,
    VerificationPayment,
)
from shardnet.span import LayerSpan
from shardnet.wire.commitment import merkle_proof
from shardnet.wire.eip712 import CompactSignature
from tests.chain.registry_world import (
    MAX_TOKENS,
    MIN_STAKE,
    NUM_LAYERS,
    OUTPUT,
    PRICE,
    World,
    assert_solvent,
    build_world,
    leaves,
    reverts,
)
from tests.fixtures_chain import VERIFY_PARAMS, DevChain

BPS = 10_000
DRAW_REACH = 2 + 256  # DRAW_DELAY + the blocks blockhash() reaches back


@pytest.fixture(scope="module")
def module_deployment(anvil: DevChain, accounts: list[LocalAccount]) -> Deployment:
    """This module's registry holds a verification share of every settled job (the devnet default)."""
    return deploy_registry(anvil.w3, accounts[0], VERIFY_PARAMS)


@pytest.fixture
def world(anvil: object, accounts: list[LocalAccount], registry_for: Callable[..., Registry]) -> World:
    """The shared world plus two verifiers on [0, 4): every hop has 3 candidates (node3 and both)."""
    w = build_world(anvil, accounts, registry_for)  # type: ignore[arg-type]
    for v in (accounts[4], accounts[7]):
        w.reg(v).register_node("http://127.0.0.1:8400", 2 * MIN_STAKE)
        w.reg(v).announce_shard(w.model_id, LayerSpan(0, 4))
    return w


def share_of(world: World, max_tokens: int = MAX_TOKENS) -> int:
    base = NUM_LAYERS * (max_tokens + VERIFY_PARAMS.max_prompt_tokens) * PRICE
    return base * VERIFY_PARAMS.verify_bps * world.gov.constant("HELD_VERDICTS") // BPS


def verdict_pay(world: World) -> int:
    return world.pay_of() * VERIFY_PARAMS.verify_bps // BPS


def closed_job(world: World) -> tuple[int, Settlement, int]:
    job_id = world.submit()
    settlement = Settlement(job_id, world.record(job_id), OUTPUT, world.route(job_id))
    close_block = world.gov.settle_jobs([settlement]).block_number
    world.chain.mine(3)  # blockhash(closeBlock + DRAW_DELAY) is public now
    return job_id, settlement, close_block


def signers(world: World, accounts: list[LocalAccount]) -> dict[str, LocalAccount]:
    return {a.address: a for a in (*accounts[:10], world.node3)}


def innocent(world: World, who: LocalAccount, job_id: int, c: SignedCommitment) -> PaidVerdict:
    sig = sign_verdict(
        who,
        world.domain,
        job_id=job_id,
        accused=c.node,
        root=c.root,
        leaf_index=INNOCENT_LEAF_INDEX,
        leaf=INNOCENT_LEAF,
    )
    return PaidVerdict(INNOCENT_LEAF_INDEX, INNOCENT_LEAF, sig)


def guilty(world: World, who: LocalAccount, job_id: int, c: SignedCommitment, index: int = 1) -> PaidVerdict:
    leaf = leaves(f"{job_id}/{c.node}/{c.span}")[index]
    sig = sign_verdict(
        who, world.domain, job_id=job_id, accused=c.node, root=c.root, leaf_index=index, leaf=leaf
    )
    return PaidVerdict(index, leaf, sig)


def drawn(world: World, job_id: int, s: Settlement, close_block: int, hop: int, picks: int) -> list[str]:
    c = s.sorted_hops()[hop]
    return [
        a for a, _ in world.gov.draw_verifiers(job_id, s.job, close_block, c.node, c.span, c.root)[:picks]
    ]


def test_the_quote_and_the_settlement_hold_the_verification_share(world: World) -> None:
    base = NUM_LAYERS * (MAX_TOKENS + VERIFY_PARAMS.max_prompt_tokens) * PRICE
    fee = base * VERIFY_PARAMS.coordinator_fee_bps // BPS
    assert world.quote() == base + fee + share_of(world)
    job_id, settlement, _ = closed_job(world)
    assert world.gov.verification_state(job_id) == (True, True)
    assert world.gov.verification_held() == share_of(world)
    paid = 2 * world.pay_of()
    refund = (
        world.record(job_id).escrow - paid - paid * VERIFY_PARAMS.coordinator_fee_bps // BPS - share_of(world)
    )
    assert world.gov.claimable(world.client.address) == refund
    assert_solvent(world.gov)
    # a failed job checks nothing: it holds no share
    failed = world.submit()
    world.gov.fail_job(failed, world.record(failed), "no route")
    assert world.gov.verification_state(failed) == (False, False)


def test_drawn_verifiers_are_paid_once_per_verdict_and_the_rest_goes_back(
    world: World, accounts: list[LocalAccount]
) -> None:
    job_id, s, close_block = closed_job(world)
    keys = signers(world, accounts)
    hops = s.sorted_hops()
    first = drawn(world, job_id, s, close_block, 0, 2)
    second = drawn(world, job_id, s, close_block, 1, 2)
    before = {a: world.gov.claimable(a) for a in {*first, *second}}
    client_before = world.gov.claimable(world.client.address)
    payment = VerificationPayment(
        job_id,
        s.job,
        close_block,
        [
            HopVerdicts(hops[0], 2, [innocent(world, keys[a], job_id, hops[0]) for a in first]),
            # one innocent, one guilty (on a real leaf): both are answers, both are paid
            HopVerdicts(
                hops[1],
                2,
                [
                    innocent(world, keys[second[0]], job_id, hops[1]),
                    guilty(world, keys[second[1]], job_id, hops[1]),
                ],
            ),
        ],
    )
    event = world.gov.pay_verifiers([payment]).event("VerificationPaid").args
    pay = verdict_pay(world)
    assert (event["jobId"], event["paid"], event["verdicts"]) == (job_id, 4 * pay, 4)
    assert event["refund"] == share_of(world) - 4 * pay
    for a in {*first, *second}:
        assert world.gov.claimable(a) - before[a] == pay * ((a in first) + (a in second))
    assert world.gov.claimable(world.client.address) - client_before == share_of(world) - 4 * pay
    assert world.gov.verification_state(job_id) == (True, False)
    assert world.gov.verification_held() == 0
    assert_solvent(world.gov)
    with reverts("ShardRegistryNoVerificationHeld", jobId=job_id):  # pay once
        world.gov.pay_verifiers([payment])
    with reverts("ShardRegistryNoVerificationHeld", jobId=job_id):  # and no refund after
        world.chain.mine(DRAW_REACH)
        world.reg(world.outsider).refund_verification(job_id, s.job, close_block)
    # a paid verifier claims it like routed pay
    verifier = world.reg(keys[first[0]])
    assert verifier.claim().event("Claimed").args["amount"] >= pay


def test_a_larger_draw_pays_the_verifiers_it_adds(world: World, accounts: list[LocalAccount]) -> None:
    job_id, s, close_block = closed_job(world)
    keys = signers(world, accounts)
    c = s.sorted_hops()[0]
    everyone = drawn(world, job_id, s, close_block, 0, world.gov.constant("MAX_VERIFIERS"))
    assert len(everyone) == 3 and everyone[:2] == drawn(world, job_id, s, close_block, 0, 2)
    third = [innocent(world, keys[everyone[2]], job_id, c)]
    with reverts("ShardRegistryVerdictNotFromDrawnVerifier", index=0, signer=everyone[2]):
        world.gov.pay_verifiers([VerificationPayment(job_id, s.job, close_block, [HopVerdicts(c, 2, third)])])
    result = world.gov.pay_verifiers(
        [VerificationPayment(job_id, s.job, close_block, [HopVerdicts(c, 3, third)])]
    )
    assert result.event("VerificationPaid").args["paid"] == verdict_pay(world)


def test_verdicts_of_others_forged_or_for_another_job_or_hop_are_refused(
    world: World, accounts: list[LocalAccount]
) -> None:
    job_id, s, close_block = closed_job(world)
    other_job, other, other_close = closed_job(world)
    keys = signers(world, accounts)
    hop0, hop1 = s.sorted_hops()
    verifier = keys[drawn(world, job_id, s, close_block, 0, 2)[0]]

    def pay(hop: SignedCommitment, *verdicts: PaidVerdict, picks: int = 2) -> None:
        world.gov.pay_verifiers(
            [VerificationPayment(job_id, s.job, close_block, [HopVerdicts(hop, picks, verdicts)])]
        )

    with reverts("ShardRegistryVerdictNotFromDrawnVerifier", index=0, signer=world.outsider.address):
        pay(hop0, innocent(world, world.outsider, job_id, hop0))  # never a candidate
    with reverts("ShardRegistryVerdictNotFromDrawnVerifier", index=1, signer=verifier.address):
        pay(hop0, innocent(world, verifier, job_id, hop0), innocent(world, verifier, job_id, hop0))  # twice
    good = innocent(world, verifier, job_id, hop0)
    forged = replace(good, signature=CompactSignature(good.signature.r, bytes(31) + b"\x01"))
    wrong_leaf = replace(good, leaf_index=3)  # signed innocent, shown as guilty on leaf 3
    other_hop0 = other.sorted_hops()[0]
    for bad in (forged, wrong_leaf, innocent(world, verifier, other_job, other_hop0)):
        with pytest.raises(Exception) as info:
            pay(hop0, bad)
        assert getattr(info.value, "error", "") == "ShardRegistryVerdictNotFromDrawnVerifier"
        assert info.value.args["index"] == 0 and info.value.args["signer"] != verifier.address  # type: ignore[call-overload]
    with pytest.raises(
        Exception
    ) as info:  # a hop-0 verdict shown under hop 1 (another root, maybe another draw)
        pay(hop1, innocent(world, verifier, job_id, hop0))
    assert getattr(info.value, "error", "") == "ShardRegistryVerdictNotFromDrawnVerifier"
    inflated = replace(hop0, positions=hop0.positions + 1)  # the node did not sign this
    with reverts("ShardRegistryBadCommitmentSignature", jobId=job_id, hopIndex=0, node=hop0.node):
        pay(inflated, good)
    with reverts("ShardRegistryNotJobCoordinator", jobId=job_id, account=world.coordinator2.address):
        world.reg(world.coordinator2).pay_verifiers(
            [VerificationPayment(job_id, s.job, close_block, [HopVerdicts(hop0, 2, [good])])]
        )
    with reverts("ShardRegistryHopsNotSorted", jobId=job_id, hopIndex=1):
        world.gov.pay_verifiers(
            [
                VerificationPayment(
                    job_id, s.job, close_block, [HopVerdicts(hop0, 2, [good]), HopVerdicts(hop0, 2, [])]
                )
            ]
        )
    # nothing was paid by any of these
    assert world.gov.verification_state(job_id) == (True, True)
    assert world.gov.verification_state(other_job) == (True, True) and other_close > close_block


def test_every_array_is_bounded(world: World, accounts: list[LocalAccount]) -> None:
    job_id, s, close_block = closed_job(world)
    keys = signers(world, accounts)
    hop0 = s.sorted_hops()[0]
    some = [innocent(world, keys[a], job_id, hop0) for a in drawn(world, job_id, s, close_block, 0, 3)]
    payment = VerificationPayment(job_id, s.job, close_block, [HopVerdicts(hop0, 2, some[:1])])
    with reverts("ShardRegistryBatchTooLarge", count=65, maximum=64):
        world.gov.pay_verifiers([payment] * 65)
    with reverts("ShardRegistryTooManyVerdicts", jobId=job_id, count=3, maximum=2):
        world.gov.pay_verifiers([replace(payment, hops=[HopVerdicts(hop0, 2, some)])])
    for picks in (1, world.gov.constant("MAX_VERIFIERS") + 1):
        with reverts("ShardRegistryInvalidDrawSize", jobId=job_id, picks=picks):
            world.gov.pay_verifiers([replace(payment, hops=[HopVerdicts(hop0, picks, some[:1])])])
    too_many = [HopVerdicts(hop0, 2, [])] * 17
    with reverts("ShardRegistryTooManyHops", jobId=job_id, count=17, maximum=16):
        world.gov.pay_verifiers([replace(payment, hops=too_many)])


def test_verdicts_are_paid_while_the_share_lasts(world: World, accounts: list[LocalAccount]) -> None:
    for v in (accounts[8], accounts[9]):  # five candidates on every hop: ten verdicts on a job of full hops
        world.reg(v).register_node("http://127.0.0.1:8400", MIN_STAKE)
        world.reg(v).announce_shard(world.model_id, LayerSpan(0, 4))
    job_id = world.submit()
    full = MAX_TOKENS + VERIFY_PARAMS.max_prompt_tokens  # the largest positions: the hops take the whole base
    hops = [
        world.commit(world.node1, job_id, LayerSpan(0, 2), full),
        world.commit(world.node2, job_id, LayerSpan(2, 4), full),
    ]
    s = Settlement(job_id, world.record(job_id), OUTPUT, hops)
    close_block = world.gov.settle_jobs([s]).block_number
    world.chain.mine(3)
    keys = signers(world, accounts)
    paid_hops = [
        HopVerdicts(
            c, 5, [innocent(world, keys[a], job_id, c) for a in drawn(world, job_id, s, close_block, i, 5)]
        )
        for i, c in enumerate(s.sorted_hops())
    ]
    assert [len(h.verdicts) for h in paid_hops] == [5, 5]
    before = {a: world.gov.claimable(a) for a in keys}
    payment = VerificationPayment(job_id, s.job, close_block, paid_hops)
    event = world.gov.pay_verifiers([payment]).event("VerificationPaid")
    pay = full * 2 * PRICE * VERIFY_PARAMS.verify_bps // BPS  # each verdict's pay on a full hop
    share = share_of(world)
    assert 10 * pay > share  # ten verdicts are worth more than the share: the last ones get what is left
    assert (event.args["paid"], event.args["refund"], event.args["verdicts"]) == (share, 0, 10)
    gains = sorted(world.gov.claimable(a) - before[a] for a in keys)
    assert sum(gains) == share and max(gains) <= 2 * pay
    assert_solvent(world.gov)


def test_an_unspent_share_goes_back_to_the_client_once_no_draw_can_reach_the_job(world: World) -> None:
    job_id, s, close_block = closed_job(world)
    anyone = world.reg(world.outsider)
    with reverts("ShardRegistryVerificationOpen", jobId=job_id, untilBlock=close_block + DRAW_REACH):
        anyone.refund_verification(job_id, s.job, close_block)
    before = world.gov.claimable(world.client.address)
    world.chain.mine(DRAW_REACH)
    event = anyone.refund_verification(job_id, s.job, close_block).event("VerificationPaid").args
    assert (event["paid"], event["refund"], event["verdicts"]) == (0, share_of(world), 0)
    assert world.gov.claimable(world.client.address) - before == share_of(world)
    assert world.gov.verification_held() == 0 and world.gov.job_state(job_id)[0] == JobStatus.Settled
    assert_solvent(world.gov)
    # a coordinator that pays with no hop gives the client its share back at once
    job2, s2, close2 = closed_job(world)
    event = (
        world.gov.pay_verifiers([VerificationPayment(job2, s2.job, close2, [])])
        .event("VerificationPaid")
        .args
    )
    assert (event["paid"], event["refund"]) == (0, share_of(world))


def test_an_innocent_verdict_never_backs_a_slash(world: World, accounts: list[LocalAccount]) -> None:
    job_id, s, close_block = closed_job(world)
    keys = signers(world, accounts)
    c = s.sorted_hops()[0]
    verdicts = [
        innocent(world, keys[a], job_id, c).signature for a in drawn(world, job_id, s, close_block, 0, 5)
    ]
    steps = leaves(f"{job_id}/{c.node}/{c.span}")
    evidence = SlashEvidence(job_id, s.job, close_block, c, INNOCENT_LEAF_INDEX, INNOCENT_LEAF, [], verdicts)
    with reverts("ShardRegistryBadMerkleProof", jobId=job_id, leafIndex=INNOCENT_LEAF_INDEX):
        world.reg(world.outsider).slash(evidence)
    assert merkle_proof(steps, 0)  # (the job's real leaves have proofs; the innocent index has none)
    assert not world.gov.get_node(c.node).jailed


def test_the_new_reverts_read_as_sentences(world: World) -> None:
    job_id, s, close_block = closed_job(world)
    for name in (
        "VerdictNotFromDrawnVerifier",
        "TooManyVerdicts",
        "InvalidDrawSize",
        "NoVerificationHeld",
        "VerificationOpen",
        "BatchTooLarge",
    ):
        assert name in SENTENCES
    with pytest.raises(Exception) as info:
        world.reg(world.outsider).refund_verification(job_id, s.job, close_block)
    text = explain(info.value)  # type: ignore[arg-type]
    assert "can still be paid to its verifiers" in text and f"after block {close_block + DRAW_REACH}" in text
