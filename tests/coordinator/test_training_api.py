"""A paid fine-tuning job through its coordinator (issue 16): the client, with no coordinator key, gets the route and
one ticket per hop for its job (authenticated by its own signature), trains through the real workers of the
network, and hands the workers' signed commitments back; the coordinator checks them against what it ticketed and
settles the job on chain by layer-tokens (backward counted twice)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import torch
from eth_utils import keccak

from shardnet.chain.commitments import SignedCommitment
from shardnet.chain.registry import JobStatus
from shardnet.cli import main
from shardnet.finetune.paid import CoordinatorRefused, open_paid_route, settle_paid_job
from shardnet.http_json import request_json
from shardnet.job_auth import AUTH_HEADER, handover_body, sign_prompt_handover, sign_training
from shardnet.model import config_dict, save_parts
from tests.coordinator.network import PRICE, Net, claimables
from tests.finetune.test_remote_training import tiny_examples

BATCH, SEQ, HIDDEN = 1, 4, 64


def _ask(net: Net, job_id: int, action: str, body: dict[str, Any], auth: str | None) -> tuple[int, Any]:
    headers = {AUTH_HEADER: auth} if auth is not None else None
    url = f"{net.coordinator.url}/v1/train/jobs/{job_id}/{action}"
    return request_json("POST", url, body, timeout=30, headers=headers)


def test_a_client_routes_trains_and_settles_its_paid_finetune_job_through_the_coordinator(
    net: Net, accounts: list[Any]
) -> None:
    client, stranger = net.client_account, accounts[7]
    job_id = net.client.pay("fine-tune", net.model_id, 8)
    for auth in (
        None,
        sign_training(stranger, job_id, "route", {}),
        sign_training(client, job_id, "settle", {}),
    ):
        status, answer = _ask(net, job_id, "route", {}, auth)
        assert status == 401 and "only the client of job" in answer["error"]["message"], (status, answer)
    status, answer = _ask(net, job_id, "settle", {}, sign_training(client, job_id, "settle", {}))
    assert status == 400 or status == 404, (status, answer)  # nothing was ticketed yet

    async def train() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        async with aiohttp.ClientSession() as http:
            spans = await open_paid_route(http, net.coordinator.url, client, job_id)
            assert [(s.span.start, s.span.end) for s in spans][0][0] == 0
            assert spans[-1].span.end == 6
            try:
                await open_paid_route(http, net.coordinator.url, client, job_id)
                raise AssertionError("a second route of the same job was ticketed")
            except CoordinatorRefused as exc:
                assert "already routed" in str(exc)
            body = handover_body("a prompt")  # the escrow is the fine-tuning's: no inference on it
            status, answer = request_json(
                "POST", f"{net.coordinator.url}/v1/jobs/{job_id}/prompt", body, timeout=30,
                headers={AUTH_HEADER: sign_prompt_handover(client, job_id, body)},
            )  # fmt: skip
            assert status == 409 and "fine-tuning" in answer["error"]["message"], (status, answer)
            torch.manual_seed(0)
            for step in range(2):
                hidden = torch.randn(BATCH, SEQ, HIDDEN)
                for span in spans:
                    hidden = await span.forward(step, hidden, {})
                grad = torch.ones_like(hidden)
                for span in reversed(spans):
                    grad, _ = await span.backward(step, grad)
            closed = [await s.close() for s in spans]
            forged = dict(
                closed[0]["job_commitment"], positions=closed[0]["positions"] + 1
            )  # not what it signed
            refused = await settle_paid_job(
                http, net.coordinator.url, client, job_id,
                [{"job_commitment": forged}, *closed[1:]], keccak(b"adapter"),
            )  # fmt: skip
            return closed, refused

    before = {w.address.lower(): net.owner.claimable(w.address) for w in net.workers.values()}
    closed, settled = asyncio.run(train())
    positions = 2 * BATCH * SEQ * 3  # 2 steps of forward + 2 x backward positions
    assert all(a["positions"] == positions and a["backward_factor"] == 2 for a in closed)
    hops = [SignedCommitment.from_json(a["job_commitment"]) for a in closed]
    assert [h.node.lower() for h in hops[1:]] == [n.lower() for n in settled["settled"]]
    assert len(settled["left_out"]) == 1 and "signature" in settled["left_out"][0]["reason"]
    for hop in hops[1:]:  # paid by layer-tokens: positions x layers x price
        gained = net.owner.claimable(hop.node) - before[hop.node.lower()]
        assert gained == positions * (hop.end - hop.start) * PRICE, (hop, gained)
    assert net.owner.claimable(hops[0].node) == before[hops[0].node.lower()]  # left out: its own post pays it
    status, answer = _ask(net, job_id, "route", {}, sign_training(client, job_id, "route", {}))
    assert status == 409 and "settled" in answer["error"]["message"], (status, answer)


def test_finetune_command_pays_routes_and_settles_through_the_coordinator(
    net: Net, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`shardnet finetune --coordinator URL --job-id N --key-env CLIENT_KEY`: the client's own key only."""
    model = net.reference["model"]
    parts = tmp_path / "parts"
    save_parts(model, model.config, parts)
    (parts / "config.json").write_text(json.dumps(config_dict(model.config)))
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps({"prompt_ids": e.prompt, "completion_ids": e.completion})
                              for e in tiny_examples()))  # fmt: skip
    job_id = net.client.pay("fine-tune", net.model_id, 64)
    monkeypatch.setenv("FINETUNE_CLIENT_KEY", net.client_account.key.hex())
    before = claimables(net.owner, [w.address for w in net.workers.values()])
    out = tmp_path / "adapter.safetensors"
    argv = ["finetune", "--model", str(parts), "--data", str(data), "--method", "lora", "--steps", "2",
            "--batch-size", "2", "--deployment", str(net.dep_file), "--key-env", "FINETUNE_CLIENT_KEY",
            "--coordinator", net.coordinator.url, "--job-id", str(job_id), "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"job {job_id} settled in tx" in printed and "3 workers paid" in printed, printed
    after = claimables(net.owner, [w.address for w in net.workers.values()])
    assert sum(after[a] > before[a] for a in after) == 3  # the three hops of the route were paid
    assert net.owner.job_state(job_id)[0] == JobStatus.Settled
