"""ShardRegistry (protocol v2) under random sequences of operations (hypothesis stateful testing on a real anvil).

A plain-Python model of the protocol runs beside the contract. After every step the contract's ether balance must
equal the stakes + unbonding stakes + open escrow not yet paid out + claimable balances + protocol fees, and each of
those sums must equal the model's. Settlements carry real EIP-712 signed commitments of random hops (some of nodes
that unstaked since, some already posted by the node itself); every payout is predicted by the model, including the
cap at the escrow. Every claim must pay exactly what the model says the account is owed. Each example starts from
the same EVM snapshot. Settlements hold each job's verification share (the registry deploys with the devnet's
`verifyBps`): its coordinator pays the verdicts of the registry's drawn verifiers on random hops (real EIP-712
signatures of the nodes' keys, innocent or guilty, any draw size), and the rest goes back to the client; or it pays
none (all back at once); or, after the draw's reach, anyone refunds it. Slashes (every drawn verifier signs a
guilty verdict on a proven leaf of a random commitment of the accused) take stake and unbonding stake, jail the
node and release its assignments, interleaved with everything else: a jailed node's posts pay the client, its
settled hops pay nobody, and it can still unbond and withdraw what the slash left.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from eth_account.signers.local import LocalAccount
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from shardnet.chain.commitments import INNOCENT_LEAF, INNOCENT_LEAF_INDEX, sign_commitment, sign_verdict
from shardnet.chain.deploy import Deployment, deploy_registry
from shardnet.chain.errors import ContractRevert
from shardnet.chain.registry import (
    HopVerdicts,
    JobStatus,
    PaidVerdict,
    Registry,
    Settlement,
    SlashEvidence,
    VerificationPayment,
)
from shardnet.chain.registry_types import JobRecord
from shardnet.span import LayerSpan
from shardnet.wire.commitment import merkle_proof, merkle_root, step_hash
from shardnet.wire.tickets import sign_ticket, ticket_proof
from tests.chain.registry_world import INPUT, OUTPUT
from tests.fixtures_chain import VERIFY_PARAMS, DevChain

P = VERIFY_PARAMS
BPS = 10_000
LAYERS = 3
PRICE = 7
MAX_TOKENS = 4
POSITIONS = MAX_TOKENS + P.max_prompt_tokens
UNIT = P.min_stake // 4  # stake amounts move in quarters of minStake
HELD_VERDICTS = 4  # ShardRegistry.HELD_VERDICTS (checked against the contract below)
SHARE = LAYERS * POSITIONS * PRICE * P.verify_bps * HELD_VERDICTS // BPS  # a job's verification share
DRAW_REACH = 2 + 256  # blocks after its close a job's verifiers can be paid


@pytest.fixture(scope="module")
def module_deployment(anvil: DevChain, accounts: list[LocalAccount]) -> Deployment:
    """This module's registry holds a verification share of every settled job (the devnet default)."""
    return deploy_registry(anvil.w3, accounts[0], P)


@contextmanager
def reverts_with(*errors: str) -> Iterator[None]:
    """Expect a ContractRevert naming one of `errors` (the exact-argument checks live in the unit tests)."""
    try:
        yield
    except ContractRevert as exc:
        assert exc.error in errors, exc.describe()
    else:
        raise AssertionError(f"expected the contract to revert with {' or '.join(errors)}")


@dataclass
class NodeModel:
    stake: int = 0
    unbonding: int = 0
    until: int = 0
    bonded_until: int = 0
    live: dict[int, tuple[int, int]] = field(default_factory=dict)  # assignmentId -> (start, end)
    released: int = 0  # releases that still hold model slots (count against the per-node cap) ...
    released_until: int = 0  # ... until this block (the last release + DRAW_DELAY + 256)
    registered: bool = False
    jailed: bool = False

    @property
    def payable(self) -> bool:
        return self.registered and not self.jailed and self.stake >= P.min_stake


@dataclass
class JobModel:
    client: str
    escrow: int
    deadline: int
    status: JobStatus = JobStatus.Open
    posted_paid: int = 0
    # (node, start, end) -> [reserved pay, payableAt, state (1 provisional, 2 paid, 3 voided)]
    posted: dict[tuple[str, int, int], list[int]] = field(default_factory=dict)
    held: int = 0  # verification share held by its settlement, not yet spent
    close_block: int = 0  # once closed (settled, failed or cancelled)

    @property
    def remaining(self) -> int:
        return self.escrow - self.posted_paid


class RegistryModel:
    """What the contract should hold, computed independently of it."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeModel] = {}
        self.jobs: dict[int, JobModel] = {}
        self.owed: dict[str, int] = {}  # credited to the claimable balance, ever
        self.received: dict[str, int] = {}  # paid out by claim, ever
        self.fees = 0
        self.pending = 0  # reserved by provisional posts
        self.slashed: set[tuple[int, str]] = set()  # (jobId, node)

    def node(self, address: str) -> NodeModel:
        return self.nodes.setdefault(address, NodeModel())

    def credit(self, address: str, amount: int) -> None:
        self.owed[address] = self.owed.get(address, 0) + amount

    def claimable(self, address: str) -> int:
        return self.owed.get(address, 0) - self.received.get(address, 0)

    def sums(self) -> tuple[int, int, int, int, int, int, int]:
        return (
            sum(n.stake for n in self.nodes.values()),
            sum(n.unbonding for n in self.nodes.values()),
            sum(j.remaining for j in self.jobs.values() if j.status == JobStatus.Open),
            sum(self.claimable(a) for a in self.owed),
            self.fees,
            self.pending,
            sum(j.held for j in self.jobs.values()),
        )


def make_machine(
    chain: DevChain,
    accounts: list[LocalAccount],
    registry_for: Callable[..., Registry],
    model_id: int,
    snapshot: list[str],
    seen: Counter[str],
) -> type[RuleBasedStateMachine]:
    coordinator, nodes, clients = accounts[0], accounts[1:5], accounts[5:7]
    regs = {a.address: registry_for(a) for a in accounts[:7]}
    keys = {a.address: a for a in accounts[:7]}
    gov = regs[coordinator.address]
    assert gov.constant("HELD_VERDICTS") == HELD_VERDICTS
    MAX_VERIFIERS = gov.constant("MAX_VERIFIERS")
    domain = gov.domain()
    addresses = [a.address for a in nodes]

    def unstakable(n: NodeModel) -> bool:
        return n.stake > P.min_stake or (n.stake > 0 and not n.live)

    class RegistryMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.m = RegistryModel()

        def teardown(self) -> None:
            chain.revert(snapshot[0])
            snapshot[0] = chain.snapshot()

        def open_jobs(self) -> list[int]:
            return sorted(j for j, job in self.m.jobs.items() if job.status == JobStatus.Open)

        def pick(self, data: st.DataObject, ok: Callable[[NodeModel], bool]) -> tuple[str, NodeModel]:
            addr = data.draw(st.sampled_from([a for a in addresses if ok(self.m.node(a))]))
            return addr, self.m.nodes[addr]

        def any_node(self, ok: Callable[[NodeModel], bool]) -> bool:
            return any(ok(self.m.node(a)) for a in addresses)

        def span(self, data: st.DataObject) -> tuple[int, int]:
            start = data.draw(st.integers(0, LAYERS - 1))
            return start, data.draw(st.integers(start + 1, LAYERS))

        def pay_node(self, addr: str, amount: int, at: int) -> None:
            self.m.credit(addr, amount)
            self.m.nodes[addr].bonded_until = at + P.dispute_window

        @initialize()
        def staked_network(self) -> None:
            """Three of the four nodes start registered, covering the model: [0,3), [0,1) and [1,3)."""
            for i, span in ((0, LayerSpan(0, LAYERS)), (1, LayerSpan(0, 1)), (2, LayerSpan(1, LAYERS))):
                addr, n = nodes[i].address, self.m.node(nodes[i].address)
                regs[addr].register_node(f"http://127.0.0.1:{8100 + i}", P.min_stake)
                result = regs[addr].announce_shard(model_id, span)
                n.registered, n.stake = True, P.min_stake
                n.live[int(result.event("ShardAnnounced").args["assignmentId"])] = (span.start, span.end)

        # ------------------------------------------------------------ nodes
        @precondition(lambda self: self.any_node(lambda n: not n.registered))
        @rule(data=st.data(), extra=st.integers(0, 3))
        def register(self, data: st.DataObject, extra: int) -> None:
            addr, n = self.pick(data, lambda n: not n.registered)
            if n.jailed:  # left with nothing after a slash: a jail is never forgotten
                with reverts_with("ShardRegistryNodeJailed"):
                    regs[addr].register_node("http://127.0.0.1:8100", P.min_stake + extra * UNIT)
                return
            regs[addr].register_node("http://127.0.0.1:8100", P.min_stake + extra * UNIT)
            n.registered, n.stake = True, n.stake + P.min_stake + extra * UNIT

        @precondition(lambda self: self.any_node(lambda n: n.registered))
        @rule(data=st.data(), amount=st.integers(1, 4))
        def add_stake(self, data: st.DataObject, amount: int) -> None:
            addr, n = self.pick(data, lambda n: n.registered)
            regs[addr].add_stake(amount * UNIT)
            n.stake += amount * UNIT

        @precondition(lambda self: self.any_node(lambda n: n.registered and unstakable(n)))
        @rule(data=st.data(), amount=st.integers(1, 4))
        def request_unstake(self, data: st.DataObject, amount: int) -> None:
            addr, n = self.pick(data, lambda n: n.registered and unstakable(n))
            amount = min(amount * UNIT, n.stake)
            if n.stake - amount < P.min_stake and n.live:
                with reverts_with("ShardRegistryHasLiveAssignments"):
                    regs[addr].request_unstake(amount)
                return
            result = regs[addr].request_unstake(amount)
            n.stake -= amount
            n.unbonding += amount
            n.until = int(result.event("UnstakeRequested").args["unbondingUntil"])

        @precondition(lambda self: self.any_node(lambda n: n.registered and n.unbonding > 0))
        @rule(data=st.data())
        def withdraw(self, data: st.DataObject) -> None:
            addr, n = self.pick(data, lambda n: n.registered and n.unbonding > 0)
            now = chain.timestamp()
            if now < max(n.until, n.bonded_until):
                if now + 5 < max(n.until, n.bonded_until):
                    with reverts_with("ShardRegistryStillUnbonding"):
                        regs[addr].withdraw_stake()
                return  # near the edge the next block's time is not known exactly: no prediction
            regs[addr].withdraw_stake()
            self.m.credit(addr, n.unbonding)
            n.unbonding, n.until = 0, 0
            if n.stake == 0 and not n.live:
                n.registered = False

        @precondition(lambda self: self.any_node(lambda n: n.payable and len(n.live) < 16))
        @rule(data=st.data())
        def announce(self, data: st.DataObject) -> None:
            addr, n = self.pick(data, lambda n: n.payable and len(n.live) < 16)
            start, end = self.span(data)
            held = len(n.live) + (n.released if chain.block_number() + 1 < n.released_until else 0)
            if held >= 16:
                with reverts_with("ShardRegistryTooManyAssignments"):
                    regs[addr].announce_shard(model_id, LayerSpan(start, end))
                return
            result = regs[addr].announce_shard(model_id, LayerSpan(start, end))
            n.live[int(result.event("ShardAnnounced").args["assignmentId"])] = (start, end)

        @precondition(lambda self: self.any_node(lambda n: bool(n.live)))
        @rule(data=st.data())
        def release(self, data: st.DataObject) -> None:
            addr, n = self.pick(data, lambda n: bool(n.live))
            assignment_id = data.draw(st.sampled_from(sorted(n.live)))
            block = regs[addr].release_shard(assignment_id).block_number
            del n.live[assignment_id]
            n.released = n.released + 1 if block < n.released_until else 1
            n.released_until = block + 2 + 256

        # ------------------------------------------------------------ jobs
        @rule(c=st.integers(0, len(clients) - 1), extra=st.integers(0, 10_000))
        def submit(self, c: int, extra: int) -> None:
            client = clients[c].address
            value = regs[client].quote(model_id, MAX_TOKENS) + extra
            ev = (
                regs[client]
                .submit_job(model_id, INPUT, MAX_TOKENS, coordinator.address, value)
                .event("JobSubmitted")
            )
            self.m.jobs[int(ev.args["jobId"])] = JobModel(client, value, int(ev.args["deadline"]))

        def hops(self, data: st.DataObject) -> list[tuple[str, int, int, int]]:
            """Random (node, start, end, positions) with distinct (start, node), of any node that ever registered."""
            known = [
                a
                for a in addresses
                if self.m.node(a).registered or self.m.node(a).stake or self.m.node(a).live
            ]
            chosen: dict[tuple[int, str], tuple[str, int, int, int]] = {}
            for _ in range(data.draw(st.integers(0, 4)) if known else 0):
                node = data.draw(st.sampled_from(known))
                start, end = self.span(data)
                chosen[(start, node)] = (node, start, end, data.draw(st.integers(0, POSITIONS)))
            ordered = [chosen[k] for k in sorted(chosen, key=lambda k: (k[0], int(k[1], 16)))]
            disjoint, end_ = (
                [],
                0,
            )  # the registry pays no layer of a job twice: spans disjoint, in layer order
            for hop in ordered:
                if hop[1] >= end_:
                    disjoint.append(hop)
                    end_ = hop[2]
            return disjoint

        @precondition(lambda self: bool(self.open_jobs()))
        @rule(data=st.data())
        def settle(self, data: st.DataObject) -> None:
            ids = data.draw(st.lists(st.sampled_from(self.open_jobs()), min_size=1, max_size=3, unique=True))
            plans = {j: self.hops(data) for j in ids}
            settlements = [
                Settlement(
                    j,
                    gov.job_record(j),
                    OUTPUT,
                    [
                        sign_commitment(
                            keys[n],
                            domain,
                            job_id=j,
                            span=LayerSpan(s, e),
                            positions=pos,
                            steps=1,
                            root=bytes([j % 256]) * 32,
                        )
                        for n, s, e, pos in plans[j]
                    ],
                )
                for j in ids
            ]
            result = gov.settle_jobs(settlements)
            at = int(gov.w3.eth.get_block(result.block_number)["timestamp"])
            events = {int(e.args["jobId"]): e for e in result.events if e.name == "JobSettled"}
            assert sorted(events) == sorted(ids)
            fees = 0
            for j in ids:
                job, remaining, paid, mask = self.m.jobs[j], self.m.jobs[j].remaining, 0, 0
                for i, (n, s, e, pos) in enumerate(plans[j]):
                    post = job.posted.get((n, s, e))
                    voided = False
                    if post is not None and post[2] == 1 and at < post[1]:  # provisional: the settlement wins
                        post[2] = 3
                        remaining += post[0]
                        job.posted_paid -= post[0]
                        self.m.pending -= post[0]
                        voided = True
                    elif post is not None:
                        continue
                    # a node that posted this hop is paid even if it unstaked since (it stays bonded by its post)
                    if not self.m.node(n).payable and (not voided or self.m.node(n).jailed):
                        continue
                    pay = min(pos * (e - s) * PRICE, remaining)
                    remaining -= pay
                    paid += pay
                    mask |= 1 << i
                    if self.m.node(n).payable:
                        self.pay_node(n, pay, at)
                    else:
                        self.m.credit(n, pay)
                fee = min(paid * P.coordinator_fee_bps // BPS, remaining)
                remaining -= fee
                cut = min(paid * P.protocol_fee_bps // BPS, remaining)
                remaining -= cut
                args = events[j].args
                held = SHARE if SHARE <= remaining else 0
                assert (args["paidToNodes"], args["coordinatorFee"], args["refund"], args["paidHops"]) == (
                    paid,
                    fee,
                    remaining - held,
                    mask,
                )
                fees += fee
                self.m.fees += cut
                job.close_block = result.block_number
                if SHARE <= remaining:  # the settlement holds the verification share
                    remaining -= SHARE
                    job.held = SHARE
                assert gov.verification_state(j) == (job.held > 0, job.held > 0)
                self.m.credit(job.client, remaining)
                job.status = JobStatus.Settled
            self.m.credit(coordinator.address, fees)
            held = [j for j in ids if self.m.jobs[j].held]
            if held and data.draw(st.booleans()):  # its checks ran: pay their verdicts at once
                self.pay_drawn(data, data.draw(st.sampled_from(held)))

        @precondition(lambda self: bool(self.open_jobs()) and self.any_node(lambda n: n.payable))
        @rule(data=st.data())
        def post(self, data: st.DataObject) -> None:
            job_id = data.draw(st.sampled_from(self.open_jobs()))
            job = self.m.jobs[job_id]
            addr, n = self.pick(data, lambda n: n.payable)
            start, end = self.span(data)
            positions = data.draw(st.integers(0, POSITIONS))
            c = sign_commitment(
                keys[addr],
                domain,
                job_id=job_id,
                span=LayerSpan(start, end),
                positions=positions,
                steps=1,
                root=b"\x07" * 32,
            )
            ticket = ticket_proof(
                sign_ticket(
                    coordinator,
                    worker=addr,
                    session_id="s",
                    job_id=job_id,
                    span=LayerSpan(start, end),
                    max_positions=2**16,
                    expires_at=2**40,
                    chain_id=domain.chain_id,
                    registry=domain.registry,
                )
            )
            if chain.timestamp() + 5 >= job.deadline:
                return  # too close to the deadline to predict
            if (addr, start, end) in job.posted:
                with reverts_with("ShardRegistryAlreadyCommitted"):
                    regs[addr].post_commitment((job_id, gov.job_record(job_id)), c, ticket)
                return
            if len(job.posted) >= 16:
                with reverts_with("ShardRegistryTooManyHops"):
                    regs[addr].post_commitment((job_id, gov.job_record(job_id)), c, ticket)
                return
            result = regs[addr].post_commitment((job_id, gov.job_record(job_id)), c, ticket)
            pay = min(positions * (end - start) * PRICE, job.remaining)
            at = int(gov.w3.eth.get_block(result.block_number)["timestamp"])
            args = result.event("CommitmentPosted").args
            assert (args["paid"], args["payableAt"]) == (pay, at + P.dispute_window)
            job.posted[(addr, start, end)] = [pay, at + P.dispute_window, 1]
            job.posted_paid += pay
            self.m.pending += pay
            self.pay_node(addr, 0, at)  # bonded from the post on, credited when collected

        def provisional(self) -> list[tuple[int, tuple[str, int, int]]]:
            return [(j, k) for j, job in self.m.jobs.items() for k, p in job.posted.items() if p[2] == 1]

        @precondition(lambda self: bool(self.provisional()))
        @rule(data=st.data())
        def collect(self, data: st.DataObject) -> None:
            job_id, key = data.draw(st.sampled_from(self.provisional()))
            post = self.m.jobs[job_id].posted[key]
            addr, start, end = key
            if chain.timestamp() + 5 < post[1]:
                with reverts_with("ShardRegistryPostProvisional"):
                    regs[addr].collect_posted(job_id, addr, LayerSpan(start, end))
                return
            chain.advance_time(max(0, post[1] - chain.timestamp()) + 1)
            result = regs[addr].collect_posted(job_id, addr, LayerSpan(start, end))
            at = int(gov.w3.eth.get_block(result.block_number)["timestamp"])
            # committed work is paid even to a node that left since; a node jailed since forfeits it to the client
            to = self.m.jobs[job_id].client if self.m.node(addr).jailed else addr
            assert (
                result.event("PostedCommitmentPaid").args["to"],
                result.event("PostedCommitmentPaid").args["amount"],
            ) == (to, post[0])
            post[2] = 2
            self.m.pending -= post[0]
            if to == addr:
                self.pay_node(addr, post[0], at)
            else:
                self.m.credit(to, post[0])

        @precondition(lambda self: bool(self.open_jobs()))
        @rule(data=st.data())
        def fail(self, data: st.DataObject) -> None:
            job_id = data.draw(st.sampled_from(self.open_jobs()))
            job = self.m.jobs[job_id]
            result = gov.fail_job(job_id, gov.job_record(job_id), "random")
            assert result.event("JobFailed").args["refund"] == job.remaining
            job.close_block = result.block_number
            self.m.credit(job.client, job.remaining)
            job.status = JobStatus.Failed

        @precondition(lambda self: bool(self.open_jobs()))
        @rule(data=st.data())
        def cancel_after_deadline(self, data: st.DataObject) -> None:
            job_id = data.draw(st.sampled_from(self.open_jobs()))
            job = self.m.jobs[job_id]
            chain.advance_time(P.job_timeout + 1)
            result = regs[job.client].cancel_job(job_id)
            assert result.event("JobCancelled").args["refund"] == job.remaining
            job.close_block = result.block_number
            self.m.credit(job.client, job.remaining)
            job.status = JobStatus.Cancelled

        def held_jobs(self) -> list[int]:
            return [j for j, job in self.m.jobs.items() if job.held]

        @precondition(lambda self: bool(self.held_jobs()))
        @rule(data=st.data())
        def spend_verification_share(self, data: st.DataObject) -> None:
            """Its coordinator pays no verdict (the share goes back at once), or, once no draw reaches the job, anyone
            refunds it; a spent share cannot be spent again."""
            job_id = data.draw(st.sampled_from(self.held_jobs()))
            job = self.m.jobs[job_id]
            record = gov.job_record(job_id)
            chain.mine(3)
            if chain.block_number() < job.close_block + DRAW_REACH and data.draw(st.booleans()):
                paid = gov.pay_verifiers([VerificationPayment(job_id, record, job.close_block, [])])
            else:
                if chain.block_number() <= job.close_block + DRAW_REACH:
                    with reverts_with("ShardRegistryVerificationOpen"):
                        regs[job.client].refund_verification(job_id, record, job.close_block)
                    chain.mine(job.close_block + DRAW_REACH + 1 - chain.block_number())
                paid = regs[job.client].refund_verification(job_id, record, job.close_block)
            args = paid.event("VerificationPaid").args
            assert (args["paid"], args["refund"], args["verdicts"]) == (0, job.held, 0)
            self.m.credit(job.client, job.held)
            job.held = 0
            with reverts_with("ShardRegistryNoVerificationHeld"):
                gov.pay_verifiers([VerificationPayment(job_id, record, job.close_block, [])])

        def reachable(self, held_only: bool) -> list[int]:
            """Closed jobs whose draw a transaction sent now still reads (blockhash reaches 256 blocks back)."""
            now = chain.block_number()
            return [
                j
                for j, job in self.m.jobs.items()
                if job.status != JobStatus.Open
                and (job.held or not held_only)
                and now + 4 < job.close_block + DRAW_REACH
            ]

        def await_randomness(self, job: JobModel) -> None:
            if chain.block_number() < job.close_block + 3:  # blockhash(closeBlock + DRAW_DELAY) public
                chain.mine(job.close_block + 3 - chain.block_number())

        @precondition(lambda self: bool(self.reachable(held_only=True)))
        @rule(data=st.data())
        def pay_verdicts(self, data: st.DataObject) -> None:
            self.pay_drawn(data, data.draw(st.sampled_from(self.reachable(held_only=True))))

        def pay_drawn(self, data: st.DataObject, job_id: int) -> None:
            """Its coordinator pays drawn verifiers' verdicts (of any draw size, in any order) on random hops signed by
            the nodes; each gets verifyBps of its hop's pay while the share lasts, the client the rest."""
            job, record = self.m.jobs[job_id], gov.job_record(job_id)
            self.await_randomness(job)
            hops, credits, paid, count = [], [], 0, 0
            for n, s, e, pos in self.hops(data):
                root = bytes([data.draw(st.integers(0, 255))]) * 32
                span = LayerSpan(s, e)
                c = sign_commitment(
                    keys[n], domain, job_id=job_id, span=span, positions=pos, steps=4, root=root
                )
                picks = data.draw(st.integers(2, MAX_VERIFIERS))
                drawn = [a for a, _ in gov.draw_verifiers(job_id, record, job.close_block, n, span, root)][
                    :picks
                ]
                signers = data.draw(st.permutations(drawn))[: data.draw(st.integers(0, len(drawn)))]
                verdicts = []
                for v in signers:
                    index = data.draw(st.sampled_from([INNOCENT_LEAF_INDEX, 0, 3]))
                    leaf = INNOCENT_LEAF if index == INNOCENT_LEAF_INDEX else step_hash(b"another leaf")
                    sig = sign_verdict(
                        keys[v], domain, job_id=job_id, accused=n, root=root, leaf_index=index, leaf=leaf
                    )
                    verdicts.append(PaidVerdict(index, leaf, sig))
                    due = min(pos * (e - s) * PRICE * P.verify_bps // BPS, SHARE - paid)
                    credits.append((v, due))
                    paid += due
                count += len(signers)
                hops.append(HopVerdicts(c, picks, verdicts))
            result = gov.pay_verifiers([VerificationPayment(job_id, record, job.close_block, hops)])
            args = result.event("VerificationPaid").args
            assert (args["paid"], args["refund"], args["verdicts"]) == (paid, SHARE - paid, count)
            seen["payments"] += 1
            seen["verdicts"] += count
            seen["verdicts paid"] += sum(1 for _, due in credits if due)
            seen["shares spent to the last wei"] += paid == SHARE
            for v, due in credits:
                self.m.credit(v, due)
            self.m.credit(job.client, SHARE - paid)
            job.held = 0

        def slashable(
            self, job_id: int, record: JobRecord, close_block: int
        ) -> list[tuple[str, tuple[int, int]]]:
            """The (node with stake, span) pairs of this job that the chain draws 2+ verifiers for."""
            return [
                (a, (s, e))
                for a in addresses
                if self.m.node(a).stake + self.m.node(a).unbonding > 0
                for s in range(LAYERS)
                for e in range(s + 1, LAYERS + 1)
                if len(gov.draw_verifiers(job_id, record, close_block, a, LayerSpan(s, e), bytes(32))) >= 2
            ]

        @precondition(lambda self: bool(self.reachable(held_only=False)))
        @rule(data=st.data())
        def slash(self, data: st.DataObject) -> None:
            """Anyone slashes a node's commitment on a closed job with every drawn verifier's guilty verdict: slashBps
            of its stake and unbonding stake go to the job's client, it is jailed and its assignments released."""
            job_id = data.draw(st.sampled_from(self.reachable(held_only=False)))
            job, record = self.m.jobs[job_id], gov.job_record(job_id)
            self.await_randomness(job)
            # Most of the time a slash that can take effect: a node with stake on a span where 2+ others were
            # drawable. Drawn blindly, a random (node, span) pair almost never has two others covering it, and a run of
            # 45 sequences then saw no slash at all (CI, one run in several).
            aimed = self.slashable(job_id, record, job.close_block) if data.draw(st.integers(0, 3)) else []
            if aimed:
                accused, (start, end) = data.draw(st.sampled_from(aimed))
                span = LayerSpan(start, end)
            else:
                accused, span = data.draw(st.sampled_from(addresses)), LayerSpan(*self.span(data))
            leaves = [step_hash(f"{job_id}/{accused}/{i}".encode()) for i in range(4)]
            root = merkle_root(leaves)
            c = sign_commitment(
                keys[accused], domain, job_id=job_id, span=span, positions=1, steps=4, root=root
            )
            drawn = gov.draw_verifiers(job_id, record, job.close_block, accused, span, root)
            index = data.draw(st.integers(0, 3))
            signatures = [
                sign_verdict(
                    keys[v],
                    domain,
                    job_id=job_id,
                    accused=accused,
                    root=root,
                    leaf_index=index,
                    leaf=leaves[index],
                )
                for v, _ in drawn
            ]
            proof = merkle_proof(leaves, index)
            evidence = SlashEvidence(
                job_id, record, job.close_block, c, index, leaves[index], proof, signatures
            )
            anyone = regs[data.draw(st.sampled_from(sorted(regs)))]
            if (job_id, accused) in self.m.slashed or len(drawn) < 2:
                with reverts_with("ShardRegistryAlreadySlashed", "ShardRegistryNotEnoughVerifiers"):
                    anyone.slash(evidence)
                return
            result = anyone.slash(evidence)
            n = self.m.node(accused)
            from_stake, from_unbonding = n.stake * P.slash_bps // BPS, n.unbonding * P.slash_bps // BPS
            assert result.event("NodeSlashed").args["amount"] == from_stake + from_unbonding
            n.stake -= from_stake
            n.unbonding -= from_unbonding
            n.jailed = True
            for _ in n.live:
                n.released = n.released + 1 if result.block_number < n.released_until else 1
                n.released_until = result.block_number + DRAW_REACH
            n.live = {}
            self.m.credit(job.client, from_stake + from_unbonding)
            self.m.slashed.add((job_id, accused))
            seen["slashes"] += 1
            seen["slashes taking stake"] += from_stake + from_unbonding > 0

        @rule(seconds=st.sampled_from([1, P.unbonding_period]))
        def wait(self, seconds: int) -> None:
            chain.advance_time(seconds)

        # ------------------------------------------------------------ payouts
        @precondition(lambda self: any(self.m.claimable(a.address) for a in accounts[:7]))
        @rule(data=st.data())
        def claim(self, data: st.DataObject) -> None:
            who = data.draw(st.sampled_from([a.address for a in accounts[:7] if self.m.claimable(a.address)]))
            expected = self.m.claimable(who)
            assert regs[who].claimable(who) == expected
            ev = regs[who].claim().event("Claimed")
            assert ev.args == {"account": who, "amount": expected}
            self.m.received[who] = self.m.received.get(who, 0) + expected
            assert self.m.received[who] <= self.m.owed[who]
            if data.draw(st.booleans()):  # nothing more to take
                with reverts_with("ShardRegistryNothingToClaim"):
                    regs[who].claim()

        # ------------------------------------------------------------ invariants
        @invariant()
        def balance_is_what_the_contract_owes(self) -> None:
            sums = (
                gov.total_staked(),
                gov.total_unbonding(),
                gov.open_escrow(),
                sum(gov.claimable(a.address) for a in accounts[:7]),
                gov.protocol_fees(),
                gov.pending_posted(),
                gov.verification_held(),
            )
            assert gov.balance() == sum(sums)
            assert sums == self.m.sums()

        @invariant()
        def live_assignments_are_the_announced_and_unreleased(self) -> None:
            # released assignments linger in the model's list for the verifier draw; the view never shows them
            expected = sorted(i for n in self.m.nodes.values() for i in n.live)
            assert sorted(gov.live_assignments(model_id)) == expected

    return RegistryMachine


def test_random_operation_sequences_keep_the_books(
    anvil: DevChain, accounts: list[LocalAccount], registry_for: Callable[..., Registry]
) -> None:
    gov = registry_for(accounts[0])
    gov.set_coordinator(accounts[0].address, "http://127.0.0.1:9000", True)
    model_id = int(
        gov.register_model("rand", "bafkreirand", LAYERS, PRICE).event("ModelRegistered").args["modelId"]
    )
    snapshot = [anvil.snapshot()]
    seen: Counter[str] = Counter()
    machine = make_machine(anvil, accounts, registry_for, model_id, snapshot, seen)
    effects = ("verdicts paid", "slashes taking stake")
    for _ in range(
        3
    ):  # a slash needs 2+ other nodes drawn on a random span: some runs of 15 sequences have none
        run_state_machine_as_test(
            machine,
            # No shrinking: on this chain it takes minutes; the failing sequence (<= 40 steps) is printed as found.
            settings=settings(
                max_examples=15,
                stateful_step_count=40,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
                phases=[Phase.explicit, Phase.reuse, Phase.generate],
            ),
        )
        if all(seen[k] for k in effects):
            break
    # the paid-verification and slash rules ran with effect, not only their refusals
    assert all(seen[k] for k in effects), seen
