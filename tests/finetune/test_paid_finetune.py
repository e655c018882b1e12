"""A fine-tuning job is a paid job (issue 16 item 4): escrow by submitJob, tickets of the job's coordinator, the
workers' signed commitments over every forward and backward answer, settlement by layer-tokens on anvil with
a backward position counted `backward_factor` times."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import aiohttp
import torch
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from shardnet.chain.commitments import SignedCommitment, sign_commitment, verify_commitment
from shardnet.chain.registry import Registry, Settlement
from shardnet.finetune.data import batches
from shardnet.finetune.ends import ModelEnds
from shardnet.finetune.params import TrainableParams
from shardnet.finetune.trainer import Trainer
from shardnet.model import config_dict, save_parts
from shardnet.span import LayerSpan
from shardnet.wire.commitment import merkle_root
from tests.chain.registry_world import PRICE, World, build_world
from tests.finetune.harness import open_route, serve_workers
from tests.finetune.test_remote_training import tiny_examples
from tests.fixtures_chain import DevChain
from tests.fixtures_model import TINY

STEPS, BATCH, MAX_TOKENS = 3, 2, 512


def _tiny_llama_4_layers(folder: Path) -> dict[str, object]:
    """The world's model has 4 layers: a tiny random llama of 4 layers, as part files."""
    config, cls = TINY["llama"]()
    config.num_hidden_layers = 4
    config.architectures = [cls.__name__]
    torch.manual_seed(0)
    model = cls(config).eval()
    save_parts(model, model.config, folder)
    return config_dict(model.config)


def _signer_for(world: World) -> Callable[[LocalAccount], Callable[..., SignedCommitment]]:
    def make(account: LocalAccount) -> Callable[..., SignedCommitment]:
        def sign(job_id: int, span: LayerSpan, positions: int, steps: int, root: bytes) -> SignedCommitment:
            return sign_commitment(account, world.domain, job_id=job_id, span=span, positions=positions,
                                   steps=steps, root=root)  # fmt: skip

        return sign

    return make


def test_finetune_job_is_escrowed_committed_and_settled_by_layer_tokens(
    tmp_path: Path, anvil: DevChain, accounts: list[LocalAccount], registry_for: Callable[..., Registry]
) -> None:
    world = build_world(anvil, accounts, registry_for)
    gov = world.gov
    parts = tmp_path / "parts"
    config = _tiny_llama_4_layers(parts)
    job_id = world.submit(max_tokens=MAX_TOKENS)  # the client's escrow, naming the owner as coordinator
    escrow = world.quote(MAX_TOKENS)
    keys = [world.node1.key.hex(), world.node2.key.hex()]  # node1 serves [0,2), node2 [2,4) on chain
    ends = ModelEnds(parts, config)
    params = TrainableParams.create(ends.config, "lora", family="llama", num_layers=4, rank=2, seed=0)
    trainer = Trainer(ends, params, lr=1e-2)
    data = batches(tiny_examples(), BATCH, STEPS)
    forward_positions = sum(int(b.ids.numel()) for b in data)

    async def run() -> list[dict[str, object]]:
        async with (
            serve_workers(
                parts,
                config,
                [(0, 2), (2, 4)],
                keys=keys,
                domain=world.domain,
                is_coordinator=gov.is_coordinator,
                job_coordinator=lambda j: gov.job_record(j).coordinator,
                signer_for=_signer_for(world),
            ) as workers,  # fmt: skip
            aiohttp.ClientSession() as http,
        ):
            spans = await open_route(http, workers, world.owner, job_id, world.domain)
            for batch in data:
                await trainer.step(spans, batch)
            closed = [await s.close() for s in spans]
            for answer, span in zip(closed, spans, strict=True):  # the commitment covers what the client got
                answer["received_root"] = merkle_root(span.step_hashes)
        return closed

    closed = asyncio.run(run())
    hops = []
    for answer, span in zip(closed, (LayerSpan(0, 2), LayerSpan(2, 4)), strict=True):
        assert answer["forward_positions"] == answer["backward_positions"] == forward_positions
        assert answer["positions"] == forward_positions + 2 * forward_positions  # backward_factor 2
        assert answer["steps"] == 2 * STEPS  # one hash per forward answer and per backward answer
        signed = SignedCommitment.from_json(answer["job_commitment"])  # type: ignore[arg-type]
        assert verify_commitment(signed, world.domain, job_id=job_id)
        assert (signed.span, signed.positions, "0x" + signed.root.hex()) == (
            span,
            answer["positions"],
            answer["commitment"],
        )
        assert signed.root == answer["received_root"]
        hops.append(signed)
    adapter = tmp_path / "adapter.safetensors"
    params.save(adapter)
    before = {n.address: gov.claimable(n.address) for n in (world.node1, world.node2)}
    gov.settle_jobs([Settlement(job_id, world.record(job_id), keccak(adapter.read_bytes()), hops)])
    owed = 3 * forward_positions * 2 * PRICE  # positions x layers x price, per worker
    for node in (world.node1, world.node2):
        assert gov.claimable(node.address) - before[node.address] == owed
    assert 2 * owed < escrow
