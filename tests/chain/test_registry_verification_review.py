"""Attack review of paid verification and of the registry's split into two contracts (issue 10 items 4 and 5), on a
real anvil.

- ShardDisputes runs by DELEGATECALL on the registry's storage: both must lay it out the same (read from the
  compiler's storage layout in the committed artifacts), and ShardDisputes called directly holds and moves nothing.
- A verification share is spent once: the same job twice in one batch pays nothing twice.
- Once a job's randomness is public, nothing anyone does may change who is drawn for its disputes or its paid
  verdicts, nor in what order (the first `picks` of the draw are the ones `payVerifiers` pays and the first two
  are the ones the coordinator asks). The attack this guards against: a model's list of assignments keeps released ones for the draw's reach, and an
announce on the model drops those older than that. Dropping one by moving the list's last entry into its place
reordered the candidates, so the same seed drew other verifiers: anyone could re-roll a public draw with one
`announceShard` (or break an honest coordinator's slash or payment, whose verifiers were drawn before it).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount

from shardnet.chain.artifacts import artifact_path
from shardnet.chain.commitments import INNOCENT_LEAF, INNOCENT_LEAF_INDEX, sign_verdict
from shardnet.chain.deploy import Deployment, deploy_registry
from shardnet.chain.explain import SENTENCES
from shardnet.chain.registry import HopVerdicts, PaidVerdict, Registry, Settlement, VerificationPayment
from shardnet.span import LayerSpan
from tests.chain.registry_world import MIN_STAKE, OUTPUT, World, assert_solvent, build_world, reverts
from tests.fixtures_chain import VERIFY_PARAMS, DevChain

DRAW_REACH = 2 + 256  # DRAW_DELAY + the blocks blockhash() reaches back
JOBS = 6


@pytest.fixture(scope="module")
def module_deployment(anvil: DevChain, accounts: list[LocalAccount]) -> Deployment:
    return deploy_registry(anvil.w3, accounts[0], VERIFY_PARAMS)


@pytest.fixture
def world(anvil: object, accounts: list[LocalAccount], registry_for: Callable[..., Registry]) -> World:
    """The shared world plus three verifiers on [0, 4) of different stakes: node1's hop [0, 2) has four candidates
    (node3 and these three), listed after node2's assignment."""
    w = build_world(anvil, accounts, registry_for)  # type: ignore[arg-type]
    for i, v in enumerate((accounts[4], accounts[7], accounts[9])):
        w.reg(v).register_node("http://127.0.0.1:8400", (2 + i) * MIN_STAKE)
        w.reg(v).announce_shard(w.model_id, LayerSpan(0, 4))
    return w


def draws(world: World, settled: list[tuple[int, Settlement, int]]) -> list[list[str]]:
    out = []
    for job_id, s, close_block in settled:
        hop = s.sorted_hops()[0]
        drawn = world.gov.draw_verifiers(job_id, s.job, close_block, hop.node, hop.span, hop.root)
        out.append([a for a, _ in drawn])
    return out


def test_pruning_a_model_list_does_not_reorder_a_public_draw(
    world: World, accounts: list[LocalAccount]
) -> None:
    # node2's assignment (second in the model's list) is released and ages past the draw's reach
    world.reg(world.node2).release_shard(world.shard2)
    world.chain.mine(DRAW_REACH + 1)
    settled = []
    for _ in range(JOBS):
        job_id = world.submit()
        s = Settlement(job_id, world.record(job_id), OUTPUT, world.route(job_id))
        settled.append((job_id, s, world.gov.settle_jobs([s]).block_number))
    world.chain.mine(3)  # every job's randomness is public
    before = draws(world, settled)
    assert all(len(d) == 4 for d in before)
    # the coordinator asks the first two drawn of the first job and gets their innocent verdicts ...
    job_id, s, close_block = settled[0]
    hop = s.sorted_hops()[0]
    keys = {a.address: a for a in accounts[:10]}
    verdicts = [
        PaidVerdict(
            INNOCENT_LEAF_INDEX,
            INNOCENT_LEAF,
            sign_verdict(
                keys[v],
                world.domain,
                job_id=job_id,
                accused=hop.node,
                root=hop.root,
                leaf_index=INNOCENT_LEAF_INDEX,
                leaf=INNOCENT_LEAF,
            ),
        )
        for v in before[0][:2]
    ]
    # ... meanwhile anyone announces a shard on the model, which drops node2's stale assignment from its list
    world.reg(world.node1).announce_shard(world.model_id, LayerSpan(0, 1))
    assert draws(world, settled) == before
    # so the verdicts of the verifiers drawn before are still the drawn verifiers' verdicts
    paid = world.gov.pay_verifiers(
        [VerificationPayment(job_id, s.job, close_block, [HopVerdicts(hop, 2, verdicts)])]
    )
    assert paid.event("VerificationPaid").args["verdicts"] == 2
    assert_solvent(world.gov)


def storage_of(contract: str) -> list[tuple[str, str, int, str]]:
    layout = json.loads(artifact_path(contract).read_text())["storageLayout"]
    return [(e["label"], e["slot"], e["offset"], e["type"]) for e in layout]


def test_the_registry_and_its_disputes_contract_lay_out_storage_alike() -> None:
    registry, disputes = storage_of("ShardRegistry"), storage_of("ShardDisputes")
    assert len(registry) > 20 and ("_jobs", "14", 0, "mapping(uint256 => uint256)") in registry
    # every variable of either is declared in the shared base (or its OpenZeppelin parents): same slots, same types
    assert registry == disputes


def test_the_disputes_contract_called_directly_acts_on_nothing(world: World) -> None:
    job_id = world.submit()
    s = Settlement(job_id, world.record(job_id), OUTPUT, world.route(job_id))
    close_block = world.gov.settle_jobs([s]).block_number
    world.chain.mine(DRAW_REACH + 1)
    address = str(world.gov._view("disputes"))
    assert address != world.gov.address and world.balance_of(address) == 0
    direct = Registry(world.chain.w3, address, world.outsider)  # same selectors and errors as the registry's
    with reverts("ShardRegistryUnknownJob", jobId=job_id):
        direct.refund_verification(job_id, s.job, close_block)
    with reverts("ShardRegistryUnknownJob", jobId=job_id):  # even sent by the job's own coordinator
        Registry(world.chain.w3, address, world.owner).pay_verifiers(
            [VerificationPayment(job_id, s.job, close_block, [])]
        )
    assert world.gov.verification_state(job_id) == (True, True)  # the registry's share is untouched
    assert world.balance_of(address) == 0


def test_a_job_twice_in_one_batch_is_paid_once(world: World) -> None:
    job_id = world.submit()
    s = Settlement(job_id, world.record(job_id), OUTPUT, world.route(job_id))
    close_block = world.gov.settle_jobs([s]).block_number
    world.chain.mine(3)
    payment = VerificationPayment(job_id, s.job, close_block, [])
    before = world.gov.claimable(world.client.address)
    with reverts("ShardRegistryNoVerificationHeld", jobId=job_id):
        world.gov.pay_verifiers([payment, payment])
    assert world.gov.claimable(world.client.address) == before
    world.gov.pay_verifiers([payment])
    assert world.gov.verification_state(job_id) == (True, False)
    assert_solvent(world.gov)


def test_every_registry_error_reads_as_a_sentence() -> None:
    """Each custom error the registry (or ShardDisputes through it) can revert with has a sentence that fills in."""
    abi = json.loads(artifact_path("ShardRegistry").read_text())["abi"]
    errors = [e for e in abi if e["type"] == "error" and e["name"].startswith("ShardRegistry")]
    assert len(errors) > 50
    for e in errors:
        name = e["name"].removeprefix("ShardRegistry")
        assert name in SENTENCES, f"{e['name']} has no sentence in shardnet/chain/explain.py"
        SENTENCES[name].format(**{i["name"]: 1 for i in e["inputs"]})  # every field is one of its arguments


def innocent_of(world: World, who: LocalAccount, job_id: int, accused: str, root: bytes) -> PaidVerdict:
    sig = sign_verdict(
        who,
        world.domain,
        job_id=job_id,
        accused=accused,
        root=root,
        leaf_index=INNOCENT_LEAF_INDEX,
        leaf=INNOCENT_LEAF,
    )
    return PaidVerdict(INNOCENT_LEAF_INDEX, INNOCENT_LEAF, sig)


def test_pay_and_refund_windows_neither_overlap_nor_leave_a_gap(
    world: World, accounts: list[LocalAccount]
) -> None:
    keys = {a.address: a for a in accounts[:10]}
    settled = []
    for _ in range(2):
        job_id = world.submit()
        s = Settlement(job_id, world.record(job_id), OUTPUT, world.route(job_id))
        settled.append((job_id, s, world.gov.settle_jobs([s]).block_number))
    world.chain.mine(3)
    (first, s1, close1), (second, s2, close2) = settled
    hop1, hop2 = s1.sorted_hops()[0], s2.sorted_hops()[0]
    drawn1 = draws(world, [settled[0]])[0]
    drawn2 = draws(world, [settled[1]])[0]
    verdict1 = innocent_of(world, keys[drawn1[0]], first, hop1.node, hop1.root)
    verdict2 = innocent_of(world, keys[drawn2[0]], second, hop2.node, hop2.root)
    # the last block a draw reaches (closeBlock + DRAW_DELAY + 256): the coordinator pays, nobody refunds
    world.chain.mine(close1 + DRAW_REACH - 1 - world.chain.block_number())
    paid = world.gov.pay_verifiers(
        [VerificationPayment(first, s1.job, close1, [HopVerdicts(hop1, 2, [verdict1])])]
    )
    assert paid.block_number == close1 + DRAW_REACH and paid.event("VerificationPaid").args["verdicts"] == 1
    # one block later: no verdict can be paid (the draw is out of reach), anyone refunds
    world.chain.mine(close2 + DRAW_REACH - world.chain.block_number())
    with reverts("ShardRegistryRandomnessUnavailable", blockNumber=close2 + 2):
        world.gov.pay_verifiers(
            [VerificationPayment(second, s2.job, close2, [HopVerdicts(hop2, 2, [verdict2])])]
        )
    refund = world.reg(world.outsider).refund_verification(second, s2.job, close2)
    assert refund.block_number == close2 + DRAW_REACH + 1
    assert world.gov.verification_state(second) == (True, False)
    assert_solvent(world.gov)


def test_the_accused_cannot_be_paid_for_a_verdict_on_its_own_hop(world: World) -> None:
    job_id = world.submit()
    s = Settlement(job_id, world.record(job_id), OUTPUT, world.route(job_id))
    close_block = world.gov.settle_jobs([s]).block_number
    world.chain.mine(3)
    hop = s.sorted_hops()[0]  # node1's
    own = innocent_of(world, world.node1, job_id, hop.node, hop.root)
    with reverts("ShardRegistryVerdictNotFromDrawnVerifier", index=0, signer=world.node1.address):
        world.gov.pay_verifiers(
            [VerificationPayment(job_id, s.job, close_block, [HopVerdicts(hop, 16, [own])])]
        )
