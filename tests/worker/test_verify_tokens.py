"""POST /v1/verify on the last hop's tokens (issue 10 item 2), real worker servers in process (tiny Llama, the
whole model on one hop): a job served honestly, greedy or sampled from the job's seed, is innocent and its
shown tokens supported; a coordinator that shows the client the second-best token is flagged and slashes
nobody; a last hop whose logits make the second-best token the argmax is found guilty on that step's leaf."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import torch
from aiohttp import web
from eth_account import Account
from eth_account.signers.local import LocalAccount

from coordinator.disputes import hop_step_work
from coordinator.sampling import Sampler, SamplingParams
from shardnet.chain.commitments import INNOCENT_LEAF_INDEX, SignedCommitment, sign_commitment
from shardnet.chain.devnet import DEV_KEYS, free_port
from shardnet.model import load_block
from shardnet.peer.client import WorkerClient
from shardnet.span import LayerSpan
from shardnet.store.manifest import Manifest
from shardnet.verify.fingerprint import make_fingerprint
from shardnet.verify.package import StepWork, VerificationPackage
from shardnet.verify.sampler import sampling_seed
from shardnet.verify.tokens import ShownTokens
from shardnet.wire.commitment import merkle_root, step_hash
from shardnet.wire.eip712 import Domain
from shardnet.wire.frames import encode_frame
from tests.worker.harness import signing_server
from tests.worker.harness import ticket as worker_ticket
from worker.server import WorkerServer

COORDINATOR = Account.from_key(DEV_KEYS[1])
ACCUSED = Account.from_key(DEV_KEYS[3])
VERIFIER = Account.from_key(DEV_KEYS[4])
SPAN = LayerSpan(0, 4)  # the whole tiny model: token ids in, logits out
DOMAIN = Domain(31337, "0x" + "ab" * 20)
STEPS = 6


def _server(block: Any, node: LocalAccount) -> WorkerServer:
    return signing_server(
        node, block, DOMAIN, SPAN, is_last=True, is_coordinator=lambda a: a == COORDINATOR.address
    )


def _ticket(job_id: int, worker: str) -> dict[str, Any]:
    return worker_ticket(DOMAIN, COORDINATOR, worker, SPAN, job_id, max_positions=600)


Served = tuple[SignedCommitment, list[StepWork], list[torch.Tensor], list[int]]


async def _serve(url: str, job_id: int, pick: Callable[[torch.Tensor], int]) -> Served:
    """A job through the accused, the coordinator's way: each step's token drawn from its logits is the next input."""
    work, logits, tokens = [], [], []
    async with WorkerClient(url) as client:
        sid = (await client.open_session(_ticket(job_id, ACCUSED.address), "fp32"))["session_id"]
        x, pos = torch.tensor([[3, 1, 4, 1, 5]]), 0
        for _ in range(STEPS):
            res = await client.step_full(sid, x, pos)
            work.append(hop_step_work(x, None, res.tensor, res.step_hash))
            logits.append(res.tensor.reshape(-1).float())
            tokens.append(pick(res.tensor))
            pos += int(x.shape[1])
            x = torch.tensor([[tokens[-1]]])
        signed = (await client.close_session(sid)).job_commitment
    assert signed is not None
    return signed, work, logits, tokens


def _cheat_last_step(served: Served, raise_to: float) -> tuple[SignedCommitment, list[StepWork], int]:
    """The accused's own signed work had it sent, at its last step, logits whose argmax is the runner-up."""
    signed, work, logits, _ = served
    sent = logits[-1].clone()
    runner_up = int(torch.topk(sent, 2).indices[1])
    sent[runner_up] = raise_to
    frame = encode_frame(sent.reshape(1, 1, -1), "fp32")
    forged = [
        *work[:-1],
        StepWork(work[-1].input_frame, step_hash(frame), make_fingerprint(sent.reshape(1, 1, -1))),
    ]
    root = merkle_root([w.leaf() for w in forged])
    c = sign_commitment(
        ACCUSED,
        DOMAIN,
        job_id=signed.job_id,
        span=SPAN,
        positions=signed.positions,
        steps=signed.steps,
        root=root,
    )
    return c, forged, runner_up


@pytest.fixture(scope="module")
def answers(tiny_llama_store: tuple[Path, str, Manifest]) -> dict[str, tuple[int, dict[str, Any]]]:
    store, _cid, manifest = tiny_llama_store
    block = load_block(store, manifest.to_json(), SPAN)
    accused, verifier = _server(block, ACCUSED), _server(block, VERIFIER)

    async def scenario() -> dict[str, tuple[int, dict[str, Any]]]:
        runners, urls = [], []
        for server in (accused, verifier):
            runner = web.AppRunner(server.app())
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            runners.append(runner)
            urls.append(f"http://127.0.0.1:{port}")
        packages: dict[str, VerificationPackage] = {}
        try:
            greedy = Sampler(SamplingParams(), seed=sampling_seed(DOMAIN.chain_id, DOMAIN.registry, 11, None))
            served = await _serve(urls[0], 11, greedy)
            signed, work, logits, tokens = served
            packages["greedy honest"] = VerificationPackage(signed, work, "float32", ShownTokens(tokens))
            # the coordinator shows the runner-up where it is clearly worse (at the last step: nothing follows)
            gap = [float(torch.topk(x, 2).values[0] - torch.topk(x, 2).values[1]) for x in logits]
            assert gap[-1] > 1e-3, gap
            shown = [*tokens[:-1], int(torch.topk(logits[-1], 2).indices[1])]
            packages["greedy shown runner-up"] = VerificationPackage(
                signed, work, "float32", ShownTokens(shown)
            )
            top = max(float(logits[-1].max()), float(-logits[-1].min()))
            cheat, forged, runner_up = _cheat_last_step(served, top + 1.0)
            packages["greedy last hop substitutes"] = VerificationPackage(
                cheat, forged, "float32", ShownTokens([*tokens[:-1], runner_up])
            )
            # the same substitution, but the coordinator shows the honest token: the hop's committed logits
            # made another token than the client saw, and it is judged on its logits alone
            packages["greedy substitutes, honest token shown"] = VerificationPackage(
                cheat, forged, "float32", ShownTokens(tokens)
            )
            params = SamplingParams(temperature=0.9, top_p=0.95)
            sampler = Sampler(params, seed=sampling_seed(DOMAIN.chain_id, DOMAIN.registry, 12, None))
            s_signed, s_work, _, s_tokens = await _serve(urls[0], 12, sampler)
            drawn = ShownTokens(s_tokens, 0.9, 0.95)
            packages["sampled honest"] = VerificationPackage(s_signed, s_work, "float32", drawn)
            other = [*s_tokens[:-1], (s_tokens[-1] + 1) % 256]
            packages["sampled other token"] = VerificationPackage(
                s_signed, s_work, "float32", ShownTokens(other, 0.9, 0.95)
            )
            caller = SamplingParams(temperature=0.9, seed=5)
            c_sampler = Sampler(caller, seed=sampling_seed(DOMAIN.chain_id, DOMAIN.registry, 13, 5))
            c_signed, c_work, _, c_tokens = await _serve(urls[0], 13, c_sampler)
            packages["caller seed honest"] = VerificationPackage(
                c_signed, c_work, "float32", ShownTokens(c_tokens, 0.9, 1.0, 5)
            )
            packages["caller seed not told"] = VerificationPackage(
                c_signed, c_work, "float32", ShownTokens(c_tokens, 0.9, 1.0, None)
            )
            out = {}
            async with aiohttp.ClientSession() as http:
                for name, package in packages.items():
                    body = {
                        "ticket": _ticket(package.commitment.job_id, VERIFIER.address),
                        "package": package.to_json(),
                    }
                    async with http.post(f"{urls[1]}/v1/verify", json=body) as resp:
                        out[name] = (resp.status, await resp.json())
            return out
        finally:
            for runner in runners:
                await runner.cleanup()

    return asyncio.run(scenario())


def test_honest_tokens_are_supported(answers: dict[str, tuple[int, dict[str, Any]]]) -> None:
    for name in ("greedy honest", "sampled honest", "caller seed honest"):
        status, data = answers[name]
        assert status == 200 and data["guilty"] is False, (name, data)
        assert data["tokens"] == {"checked": STEPS, "unsupported": [], "by_hop": [], "not_sent": []}, name


def test_a_coordinator_showing_a_token_the_logits_do_not_support_is_flagged_not_the_hop(
    answers: dict[str, tuple[int, dict[str, Any]]],
) -> None:
    status, data = answers["greedy shown runner-up"]
    # no guilty verdict on any leaf: the signed verdict is the innocent one (what the registry pays)
    assert status == 200 and data["guilty"] is False and data["leaf_index"] == INNOCENT_LEAF_INDEX, data
    assert data["tokens"]["unsupported"] == [STEPS - 1] and data["tokens"]["by_hop"] == []
    assert "shown tokens" in data["reason"] or "did not make" in data["reason"]
    status, data = answers["sampled other token"]  # sampled: flagged, attributed to nobody
    assert status == 200 and data["guilty"] is False, data
    assert data["tokens"]["unsupported"] == [STEPS - 1] and data["tokens"]["by_hop"] == [], data
    # drawn from the caller's seed but checked against the job's: most draws differ (one may agree by chance)
    status, data = answers["caller seed not told"]
    assert status == 200 and data["guilty"] is False, data
    assert len(data["tokens"]["unsupported"]) >= STEPS // 2 and data["tokens"]["by_hop"] == [], data


def test_a_last_hop_substituting_the_runner_up_is_guilty_on_that_step(
    answers: dict[str, tuple[int, dict[str, Any]]],
) -> None:
    status, data = answers["greedy last hop substitutes"]
    assert status == 200 and data["guilty"] is True and data["leaf_index"] == STEPS - 1, data
    assert data["tokens"]["by_hop"] == [STEPS - 1] and data["signature"]
    status, data = answers["greedy substitutes, honest token shown"]
    assert status == 200 and data["guilty"] is True and data["leaf_index"] == STEPS - 1, data
    assert data["tokens"]["unsupported"] == []
