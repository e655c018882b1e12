"""Paid verification end to end on a real anvil registry (issue 10 item 5): five real worker servers staked on one
span, a real job served and settled, the registry's drawn verifiers judge the hop on POST /v1/verify and sign their
verdicts (innocent ones too), and the coordinator's `verifier_pay` has the registry pay them from the job's held
verification share: each drawn verifier that signed a verdict sees its claimable balance rise by `verifyBps` of
the hop's pay; one that stayed silent or did not sign is paid nothing; the client gets the rest back at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from aiohttp import web
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from coordinator.dispute_answers import DisputeOutcome
from coordinator.disputes import DisputeRunner
from coordinator.verifier_pay import VerifierPayer, hop_verdicts
from shardnet.chain.commitments import INNOCENT_LEAF, INNOCENT_LEAF_INDEX, sign_innocent_verdict
from shardnet.chain.deploy import Deployment, deploy_registry
from shardnet.chain.registry import HopVerdicts, PaidVerdict, Registry, Settlement
from shardnet.model import load_block
from shardnet.span import LayerSpan
from shardnet.store.manifest import Manifest
from tests.chain.registry_world import build_world
from tests.coordinator.harness import serve_on_kernel_port
from tests.coordinator.test_disputes import (
    MAX_TOKENS,
    PRICE,
    SPAN,
    Setup,
    _colluder,
    _serve_job,
    _server,
)
from tests.coordinator.test_disputes import setup as setup  # noqa: F401  (the fixture, on this module's registry)
from tests.fixtures_chain import VERIFY_PARAMS, DevChain

BPS = 10_000


@pytest.fixture(scope="module")
def module_deployment(anvil: DevChain, accounts: list[LocalAccount]) -> Deployment:
    """A registry whose settlements hold the verification share (the devnet default)."""
    return deploy_registry(anvil.w3, accounts[0], VERIFY_PARAMS)


@pytest.fixture(scope="module")
def blocks(tiny_llama_store: tuple[Path, str, Manifest]) -> Iterator[dict[torch.dtype, Any]]:
    store, _cid, manifest = tiny_llama_store
    yield {torch.float32: load_block(store, manifest.to_json(), SPAN, torch.float32)}


def _checked_and_paid(
    s: Setup,
    accused: LocalAccount,
    servers: dict[str, web.Application],
    skip: Callable[[list[str]], set[str]] = lambda _drawn: set(),
) -> tuple[DisputeOutcome, dict[str, Any], int]:
    """Serve a job on the accused, settle it, have the drawn verifiers judge it, pay them; returns the outcome, the
    VerificationPaid event's args and the hop's pay. `skip(draw)`: the drawn verifiers this coordinator leaves out
    of the first stage (as if out of routing after 3 faults; still asked as referees), to choose who judges first."""
    quote = s.owner.quote(s.model_id, MAX_TOKENS)
    submitted = s.registry_for(s.client).submit_job(
        s.model_id, keccak(text="prompt"), MAX_TOKENS, s.coordinator.address, quote
    )
    job_id = int(submitted.event("JobSubmitted").args["jobId"])

    async def go() -> tuple[DisputeOutcome, str | None, int]:
        runners = []
        for address, app in servers.items():
            runner = web.AppRunner(app)
            await runner.setup()
            s.ports[address] = await serve_on_kernel_port(runner)  # the URLs below read s.ports
            runners.append(runner)
        try:
            signed, work = await _serve_job(s, accused, job_id)
            record = s.owner.job_record(job_id)
            close = s.owner.settle_jobs(
                [Settlement(job_id, record, keccak(text="out"), [signed])]
            ).block_number
            s.chain.mine(3)
            drawn = s.owner.draw_verifiers(job_id, record, close, signed.node, signed.span, signed.root)
            skipped = skip([address for address, _ in drawn])
            runner = DisputeRunner(
                s.owner,
                s.coordinator,
                lambda a: f"http://127.0.0.1:{s.ports[a]}",
                excluded=lambda a: a in skipped,
                verify_timeout_s=60,
            )
            outcome = await runner.check_hop(job_id, record, close, signed, work, "float32")
            assert outcome.escalated or not skipped & {a.verifier for a in outcome.answers}  # referees only
            hop = hop_verdicts(signed, outcome.answers, outcome.picks, [w.leaf() for w in work])
            tx = await VerifierPayer(s.owner).pay(job_id, record, close, [hop])
            return outcome, tx, signed.positions * (SPAN.end - SPAN.start) * PRICE
        finally:
            for runner in runners:
                await runner.cleanup()

    outcome, tx, hop_pay = asyncio.run(go())
    assert tx is not None
    [event] = [
        e for e in s.owner.get_logs(0, s.owner.block_number(), ["VerificationPaid"]) if e.tx_hash == tx
    ]
    assert event.args["jobId"] == job_id
    return outcome, dict(event.args), hop_pay


def test_drawn_verifiers_that_answer_are_paid_and_the_silent_are_not(
    setup: Setup, blocks: dict[torch.dtype, Any]
) -> None:  # noqa: F811
    s = setup
    accused, silent, unsigned, honest = s.nodes[0], s.nodes[1], s.nodes[2], s.nodes[3:]
    servers = {n.address: _server(s, n, blocks[torch.float32]).app() for n in (accused, *honest)}
    servers[unsigned.address] = _colluder(s, unsigned, guilty=False)  # innocent, with no signed verdict
    before = {n.address: s.owner.claimable(n.address) for n in s.nodes[1:]}
    client_before = s.owner.claimable(s.client.address)

    # the silent one judges first (the draw is random): its refusal makes every referee judge too
    def first_silent(drawn: list[str]) -> set[str]:
        return {
            a
            for a in drawn
            if a not in (silent.address, drawn[0] if drawn[0] != silent.address else drawn[1])
        }

    outcome, paid, hop_pay = _checked_and_paid(s, accused, servers, first_silent)
    assert not outcome.slashed and outcome.escalated and len(outcome.answers) == 4
    paid_verifiers = list(honest)  # all asked: every signed verdict paid
    pay = hop_pay * VERIFY_PARAMS.verify_bps // BPS
    count = len(paid_verifiers)
    assert pay > 0 and count >= 1 and (paid["verdicts"], paid["paid"]) == (count, count * pay)
    for n in s.nodes[1:]:
        earned = pay if n in paid_verifiers else 0
        assert s.owner.claimable(n.address) - before[n.address] == earned, n.address
    share = s.owner.verification_share(s.owner.job_record(paid["jobId"]))
    assert paid["refund"] == share - count * pay
    settled_refund = s.owner.get_logs(0, s.owner.block_number(), ["JobSettled"])[-1].args["refund"]
    assert s.owner.claimable(s.client.address) - client_before == settled_refund + share - count * pay
    assert s.owner.verification_state(paid["jobId"]) == (True, False)
    assert s.owner.balance() == s.owner.liabilities()
    # a paid verifier takes it out with the worker's existing claim
    assert s.registry_for(paid_verifiers[0]).claim().event("Claimed").args["amount"] >= pay


def test_guilty_verdicts_are_paid_too(setup: Setup, blocks: dict[torch.dtype, Any]) -> None:  # noqa: F811
    s = setup
    accused, others = s.nodes[0], s.nodes[1:]
    servers = {accused.address: _server(s, accused, blocks[torch.float32], perturb=0.05).app()}
    servers |= {n.address: _server(s, n, blocks[torch.float32]).app() for n in others}
    before = {n.address: s.owner.claimable(n.address) for n in others}
    outcome, paid, hop_pay = _checked_and_paid(s, accused, servers)
    assert outcome.slashed and all(a.guilty for a in outcome.answers)
    pay = hop_pay * VERIFY_PARAMS.verify_bps // BPS
    assert (paid["verdicts"], paid["paid"]) == (4, 4 * pay)
    for n in others:
        assert s.owner.claimable(n.address) - before[n.address] == pay
    assert s.owner.balance() == s.owner.liabilities()


def test_a_verdict_the_registry_would_refuse_is_dropped_not_the_whole_payment(
    anvil: DevChain, accounts: list[LocalAccount], registry_for: Callable[[LocalAccount | None], Registry]
) -> None:
    world = build_world(anvil, accounts, registry_for)
    for v in (accounts[4], accounts[7]):
        world.reg(v).register_node("http://127.0.0.1:8400", 2 * world.gov.min_stake())
        world.reg(v).announce_shard(world.model_id, LayerSpan(0, 4))
    job_id = world.submit()
    settlement = Settlement(job_id, world.record(job_id), keccak(text="out"), world.route(job_id))
    close = world.gov.settle_jobs([settlement]).block_number
    world.chain.mine(3)
    c = settlement.sorted_hops()[0]
    keys = {a.address: a for a in (*accounts[:9], world.node3)}
    first, second, third = (
        a for a, _ in world.gov.draw_verifiers(job_id, settlement.job, close, c.node, c.span, c.root)
    )

    def innocent(who: LocalAccount) -> PaidVerdict:
        sig = sign_innocent_verdict(who, world.domain, job_id=job_id, accused=c.node, root=c.root)
        return PaidVerdict(INNOCENT_LEAF_INDEX, INNOCENT_LEAF, sig)

    # an outsider, a verifier drawn only in a larger draw, and one verdict twice: each would revert the payment
    verdicts = [innocent(keys[first]), innocent(world.outsider), innocent(keys[third]), innocent(keys[first])]
    verdicts.append(innocent(keys[second]))
    tx = asyncio.run(
        VerifierPayer(world.gov).pay(job_id, settlement.job, close, [HopVerdicts(c, 2, verdicts)])
    )
    assert tx is not None
    [event] = [
        e for e in world.gov.get_logs(0, world.gov.block_number(), ["VerificationPaid"]) if e.tx_hash == tx
    ]
    assert event.args["verdicts"] == 2 and event.args["paid"] == 2 * (
        world.pay_of() * VERIFY_PARAMS.verify_bps // BPS
    )


def test_a_first_stage_that_skipped_an_excluded_verifier_pays_both_verifiers_it_asked(
    setup: Setup, blocks: dict[torch.dtype, Any]
) -> None:  # noqa: F811
    """With the draw's first verifier skipped, the first stage is the draw's 2nd and 3rd: the payment redraws 3
    (`DisputeOutcome.picks`), not 2 (the answers' count), or the 3rd's verdict is dropped unpaid."""
    s = setup
    accused, honest = s.nodes[0], s.nodes[1:]
    servers = {n.address: _server(s, n, blocks[torch.float32]).app() for n in (accused, *honest)}
    outcome, paid, hop_pay = _checked_and_paid(s, accused, servers, lambda drawn: {drawn[0]})
    assert not outcome.slashed and not outcome.escalated and len(outcome.answers) == 2
    assert outcome.picks == 3
    pay = hop_pay * VERIFY_PARAMS.verify_bps // BPS
    assert (paid["verdicts"], paid["paid"]) == (2, 2 * pay)


def test_payments_ready_together_share_one_transaction_and_a_bad_one_does_not_stall_the_others(
    anvil: DevChain, accounts: list[LocalAccount], registry_for: Callable[[LocalAccount | None], Registry]
) -> None:
    """`VerifierPayer` with a window: a checked job's verdicts and an unchecked job's share go in one payVerifiers,
    each paid as alone; next, a payment the registry refuses (a wrong close block) sinks that batch, and the good
    payment beside it is sent alone and paid, the bad one stays held (anyone refunds it later)."""
    world = build_world(anvil, accounts, registry_for)
    for v in (accounts[4], accounts[7]):
        world.reg(v).register_node("http://127.0.0.1:8400", 2 * world.gov.min_stake())
        world.reg(v).announce_shard(world.model_id, LayerSpan(0, 4))
    jobs = [world.submit() for _ in range(4)]
    settlements = [Settlement(j, world.record(j), keccak(text="out"), world.route(j)) for j in jobs]
    close = world.gov.settle_jobs(settlements).block_number
    world.chain.mine(3)
    keys = {a.address: a for a in (*accounts[:9], world.node3)}
    c = settlements[0].sorted_hops()[0]
    first, second = (
        a for a, _ in world.gov.draw_verifiers(jobs[0], settlements[0].job, close, c.node, c.span, c.root)[:2]
    )
    verdicts = [
        PaidVerdict(
            INNOCENT_LEAF_INDEX,
            INNOCENT_LEAF,
            sign_innocent_verdict(keys[who], world.domain, job_id=jobs[0], accused=c.node, root=c.root),
        )
        for who in (first, second)
    ]
    client = world.client.address
    client_before = world.gov.claimable(client)
    payer = VerifierPayer(world.gov, window_s=2)

    async def pay_together() -> list[str | None]:
        return list(
            await asyncio.gather(
                payer.pay(jobs[0], settlements[0].job, close, [HopVerdicts(c, 2, verdicts)]),
                payer.pay(jobs[1], settlements[1].job, close, []),
            )
        )

    tx0, tx1 = asyncio.run(pay_together())
    assert tx0 is not None and tx0 == tx1
    events = {
        int(e.args["jobId"]): e.args
        for e in world.gov.get_logs(0, world.gov.block_number(), ["VerificationPaid"])
        if e.tx_hash == tx0
    }
    pay = world.pay_of() * VERIFY_PARAMS.verify_bps // BPS
    share = world.gov.verification_share(settlements[0].job)
    assert (events[jobs[0]]["verdicts"], events[jobs[0]]["paid"]) == (2, 2 * pay)
    assert (events[jobs[1]]["verdicts"], events[jobs[1]]["paid"], events[jobs[1]]["refund"]) == (0, 0, share)
    assert world.gov.claimable(client) - client_before == 2 * share - 2 * pay

    async def pay_beside_a_bad_one() -> list[str | None]:
        return list(
            await asyncio.gather(
                payer.pay(jobs[2], settlements[2].job, close + 1, []),  # not the block it closed in: reverts
                payer.pay(jobs[3], settlements[3].job, close, []),
            )
        )

    bad, good = asyncio.run(pay_beside_a_bad_one())
    assert bad is None and good is not None
    assert world.gov.verification_state(jobs[3]) == (True, False)  # paid: its share spent
    assert world.gov.verification_state(jobs[2]) == (
        True,
        True,
    )  # still held: refundable after the draw's reach
    assert world.gov.balance() == world.gov.liabilities()


def test_a_settled_job_nobody_checks_gets_its_share_back_at_once(
    anvil: DevChain, accounts: list[LocalAccount], registry_for: Callable[[LocalAccount | None], Registry]
) -> None:
    """`VerifierPayer.return_share` (checks off, a LoRA job, a job settled by a restarted coordinator): the whole
    verification share is credited to the client from the settlement's transaction alone, long before the draw's
    reach would let anyone refund it; a second call finds nothing held and sends nothing."""
    world = build_world(anvil, accounts, registry_for)
    job_id = world.submit()
    settlement = Settlement(job_id, world.record(job_id), keccak(text="out"), world.route(job_id))
    settled = world.gov.settle_jobs([settlement])
    share = world.gov.verification_share(settlement.job)
    assert share > 0 and world.gov.verification_state(job_id) == (True, True)
    client_before = world.gov.claimable(world.client.address)
    payer = VerifierPayer(world.gov, window_s=0.5)
    assert asyncio.run(payer.return_share(job_id, settled.tx_hash)) == []
    assert world.gov.verification_state(job_id) == (True, False)
    assert world.gov.claimable(world.client.address) - client_before == share
    blocks = world.gov.block_number()
    assert asyncio.run(payer.return_share(job_id, settled.tx_hash)) == []
    assert world.gov.block_number() == blocks  # nothing held: no transaction
    assert world.gov.balance() == world.gov.liabilities()
