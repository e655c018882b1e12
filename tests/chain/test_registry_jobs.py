"""ShardRegistry jobs (protocol v2): submit for a named coordinator, job records from events, fail, cancel, views."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount

from shardnet.chain.registry import JobInfo, JobRecord, JobStatus, Registry
from tests.chain.registry_world import (
    INPUT,
    MAX_TOKENS,
    NUM_LAYERS,
    PRICE,
    World,
    assert_solvent,
    build_world,
    reverts,
)
from tests.fixtures_chain import TEST_PARAMS, DevChain


@pytest.fixture
def world(anvil: DevChain, accounts: list[LocalAccount], registry_for: Callable[..., Registry]) -> World:
    return build_world(anvil, accounts, registry_for)


def test_submit_job_escrows_payment_and_stores_only_a_hash(world: World) -> None:
    value = world.quote() + 123  # overpaying is fine: the rest comes back at settlement
    result = world.reg(world.client).submit_job(world.model_id, INPUT, MAX_TOKENS, world.owner.address, value)
    deadline = world.chain.timestamp() + TEST_PARAMS.job_timeout
    assert result.event("JobSubmitted").args == {
        "jobId": 1,
        "client": world.client.address,
        "coordinator": world.owner.address,
        "modelId": world.model_id,
        "inputHash": INPUT,
        "maxTokens": MAX_TOKENS,
        "escrow": value,
        "deadline": deadline,
        "numLayers": NUM_LAYERS,
        "price": PRICE,
    }
    record = JobRecord(
        world.client.address,
        world.owner.address,
        world.model_id,
        MAX_TOKENS,
        deadline,
        value,
        NUM_LAYERS,
        PRICE,
    )
    assert world.gov.get_job(1) == JobInfo(1, record, INPUT, JobStatus.Open, 0, 0, result.block_number)
    assert world.gov.job_record(1) == record
    assert (world.gov.job_count(), world.gov.open_escrow()) == (1, value)
    assert world.gov.job_record_hash(1, record)[:30] != bytes(30)
    assert_solvent(world.gov)


def test_submit_job_reverts(world: World) -> None:
    cli = world.reg(world.client)
    quote = world.quote()
    owner = world.owner.address
    with reverts("ShardRegistryEscrowTooLow", provided=quote - 1, required=quote):
        cli.submit_job(world.model_id, INPUT, MAX_TOKENS, owner, quote - 1)
    with reverts("ShardRegistryUnknownModel", modelId=7):
        cli.submit_job(7, INPUT, MAX_TOKENS, owner, quote)
    with reverts("ShardRegistryZeroAmount"):
        cli.submit_job(world.model_id, INPUT, 0, owner, quote)


def test_submit_job_caps_max_tokens_at_max_job_tokens(world: World) -> None:
    cli = world.reg(world.client)
    limit = world.gov.max_job_tokens()
    assert limit == TEST_PARAMS.max_job_tokens == 4096
    owner = world.owner.address
    with reverts("ShardRegistryMaxTokensTooLarge", maxTokens=limit + 1, limit=limit):
        cli.submit_job(world.model_id, INPUT, limit + 1, owner, world.quote(limit + 1))
    with reverts("ShardRegistryMaxTokensTooLarge", maxTokens=2**32 - 1, limit=limit):
        cli.submit_job(world.model_id, INPUT, 2**32 - 1, owner, world.quote(limit))
    assert world.gov.job_count() == 0
    result = cli.submit_job(world.model_id, INPUT, limit, owner, world.quote(limit))
    assert result.event("JobSubmitted").args["maxTokens"] == limit
    assert world.gov.job_count() == 1


@pytest.mark.parametrize("job_id", [0, 1])
def test_unknown_job_views_revert(world: World, job_id: int) -> None:
    with reverts("ShardRegistryUnknownJob", jobId=job_id):
        world.gov.get_job(job_id)
    with reverts("ShardRegistryUnknownJob", jobId=job_id):
        world.gov.job_state(job_id)


def test_fail_job_refunds_everything_not_posted(world: World) -> None:
    escrow = world.quote() + 5
    job_id = world.submit(escrow)
    ev = world.gov.fail_job(job_id, world.record(job_id), "worker 2 died").event("JobFailed")
    assert ev.args == {"jobId": job_id, "reason": "worker 2 died", "refund": escrow}
    assert world.gov.get_job(job_id).status == JobStatus.Failed
    assert world.gov.claimable(world.client.address) == escrow
    assert world.gov.open_escrow() == 0
    assert_solvent(world.gov)


def test_fail_job_reverts(world: World) -> None:
    job_id = world.submit()
    record = world.record(job_id)
    with reverts("ShardRegistryNotJobCoordinator", jobId=job_id, account=world.client.address):
        world.reg(world.client).fail_job(job_id, record, "x")
    with reverts("ShardRegistryUnknownJob", jobId=99):
        world.gov.fail_job(99, record, "x")
    with reverts("ShardRegistryStringTooLong", field="reason", length=300, maximum=256):
        world.gov.fail_job(job_id, record, "r" * 300)
    world.gov.fail_job(job_id, record, "x")
    with reverts("ShardRegistryInvalidJobStatus", jobId=job_id, status=JobStatus.Failed):
        world.gov.fail_job(job_id, record, "again")


def test_cancel_after_deadline_refunds(world: World) -> None:
    job_id = world.submit()
    cli = world.reg(world.client)
    deadline = cli.get_job(job_id).deadline
    with reverts("ShardRegistryDeadlineNotReached", jobId=job_id, deadline=deadline):
        cli.cancel_job(job_id)
    world.chain.advance_time(TEST_PARAMS.job_timeout + 1)
    ev = cli.cancel_job(job_id).event("JobCancelled")
    assert ev.args == {"jobId": job_id, "by": world.client.address, "refund": world.quote()}
    assert cli.get_job(job_id).status == JobStatus.Cancelled
    assert cli.claimable(world.client.address) == world.quote()
    assert_solvent(cli)
    with reverts("ShardRegistryInvalidJobStatus", jobId=job_id, status=JobStatus.Cancelled):
        cli.cancel_job(job_id)
    # a settlement of a closed job is skipped, not paid twice
    result = world.settle(job_id)
    assert [e.name for e in result.events] == []


def test_cancel_job_reverts(world: World) -> None:
    job_id = world.submit()
    record = world.record(job_id)
    with reverts("ShardRegistryUnknownJob", jobId=99):
        world.reg(world.client).cancel_job(99, record)
    with reverts("ShardRegistryNotJobClient", jobId=job_id, account=world.outsider.address):
        world.reg(world.outsider).cancel_job(job_id)
    world.chain.advance_time(TEST_PARAMS.job_timeout + 1)
    world.gov.fail_job(job_id, record, "expired")  # its coordinator may still fail it first
    with reverts("ShardRegistryInvalidJobStatus", jobId=job_id, status=JobStatus.Failed):
        world.reg(world.client).cancel_job(job_id)
