"""ChainSync on a real anvil registry: jobs routed here are committed once served, and expire when never served."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from eth_account.signers.local import LocalAccount

from shardnet.chain.deploy import Deployment
from shardnet.chain.registry import Registry
from shardnet.db import make_engine
from tests.chain.registry_world import World, build_world
from tests.fixtures_chain import TEST_PARAMS, DevChain
from worker.chain_sync import ChainSync
from worker.state import PENDING, POSTED, SKIPPED, WorkerState


def _serve(state: WorkerState, job_id: int, session_id: str, *, close: bool) -> None:
    state.session_opened(session_id, job_id, "0xcoordinator", 0, 2)
    if close:
        state.step_recorded(session_id, 0, bytes([job_id]) * 32)
        state.session_closed(session_id, "closed", 1, None)


def _status(state: WorkerState) -> dict[int, tuple[str, str | None]]:
    return {row.job_id: (row.commit_status, row.note) for row in state.jobs()}


def test_unserved_jobs_expire_when_ended_on_chain_or_past_their_deadline(
    anvil: DevChain, deployment: Deployment, accounts: list[LocalAccount],
    registry_for: Callable[[LocalAccount | None], Registry], tmp_path: Path,
) -> None:
    world: World = build_world(anvil, accounts, registry_for)
    state = WorkerState(make_engine(None, tmp_path / "worker.db"), world.node1.address)
    sync = ChainSync(world.reg(world.node1), state, start_block=deployment.deploy_block, expire_interval_s=0)

    failed, cancelled, late, served, serving = (world.routed_job() for _ in range(5))
    other = world.submit()  # never routed here: never in this worker's table
    _serve(state, served, "s-served", close=True)
    _serve(state, serving, "s-open", close=False)
    world.gov.fail_job(failed, "coordinator gave up")
    sync.sync_once()
    jobs = _status(state)
    assert other not in jobs
    assert jobs[failed] == (SKIPPED, "job failed on chain; never served here")
    assert jobs[served][0] == POSTED
    assert {jobs[j][0] for j in (cancelled, late, serving)} == {PENDING}

    anvil.advance_time(TEST_PARAMS.job_timeout + 1)
    world.reg(world.client).cancel_job(cancelled)  # JobCancelled: expired in the watcher's transaction
    sync.watcher.catch_up()
    assert _status(state)[cancelled] == (SKIPPED, "job cancelled on chain; never served here")
    assert _status(state)[late][0] == PENDING

    assert sync.expire_unserved_jobs() == 1  # past the deadline on the chain's clock, still Routed on chain
    jobs = _status(state)
    assert jobs[late][0] == SKIPPED and "past its deadline" in str(jobs[late][1])
    assert jobs[serving] == (PENDING, None)  # a session is open: it may still be committed
    assert sync.expire_unserved_jobs() == 0  # nothing left to re-check


def test_an_unserved_job_that_ended_before_the_worker_followed_it_expires(
    anvil: DevChain, deployment: Deployment, accounts: list[LocalAccount],
    registry_for: Callable[[LocalAccount | None], Registry], tmp_path: Path,
) -> None:
    world: World = build_world(anvil, accounts, registry_for)
    job_id = world.routed_job()
    state = WorkerState(make_engine(None, tmp_path / "worker.db"), world.node1.address)
    sync = ChainSync(world.reg(world.node1), state, start_block=deployment.deploy_block, expire_interval_s=0)
    sync.watcher.catch_up()  # the route is recorded; the watcher has passed it
    world.gov.fail_job(job_id, "down")
    # the JobFailed event is not followed yet: the deadline check asks the chain for the job's status
    assert sync.expire_unserved_jobs() == 1
    assert _status(state)[job_id] == (SKIPPED, "job failed on chain; never served here")
