"""ChainSync on a real anvil registry (protocol v2): a job settled with this worker's signed commitment is never
posted; one the coordinator left out, failed or never settled is posted by the worker itself, once, within the
job's deadline; a job closed on chain first is skipped with a note; what a crash left unsigned is signed at start."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from eth_account.signers.local import LocalAccount

from shardnet.chain.deploy import Deployment
from shardnet.chain.heads import ws_url_for
from shardnet.chain.registry import Registry
from shardnet.db import make_engine
from shardnet.span import LayerSpan
from shardnet.wire.tickets import sign_ticket
from tests.chain.registry_world import World, build_world
from tests.fixtures_chain import TEST_PARAMS, DevChain
from worker.chain_sync import ChainSync
from worker.coordinator_check import JobCoordinatorCheck
from worker.state import PAID, POSTED, SETTLED, SIGNED, SKIPPED, WorkerState

SPAN = LayerSpan(0, 2)


def _serve(
    world: World,
    state: WorkerState,
    sync: ChainSync,
    job_id: int,
    *,
    handed_at: float,
    close: bool = True,
    coordinator: LocalAccount | None = None,
) -> None:
    """node1 serves one 3-step session of `job_id` (3 + 1 + 1 positions); its commitment is signed when closed."""
    sid = f"s{job_id}"
    ticket = sign_ticket(
        coordinator or world.owner,
        worker=world.node1.address,
        session_id=sid,
        job_id=job_id,
        span=SPAN,
        max_positions=4096,
        expires_at=2**40,
        chain_id=world.domain.chain_id,
        registry=world.domain.registry,
    )
    state.session_opened(
        sid, job_id, (coordinator or world.owner).address, SPAN.start, SPAN.end, json.dumps(ticket)
    )
    for i, n in enumerate((3, 1, 1)):
        state.step_recorded(sid, i, bytes([job_id, i]) * 16, n)
    if close:
        state.session_closed(sid, "closed", 3, None)
        work = state.job_work(job_id)
        assert work is not None and work.positions == 5
        state.save_commitment(
            sync.sign(job_id, work.span, work.positions, 3, work.root), work.ticket, handed_at
        )


def _status(state: WorkerState) -> dict[int, tuple[str, str | None]]:
    return {row.job_id: (row.commit_status, row.note) for row in state.jobs()}


def _posted(reg: Registry, job_id: int) -> list[bytes]:
    return [
        bytes(e.args["root"])
        for e in reg.get_logs(
            reg.deploy_block, reg.block_number(), ["CommitmentPosted"], first_indexed=job_id
        )
    ]


def test_settled_jobs_are_not_posted_and_unsettled_ones_are_posted_once_after_the_window(
    anvil: DevChain,
    deployment: Deployment,
    accounts: list[LocalAccount],
    registry_for: Callable[[LocalAccount | None], Registry],
    tmp_path: Path,
) -> None:
    world: World = build_world(anvil, accounts, registry_for)
    state = WorkerState(make_engine(None, tmp_path / "worker.db"), world.node1.address)
    sync = ChainSync(world.reg(world.node1), state, start_block=deployment.deploy_block, settle_window_s=60)
    settled, left_out, unsettled, failed, recent = (world.submit() for _ in range(5))
    for job_id in (settled, left_out, unsettled, failed):
        _serve(world, state, sync, job_id, handed_at=0.0)  # handed out long ago: past the window
    _serve(world, state, sync, recent, handed_at=1e12)  # handed out "now": within the window
    mine = {j: state.job(j) for j in (settled, left_out)}
    world.settle(settled, [mine[settled].signed(world.node1.address)])  # type: ignore[union-attr]
    world.settle(
        left_out, [world.commit(world.node2, left_out, LayerSpan(2, 4))]
    )  # the coordinator omits node1
    world.gov.fail_job(failed, world.record(failed), "coordinator gave up")

    sync.sync_once()
    jobs = _status(state)
    assert jobs[settled][0] == SETTLED
    assert jobs[left_out] == (
        SKIPPED,
        "settled without this worker's commitment: the coordinator left it out",
    )
    assert jobs[failed] == (SKIPPED, "job failed on chain before it was paid")
    assert jobs[unsettled][0] == POSTED and jobs[recent] == (SIGNED, None)
    assert _posted(world.gov, unsettled) == [state.job(unsettled).signed(world.node1.address).root]  # type: ignore[union-attr]
    assert world.gov.claimable(world.node1.address) == world.pay_of(
        positions=5
    )  # settled; the post is provisional

    sync.sync_once()  # the CommitmentPosted event confirms it; nothing is posted twice
    assert _status(state)[unsettled][0] == POSTED
    assert len(_posted(world.gov, unsettled)) == 1
    assert _posted(world.gov, settled) == []
    anvil.advance_time(TEST_PARAMS.dispute_window + 1)  # the post's window passes: the worker collects it
    sync.sync_once()
    assert _status(state)[unsettled][0] == PAID
    assert world.gov.claimable(world.node1.address) == 2 * world.pay_of(positions=5)  # settled + posted

    anvil.advance_time(TEST_PARAMS.job_timeout + 1)  # past the deadline: the registry refuses a post
    assert sync.post_due_commitments(now=2e12) == 0
    assert _status(state)[recent][0] == SKIPPED and "PostWindowClosed" in str(_status(state)[recent][1])


def test_a_restart_signs_what_a_crash_left_and_posts_it_at_once(
    anvil: DevChain,
    deployment: Deployment,
    accounts: list[LocalAccount],
    registry_for: Callable[[LocalAccount | None], Registry],
    tmp_path: Path,
) -> None:
    world: World = build_world(anvil, accounts, registry_for)
    db = tmp_path / "worker.db"
    state = WorkerState(make_engine(None, db), world.node1.address)
    sync = ChainSync(world.reg(world.node1), state, start_block=deployment.deploy_block, settle_window_s=60)
    job_id = world.submit()
    _serve(world, state, sync, job_id, handed_at=0.0, close=False)  # the process dies mid-session
    del state, sync
    state = WorkerState(make_engine(None, db), world.node1.address)
    assert state.close_lost_sessions() == [f"s{job_id}"]
    sync = ChainSync(world.reg(world.node1), state, start_block=deployment.deploy_block, settle_window_s=60)
    assert sync.sign_uncommitted() == 1 and sync.sign_uncommitted() == 0
    sync.sync_once()
    assert _status(state)[job_id][0] == POSTED
    sync.sync_once()
    assert _status(state)[job_id][0] == POSTED and len(_posted(world.gov, job_id)) == 1
    anvil.advance_time(TEST_PARAMS.dispute_window + 1)
    sync.sync_once()  # committed work is paid: collected once the registry's window is over
    assert _status(state)[job_id][0] == PAID and world.gov.claimable(world.node1.address) > 0


def test_pushed_blocks_bring_events_to_the_worker_within_a_second_with_a_30_s_poll(
    anvil: DevChain,
    deployment: Deployment,
    accounts: list[LocalAccount],
    registry_for: Callable[[LocalAccount | None], Registry],
    tmp_path: Path,
) -> None:
    """The worker's follower subscribes to new blocks (anvil: ws on the RPC port): a job submitted and a
    coordinator revoked reach its callbacks at once, not at its next poll; the job's coordinator is then known
    to the server's check without a chain read."""
    world: World = build_world(anvil, accounts, registry_for)
    state = WorkerState(make_engine(None, tmp_path / "worker.db"), world.node1.address)
    job_check = JobCoordinatorCheck(lambda _job_id: "0x" + "00" * 20)  # a chain read would name nobody
    revoked: dict[str, float] = {}
    sync = ChainSync(
        world.reg(world.node1),
        state,
        start_block=deployment.deploy_block,
        poll_interval_s=30.0,
        ws_url=ws_url_for(anvil.rpc_url),
        on_job_submitted=job_check.remember,
        on_coordinator_set=lambda address, approved: revoked.setdefault(address.lower(), time.perf_counter()),
    )
    sync.start()
    try:
        assert sync.heads is not None and sync.heads.wait_connected(10)
        time.sleep(0.3)  # the first round (catching up from the deployment) is over
        job_id = world.submit()
        mined = time.perf_counter()
        deadline = mined + 5
        while job_check.cached(job_id) is None and time.perf_counter() < deadline:
            time.sleep(0.005)
        assert (job_check.cached(job_id) or "").lower() == world.owner.address.lower(), (
            "JobSubmitted not seen"
        )
        assert time.perf_counter() - mined < 1.0, "the worker saw the job at a poll, not when it was pushed"
        world.gov.set_coordinator(world.coordinator2.address, "http://127.0.0.1:9001", False)
        mined = time.perf_counter()
        key = world.coordinator2.address.lower()
        while key not in revoked and time.perf_counter() < mined + 5:
            time.sleep(0.005)
        assert key in revoked and revoked[key] - mined < 1.0
    finally:
        sync.stop(final_round=False)
