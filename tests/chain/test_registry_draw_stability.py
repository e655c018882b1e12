"""Attack review of the verifier draw (issue 10 items 4 and 5) on a real anvil: once a job's randomness is public,
nothing anyone does may change who is drawn for its disputes or its paid verdicts, nor in what order (the first
`picks` of the draw are the ones `payVerifiers` pays and the first two are the ones the coordinator asks).

The attack this guards against: a model's list of assignments keeps released ones for the draw's reach, and an
announce on the model drops those older than that. Dropping one by moving the list's last entry into its place
reordered the candidates, so the same seed drew other verifiers: anyone could re-roll a public draw with one
`announceShard` (or break an honest coordinator's slash or payment, whose verifiers were drawn before it).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount

from shardnet.chain.commitments import INNOCENT_LEAF, INNOCENT_LEAF_INDEX, sign_verdict
from shardnet.chain.deploy import Deployment, deploy_registry
from shardnet.chain.registry import HopVerdicts, PaidVerdict, Registry, Settlement, VerificationPayment
from shardnet.span import LayerSpan
from tests.chain.registry_world import MIN_STAKE, OUTPUT, World, assert_solvent, build_world
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


def test_pruning_a_model_list_does_not_reorder_a_public_draw(world: World, accounts: list[LocalAccount]) -> None:
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
    paid = world.gov.pay_verifiers([VerificationPayment(job_id, s.job, close_block, [HopVerdicts(hop, 2, verdicts)])])
    assert paid.event("VerificationPaid").args["verdicts"] == 2
    assert_solvent(world.gov)
