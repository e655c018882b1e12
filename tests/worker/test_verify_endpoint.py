"""POST /v1/verify on a real worker server (tiny Llama, layers 0:2, in process): innocent work is found innocent,
a package that is not what the accused signed gets no verdict (422), a ticket that is not the job's, the
worker's and the package's span (within the worker's) is refused (401); the dispute store is bounded; and `tally` needs more than half the
stake on one leaf."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import torch
from aiohttp import web
from eth_account import Account

from coordinator.dispute_answers import VerifierAnswer, tally
from coordinator.disputes import hop_step_work
from shardnet.chain.commitments import sign_verdict, verify_verdict
from shardnet.chain.devnet import DEV_KEYS, free_port
from shardnet.model import load_block
from shardnet.peer.client import WorkerClient
from shardnet.span import LayerSpan
from shardnet.store.manifest import Manifest
from shardnet.verify.package import StepWork, VerificationPackage
from shardnet.wire.eip712 import CompactSignature, Domain
from tests.worker.harness import signing_server
from tests.worker.harness import ticket as worker_ticket
from worker.server import WorkerServer
from worker.verification import CommittedSteps

COORDINATOR = Account.from_key(DEV_KEYS[1])
WORKER = Account.from_key(DEV_KEYS[3])
SPAN = LayerSpan(0, 2)
DOMAIN = Domain(31337, "0x" + "ab" * 20)


def _server(block: Any) -> WorkerServer:
    return signing_server(
        WORKER, block, DOMAIN, SPAN, is_last=False, is_coordinator=lambda a: a == COORDINATOR.address
    )


def _ticket(job_id: int, span: LayerSpan = SPAN, worker: str = WORKER.address) -> dict[str, Any]:
    return worker_ticket(DOMAIN, COORDINATOR, worker, span, job_id, max_positions=600)


def test_verify_judges_committed_work_and_refuses_what_was_not_signed(
    tiny_llama_store: tuple[Path, str, Manifest],
) -> None:
    store, _cid, manifest = tiny_llama_store
    server = _server(load_block(store, manifest.to_json(), SPAN))

    async def scenario() -> list[tuple[int, dict[str, Any]]]:
        runner = web.AppRunner(server.app())
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        url = f"http://127.0.0.1:{port}"
        answers = []
        try:
            work: list[StepWork] = []
            async with WorkerClient(url) as client:
                sid = (await client.open_session(_ticket(7), "fp32"))["session_id"]
                x, pos = torch.tensor([[3, 1, 4, 1, 5]]), 0
                for token in (9, 2, 6):
                    res = await client.step_full(sid, x, pos)
                    work.append(hop_step_work(x, None, res.tensor, res.step_hash))
                    pos += int(x.shape[1])
                    x = torch.tensor([[token]])
                signed = (await client.close_session(sid)).job_commitment
            assert signed is not None
            assert [fp for _, fp in server.committed.get(7) or []] == [w.fingerprint for w in work]
            honest = VerificationPackage(signed, work).to_json()
            forged = VerificationPackage(
                signed, [*work[:2], StepWork(work[2].input_frame, work[2].output_hash, work[1].fingerprint)]
            )
            async with aiohttp.ClientSession() as http:
                for ticket, package in (
                    (_ticket(7), honest),
                    (_ticket(7), forged.to_json()),
                    (_ticket(8), honest),  # another job's ticket
                    (_ticket(7, LayerSpan(2, 4)), honest),  # another span
                    (_ticket(7, LayerSpan(0, 1)), honest),  # within the worker's span, not the package's
                    (_ticket(7, worker=COORDINATOR.address), honest),  # another worker's ticket
                ):
                    async with http.post(
                        f"{url}/v1/verify", json={"ticket": ticket, "package": package}
                    ) as resp:
                        answers.append((resp.status, await resp.json()))
                async with http.post(f"{url}/v1/verify", data=b"x" * (server._verify.max_bytes + 1)) as resp:
                    answers.append((resp.status, {}))
        finally:
            await runner.cleanup()
        return answers

    answers = asyncio.run(scenario())
    assert answers[0][0] == 200 and answers[0][1]["guilty"] is False, answers[0]
    assert answers[0][1]["positions"] == 5 + 1 + 1  # one pass over every committed position
    assert answers[1][0] == 422 and "root" in answers[1][1]["error"]
    assert [status for status, _ in answers[2:6]] == [401, 401, 401, 401]
    assert "the package is for layers 0:2" in answers[4][1]["error"]
    assert answers[6][0] == 413


def test_the_dispute_store_is_bounded_in_jobs_and_time() -> None:
    kept = CommittedSteps(max_jobs=2, window_s=10.0)
    kept.add(1, [(b"a", b"x")], now=0.0)
    kept.add(2, [(b"b", b"y")], now=1.0)
    kept.add(1, [(b"c", b"z")], now=2.0)  # a later session of job 1: appended, and job 1 is the newest
    kept.add(3, [(b"d", b"w")], now=3.0)  # evicts job 2, the oldest
    assert kept.get(2) is None and kept.get(1) == [(b"a", b"x"), (b"c", b"z")] and len(kept) == 2
    kept.add(4, [], now=14.0)  # jobs older than the window are dropped
    assert kept.get(1) is None and kept.get(3) is None and kept.get(4) == []
    few = CommittedSteps(max_jobs=10, window_s=10.0, max_steps=3)
    few.add(1, [(b"a", b"x"), (b"b", b"y")], now=0.0)
    few.add(2, [(b"c", b"z")], now=0.0)
    few.add(3, [(b"d", b"w")], now=0.0)  # 4 steps in all: job 1, the oldest, goes
    assert few.get(1) is None and few.get(2) == [(b"c", b"z")] and len(few) == 2


def test_a_slash_needs_more_than_half_of_the_drawn_stake_on_one_leaf() -> None:
    sig = CompactSignature(b"\x01" * 32, b"\x02" * 32)

    def guilty(who: str, stake: int, leaf: int) -> VerifierAnswer:
        return VerifierAnswer(who, stake, True, leaf, sig)

    innocent = VerifierAnswer("d", 10, False)
    silent = VerifierAnswer("e", 10, None, fault=True)
    assert tally([guilty("a", 10, 1), guilty("b", 10, 1), innocent])[0] == 1
    assert tally([guilty("a", 10, 1), guilty("b", 10, 2), innocent])[0] is None  # split over two leaves
    assert tally([guilty("a", 10, 1), innocent])[0] is None  # exactly half is not a majority
    assert tally([guilty("a", 10, 1), silent])[0] is None  # a silent verifier's stake still counts
    assert tally([guilty("a", 30, 1), innocent, silent])[0] == 1


def test_verdicts_recover_to_their_signer() -> None:
    root, leaf = b"\x11" * 32, b"\x22" * 32
    sig = sign_verdict(
        WORKER, DOMAIN, job_id=7, accused=COORDINATOR.address, root=root, leaf_index=2, leaf=leaf
    )
    signer = verify_verdict(
        sig, DOMAIN, job_id=7, accused=COORDINATOR.address, root=root, leaf_index=2, leaf=leaf
    )
    assert signer == WORKER.address
    other = verify_verdict(
        sig, DOMAIN, job_id=7, accused=COORDINATOR.address, root=root, leaf_index=3, leaf=leaf
    )
    assert other != WORKER.address  # a verdict on another leaf is nobody's verdict on this one
