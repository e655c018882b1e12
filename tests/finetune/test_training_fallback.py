"""Training commitments are durable like inference ones (issue 16): a worker stores its signed commitment before
the close answer leaves, and posts it itself when the coordinator never settles (or after a crash that cut the
session), so its forward and backward work is paid by the registry's fallback path after the dispute window."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import aiohttp
from eth_account.signers.local import LocalAccount

from shardnet.chain.deploy import Deployment
from shardnet.chain.registry import Registry
from shardnet.db import make_engine
from shardnet.finetune.data import batches
from shardnet.finetune.ends import ModelEnds
from shardnet.finetune.params import TrainableParams
from shardnet.finetune.trainer import Trainer
from tests.chain.registry_world import PRICE, build_world
from tests.finetune.harness import open_route, serve_workers
from tests.finetune.test_paid_finetune import MAX_TOKENS, _tiny_llama_4_layers
from tests.finetune.test_remote_training import tiny_examples
from tests.fixtures_chain import TEST_PARAMS, DevChain
from worker.chain_sync import ChainSync
from worker.state import PAID, POSTED, SIGNED, WorkerState

STEPS, BATCH = 2, 2


def test_unsettled_finetune_job_is_posted_by_its_workers_and_paid_after_the_window(
    tmp_path: Path,
    anvil: DevChain,
    deployment: Deployment,
    accounts: list[LocalAccount],
    registry_for: Callable[..., Registry],
) -> None:
    world = build_world(anvil, accounts, registry_for)
    nodes = (world.node1, world.node2)  # node1 serves [0,2), node2 [2,4) on chain
    dbs = [tmp_path / f"worker{i}.db" for i in range(2)]
    states = [WorkerState(make_engine(None, db), n.address) for db, n in zip(dbs, nodes, strict=True)]
    syncs = {
        n.address: ChainSync(world.reg(n), s, start_block=deployment.deploy_block, settle_window_s=60)
        for n, s in zip(nodes, states, strict=True)
    }
    parts = tmp_path / "parts"
    config = _tiny_llama_4_layers(parts)
    job_id = world.submit(max_tokens=MAX_TOKENS)
    ends = ModelEnds(parts, config)
    params = TrainableParams.create(ends.config, "lora", family="llama", num_layers=4, rank=2, seed=0)
    trainer = Trainer(ends, params, lr=1e-2)
    data = batches(tiny_examples(), BATCH, STEPS)
    forward_positions = sum(int(b.ids.numel()) for b in data)

    async def run() -> dict[str, object]:
        async with (
            serve_workers(
                parts,
                config,
                [(0, 2), (2, 4)],
                keys=[n.key.hex() for n in nodes],
                domain=world.domain,
                is_coordinator=world.gov.is_coordinator,
                job_coordinator=lambda j: world.gov.job_record(j).coordinator,
                signer_for=lambda account: syncs[account.address].sign,
                states=states,
            ) as workers,  # fmt: skip
            aiohttp.ClientSession() as http,
        ):
            spans = await open_route(http, workers, world.owner, job_id, world.domain)
            for batch in data:
                await trainer.step(spans, batch)
            closed = await spans[0].close()  # node2's session is cut: its process "crashes" below
            await asyncio.sleep(0)
        return closed

    closed = asyncio.run(run())
    positions = 3 * forward_positions  # forward + 2 x backward
    row = states[0].job(job_id)  # stored before the close answer left, as it was handed out
    assert row is not None and row.commit_status == SIGNED and row.positions == positions
    assert closed["job_commitment"]["signature"] in (row.signature, "0x" + row.signature)  # type: ignore[index]
    assert states[1].job(job_id) is None  # node2 never signed: its session was never closed

    # node2 restarts on its database: the cut session is closed as lost and its job signed, due at once
    states[1] = WorkerState(make_engine(None, dbs[1]), world.node2.address)
    restarted = ChainSync(world.reg(world.node2), states[1], start_block=deployment.deploy_block,
                          settle_window_s=60)  # fmt: skip
    assert states[1].close_lost_sessions()
    assert restarted.sign_uncommitted() == 1
    syncs[world.node2.address] = restarted

    before = {n.address: world.gov.claimable(n.address) for n in nodes}
    syncs[world.node1.address].sync_once()  # within the settlement window: node1 waits for the coordinator
    assert states[0].job(job_id).commit_status == SIGNED  # type: ignore[union-attr]
    restarted.sync_once()  # node2's was never handed out: posted at once
    assert states[1].job(job_id).commit_status == POSTED  # type: ignore[union-attr]
    syncs[world.node1.address].post_due_commitments(now=row.handed_at + 61)  # the coordinator never settled
    assert states[0].job(job_id).commit_status == POSTED  # type: ignore[union-attr]
    for sync in syncs.values():
        sync.sync_once()
    assert all(world.gov.claimable(n.address) == before[n.address] for n in nodes)  # provisional
    anvil.advance_time(TEST_PARAMS.dispute_window + 1)
    for sync in syncs.values():
        sync.sync_once()
    owed = positions * 2 * PRICE  # positions x layers x price
    for node, state in zip(nodes, states, strict=True):
        assert state.job(job_id).commit_status == PAID  # type: ignore[union-attr]
        assert world.gov.claimable(node.address) - before[node.address] == owed
