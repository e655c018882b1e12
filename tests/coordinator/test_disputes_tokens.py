"""The last hop checked on the tokens it made the client see, end to end on a real anvil registry (issue 10
item 2): four nodes staked on the whole tiny Llama (layers 0:4, token ids in, logits out), each a real worker
server in process; the accused serves a greedy job drawn the coordinator's way, the job is settled, the
registry draws the verifiers and `DisputeRunner` sends them the last hop's package with the shown tokens.

- a last hop whose logits make the runner-up the argmax at one step (the client saw the runner-up) is slashed;
- an honest last hop whose coordinator reports the runner-up as shown is not slashed: the coordinator is flagged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from aiohttp import web
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from coordinator.dispute_answers import DisputeOutcome
from coordinator.disputes import DisputeRunner, hop_step_work
from coordinator.sampling import Sampler, SamplingParams
from shardnet.chain.commitments import sign_commitment
from shardnet.chain.devnet import free_port
from shardnet.chain.registry import Registry, Settlement
from shardnet.model import load_block
from shardnet.peer.client import WorkerClient
from shardnet.span import LayerSpan
from shardnet.store.manifest import Manifest
from shardnet.verify.fingerprint import make_fingerprint
from shardnet.verify.package import StepWork
from shardnet.verify.sampler import sampling_seed
from shardnet.verify.tokens import ShownTokens
from shardnet.wire.commitment import merkle_root, step_hash
from shardnet.wire.eip712 import Domain
from shardnet.wire.frames import encode_frame
from tests.coordinator.harness import serve_on_kernel_port
from tests.fixtures_chain import TEST_PARAMS, DevChain
from tests.worker.harness import signing_server
from tests.worker.harness import ticket as worker_ticket
from worker.server import WorkerServer

SPAN = LayerSpan(0, 4)
MAX_TOKENS = 8
STEPS = 6


def _server(node: LocalAccount, block: Any, domain: Domain, model_id: int, views: Registry) -> WorkerServer:
    return signing_server(
        node,
        block,
        domain,
        SPAN,
        is_last=True,
        is_coordinator=views.is_coordinator,
        model_id=model_id,
        job_coordinator=lambda job_id: views.job_record(job_id).coordinator,
    )


def _dispute(
    anvil: DevChain,
    accounts: list[LocalAccount],
    registry_for: Callable[[LocalAccount | None], Registry],
    store: tuple[Path, str, Manifest],
    cheat: bool,
) -> tuple[DisputeOutcome, list[int], int]:
    """Serve a greedy job on the accused (a cheat substitutes the runner-up at the last step), settle it and
    run the last hop's dispute with the shown tokens; returns the outcome, the shown tokens and the job."""
    owner = registry_for(accounts[0])
    owner.set_coordinator(accounts[0].address, "http://127.0.0.1:9", True)
    root_dir, cid, manifest = store
    model_id = int(owner.register_model("tiny", cid, 4, 1_000).event("ModelRegistered").args["modelId"])
    nodes, client, coordinator = accounts[1:5], accounts[9], accounts[0]
    ports = {}
    for node in nodes:
        ports[node.address] = free_port()
        reg = registry_for(node)
        reg.register_node(f"http://127.0.0.1:{ports[node.address]}", TEST_PARAMS.min_stake)
        reg.announce_shard(model_id, SPAN)
    domain = owner.domain()
    block = load_block(root_dir, manifest.to_json(), SPAN)
    views = registry_for(None)
    quote = owner.quote(model_id, MAX_TOKENS)
    job_id = int(
        registry_for(client)
        .submit_job(model_id, keccak(text="prompt"), MAX_TOKENS, coordinator.address, quote)
        .event("JobSubmitted")
        .args["jobId"]
    )
    accused = nodes[0]

    async def go() -> tuple[DisputeOutcome, list[int]]:
        runners = []
        for node in nodes:
            runner = web.AppRunner(_server(node, block, domain, model_id, views).app())
            await runner.setup()
            ports[node.address] = await serve_on_kernel_port(runner)  # the URLs below read ports
            runners.append(runner)
        try:
            ticket = worker_ticket(domain, coordinator, accused.address, SPAN, job_id, max_positions=64)
            sampler = Sampler(
                SamplingParams(), seed=sampling_seed(domain.chain_id, domain.registry, job_id, None)
            )
            work: list[StepWork] = []
            tokens: list[int] = []
            last = torch.zeros(0)
            async with WorkerClient(f"http://127.0.0.1:{ports[accused.address]}") as http:
                sid = (await http.open_session(ticket, "fp32"))["session_id"]
                x, pos = torch.tensor([[3, 1, 4, 1, 5]]), 0
                for _ in range(STEPS):
                    res = await http.step_full(sid, x, pos)
                    work.append(hop_step_work(x, None, res.tensor, res.step_hash))
                    tokens.append(sampler(res.tensor))
                    last = res.tensor.reshape(-1).float()
                    pos += int(x.shape[1])
                    x = torch.tensor([[tokens[-1]]])
                signed = (await http.close_session(sid)).job_commitment
            assert signed is not None
            runner_up = int(torch.topk(last, 2).indices[1])
            assert float(torch.topk(last, 2).values[0] - torch.topk(last, 2).values[1]) > 1e-3
            tokens[-1] = runner_up  # what the client saw at the last step, in both cases
            if cheat:  # the accused sent (and signed) logits whose argmax is the runner-up
                sent = last.clone()
                sent[runner_up] = max(float(last.max()), float(-last.min())) + 1.0
                frame = encode_frame(sent.reshape(1, 1, -1), "fp32")
                work[-1] = StepWork(
                    work[-1].input_frame, step_hash(frame), make_fingerprint(sent.reshape(1, 1, -1))
                )
                signed = sign_commitment(
                    accused,
                    domain,
                    job_id=job_id,
                    span=SPAN,
                    positions=signed.positions,
                    steps=signed.steps,
                    root=merkle_root([w.leaf() for w in work]),
                )
            record = owner.job_record(job_id)
            close = owner.settle_jobs([Settlement(job_id, record, keccak(text="out"), [signed])]).block_number
            anvil.mine(3)
            runner = DisputeRunner(
                owner, coordinator, lambda a: f"http://127.0.0.1:{ports[a]}", verify_timeout_s=60
            )
            shown = ShownTokens(tokens)
            return await runner.check_hop(job_id, record, close, signed, work, "float32", shown), tokens
        finally:
            for runner in runners:
                await runner.cleanup()

    outcome, tokens = asyncio.run(go())
    return outcome, tokens, job_id


@pytest.mark.parametrize("cheat", [True, False], ids=["last hop substitutes", "coordinator misreports"])
def test_the_last_hop_is_judged_on_the_tokens_the_client_saw(
    anvil: DevChain,
    accounts: list[LocalAccount],
    registry_for: Callable[[LocalAccount | None], Registry],
    tiny_llama_store: tuple[Path, str, Manifest],
    cheat: bool,
) -> None:
    outcome, _tokens, job_id = _dispute(anvil, accounts, registry_for, tiny_llama_store, cheat)
    owner = registry_for(None)
    assert len(outcome.answers) >= 2 and all(a.guilty is not None for a in outcome.answers), outcome
    flagged = [a.tokens for a in outcome.answers]
    assert all(t is not None and t["unsupported"] == [STEPS - 1] for t in flagged), flagged
    if cheat:
        assert outcome.slashed and owner.is_slashed(job_id, accounts[1].address), outcome
        assert all(a.guilty and a.leaf_index == STEPS - 1 for a in outcome.answers)
        assert all(t is not None and t["by_hop"] == [STEPS - 1] for t in flagged)
    else:
        assert not outcome.slashed and not owner.is_slashed(job_id, accounts[1].address), outcome
        assert all(a.guilty is False for a in outcome.answers)
        assert outcome.tokens_flagged == [a.verifier for a in outcome.answers]
        assert all(t is not None and t["by_hop"] == [] for t in flagged)


def test_only_a_last_hop_of_the_finished_run_is_checked_on_the_tokens() -> None:
    """`JobHops.shown` (what `JobRunner.generate` records) -> `shown_tokens` (what `JobChecks` sends)."""
    from coordinator.hop_facts import shown_tokens
    from coordinator.hops import JobHops

    hops = JobHops(5, [("0xa", LayerSpan(0, 2)), ("0xb", LayerSpan(2, 4)), ("0xc", LayerSpan(2, 4))], 64)
    for hop, steps in ((0, 4), (1, 2), (2, 4)):  # 0xb failed over to 0xc after 2 steps (0xc replayed them)
        hops.relayed[hop] = [(b"", b"", None)] * steps  # type: ignore[list-item]
    hops.shown([7, 8, 9, 2], {0: 4, 1: 2, 2: 4}, {"temperature": 0.7, "top_p": 0.9, "seed": 3, "chat": False})
    assert shown_tokens(hops, 0) is None  # not a last hop
    assert shown_tokens(hops, 1) == ShownTokens([7, 8], 0.7, 0.9, 3)
    assert shown_tokens(hops, 2) == ShownTokens([7, 8, 9, 2], 0.7, 0.9, 3)
    hops.shown([7, 8, 9, 2], {0: 4, 1: 4}, {})  # 0xc served an earlier, aborted run only
    assert shown_tokens(hops, 2) is None and shown_tokens(hops, 1) is None  # 0xb: 2 steps relayed, not 4
    hops.shown([7, 8, 9, 2], {0: 4, 1: 1, 2: 4}, {})  # 0xb did 1 of its 2 steps in an aborted run
    assert shown_tokens(hops, 1) is None and shown_tokens(hops, 2) == ShownTokens([7, 8, 9, 2])
