"""Paid jobs through the real network (tests/coordinator/network.py): from contract call to checked text,
who reads an output, wrong prompts, the CLI, cancelling after the deadline, and the coordinator on PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_utils import keccak

from coordinator.settlement import expected_split
from shardnet.chain.registry import JobStatus
from shardnet.client import ShardnetClient
from shardnet.http_json import request_json
from shardnet.job_auth import AUTH_HEADER, handover_body, sign_prompt_handover
from tests.coordinator.harness import http_json, wait_for
from tests.coordinator.network import (
    PRICE,
    SHARDNET,
    Net,
    claimables,
    job_status,
    reference_text,
    second_coordinator,
)
from tests.service_proc import REPO


def test_submit_pays_routes_generates_and_settles(net: Net) -> None:
    prompt = "hello shardnet"
    nodes = [w.address for w in net.workers.values()]
    before = claimables(net.owner, [*nodes, net.coordinator_address, net.client_account.address])
    progress: list[str] = []
    outcome = net.client.submit(prompt, model="tiny-chat", max_tokens=12, progress=progress.append)

    expected_tokens, expected_text = reference_text(net, prompt, 12)
    assert outcome.text == expected_text
    assert outcome.output_hash == keccak(expected_text.encode())
    assert any("finalized" in p for p in progress)
    job = net.owner.get_job(outcome.job_id)
    assert job.status == JobStatus.Settled and net.owner.output_hash(outcome.job_id) == outcome.output_hash
    assert job.coordinator.lower() == net.coordinator_address.lower()

    # one settleJobs carried every hop's signed commitment: the route covers [0, 6) and every hop was paid
    [settled] = net.owner.get_logs(0, net.owner.block_number(), ["JobSettled"], first_indexed=outcome.job_id)
    [settlement] = [s for s in net.owner.settlements_in(settled.tx_hash) if s.job_id == outcome.job_id]
    hops = settlement.sorted_hops()
    assert sorted((h.start, h.end) for h in hops)[:3] == [(0, 2), (2, 4), (4, 6)]
    assert int(settled.args["paidHops"]) == (1 << len(hops)) - 1
    signed = {c["node"]: c["commitment"] for c in outcome.commitments or [] if c["settled"]}
    assert signed == {h.node.lower(): "0x" + h.root.hex() for h in hops}

    # the escrow went where settleJobs says: nodes by layer-tokens, the fee, the rest back to the client
    layer_tokens = [r["layer_tokens"] for r in outcome.route]
    positions = len(net.reference["tokenizer"](prompt)["input_ids"]) + len(expected_tokens)
    if len(expected_tokens) == 12:
        positions -= 1  # the last token is never fed back
    assert layer_tokens == [2 * positions] * len(hops)
    assert [h.positions for h in hops] == [positions] * len(hops)  # what each worker signed it computed
    split = expected_split(
        layer_tokens,
        [True] * len(hops),
        price_per_layer_token=PRICE,
        coordinator_fee_bps=net.owner.coordinator_fee_bps(),
        escrow=job.escrow,
    )
    after = claimables(net.owner, [*nodes, net.coordinator_address, net.client_account.address])
    by_node = {r["node"]: pay for r, pay in zip(outcome.route, split.per_hop, strict=True)}
    for h in hops:
        assert after[h.node.lower()] - before[h.node.lower()] == by_node[h.node.lower()]
    assert (
        after[net.coordinator_address.lower()] - before[net.coordinator_address.lower()]
        == split.coordinator_fee
    )
    assert (
        after[net.client_account.address.lower()] - before[net.client_account.address.lower()] == split.refund
    )


def test_only_the_jobs_client_reads_its_output(net: Net, accounts) -> None:
    from shardnet.client import AUTH_HEADER, sign_output_read

    outcome = net.client.submit("private", model="tiny-chat", max_tokens=3)
    url = f"{net.coordinator.url}/v1/jobs/{outcome.job_id}"

    def read(headers: dict[str, str]) -> dict[str, Any]:
        req = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return dict(json.loads(resp.read()))

    anonymous = read({})
    assert anonymous["status"] == "finalized" and anonymous["output"] is None and anonymous["output_hidden"]
    stranger = read({AUTH_HEADER: sign_output_read(accounts[7], outcome.job_id)})
    assert stranger["output"] is None
    wrong_job = read({AUTH_HEADER: sign_output_read(net.client_account, outcome.job_id + 1)})
    assert wrong_job["output"] is None
    assert read({AUTH_HEADER: "0xnonsense"})["output"] is None
    expired = read({AUTH_HEADER: sign_output_read(net.client_account, outcome.job_id, valid_s=-1)})
    assert expired["output"] is None  # a header seen once is useless after it expires
    mine = read({AUTH_HEADER: sign_output_read(net.client_account, outcome.job_id)})
    assert mine["output"] == outcome.text and not mine["output_hidden"]
    assert mine["output_tokens"] == reference_text(net, "private", 3)[0]
    listed = http_json("GET", f"{net.coordinator.url}/v1/jobs?client={net.client_account.address}")[1]["jobs"]
    assert listed and all(j["output"] is None for j in listed)


def test_a_json_bomb_gets_4xx_and_the_coordinator_keeps_serving(net: Net) -> None:
    """100,000 `[` used to overflow the C stack (py_ecc raises the recursion limit): SIGSEGV."""
    bomb = b"[" * 100_000 + b"]" * 100_000
    for path in ("/v1/completions", "/v1/chat/completions", "/v1/jobs/1/prompt"):
        req = urllib.request.Request(
            net.coordinator.url + path, data=bomb, method="POST", headers={"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 400 and "nested" in json.loads(err.value.read())["error"]["message"]
    assert net.coordinator.proc is not None and net.coordinator.proc.poll() is None
    assert http_json("GET", f"{net.coordinator.url}/health")[0] == 200


def test_wrong_prompt_is_refused_and_unknown_jobs_are_404(net: Net) -> None:
    job_id = net.client.pay("the real prompt", net.model_id, 4)
    body = handover_body("another prompt")
    auth = {AUTH_HEADER: sign_prompt_handover(net.client_account, job_id, body)}  # the client's, wrong prompt
    status, answer = request_json(
        "POST", f"{net.coordinator.url}/v1/jobs/{job_id}/prompt", body, headers=auth
    )
    assert status == 400 and "inputHash" in answer["error"]["message"]
    status, body = http_json("POST", f"{net.coordinator.url}/v1/jobs/99999/prompt", {"prompt": "x"})
    assert status == 404
    status, _ = http_json("GET", f"{net.coordinator.url}/v1/jobs/99999")
    assert status == 404


def test_cli_submit_and_jobs(net: Net) -> None:
    env = {**os.environ, "CLIENT_KEY": net.client_account.key.hex()}
    base = ["--deployment", str(net.dep_file), "--key-env", "CLIENT_KEY"]
    for flags, chat in ((["--raw"], False), ([], True)):  # by default the chat template wraps the prompt
        out = subprocess.run(
            [
                *SHARDNET,
                "submit",
                "cli prompt",
                "--model",
                "tiny-chat",
                "--max-tokens",
                "5",
                "--json",
                *flags,
                *base,
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        record = json.loads(out.stdout)
        assert record["output"] == reference_text(net, "cli prompt", 5, chat=chat)[1]
        assert "finalized" in out.stderr  # progress on stderr
    listing = subprocess.run(
        [*SHARDNET, "jobs", "--mine", *base],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert any(line.split()[:2] == [str(record["job_id"]), "settled"] for line in listing.splitlines()), (
        listing
    )


def test_cancel_after_the_deadline_refunds_and_claim_pays_out(net: Net, anvil) -> None:
    env = {**os.environ, "CLIENT_KEY": net.client_account.key.hex()}
    base = ["--deployment", str(net.dep_file), "--key-env", "CLIENT_KEY"]
    job_id = net.client.pay("never handed over", net.model_id, 4)  # the coordinator never gets the prompt
    escrow = net.owner.get_job(job_id).escrow

    early = subprocess.run(
        [*SHARDNET, "cancel", str(job_id), *base],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert early.returncode == 1 and "only after its deadline" in early.stderr
    anvil.advance_time(net.owner.job_timeout() + 1)
    before = net.owner.claimable(net.client_account.address)
    subprocess.run(
        [*SHARDNET, "cancel", str(job_id), *base],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert net.owner.get_job(job_id).status == JobStatus.Cancelled
    assert net.owner.claimable(net.client_account.address) - before == escrow
    wait_for(lambda: job_status(net, job_id) == "cancelled", 20, "the coordinator to see the cancellation")

    claimed = subprocess.run(
        [*SHARDNET, "claim", *base], cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert f"claimed {before + escrow} wei" in claimed
    assert net.owner.claimable(net.client_account.address) == 0
    paid_out = net.owner.get_logs(0, net.owner.block_number(), ["Claimed"])[-1].args
    assert (paid_out["account"].lower(), paid_out["amount"]) == (
        net.client_account.address.lower(),
        before + escrow,
    )


# ---------------------------------------------------------------- PostgreSQL
def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    """A throwaway PostgreSQL cluster (Debian's initdb / pg_ctl) on 127.0.0.1; yields its URL."""
    from shardnet.chain.devnet import free_port

    bindir = _pg_bin()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server binaries not installed (apt-get install postgresql; scripts/test.sh does it)"
        )
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run the cluster as the postgres user
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(f"/tmp/shardnet-pg-{os.getpid()}-{tmp_path.name}")
    data = root / "data"
    root.mkdir(parents=True)
    if as_user:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    subprocess.run(
        [
            *as_user,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "log"),
            "-w",
            "-o",
            f"-p {port} -h 127.0.0.1 -k {root}",
            "start",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.postgres
def test_coordinator_on_postgresql(net: Net, accounts, postgres_url: str) -> None:
    import psycopg2

    sqlalchemy_url = postgres_url.replace("postgresql://", "postgresql+psycopg2://")  # the installed driver
    coord = second_coordinator(
        net, accounts[6], "--db-url", sqlalchemy_url, "--verify-share", "0", name="coordinator-pg"
    )
    try:
        client = ShardnetClient(net.owner.with_account(net.client_account), coordinator_url=coord.url)
        outcome = client.submit("on postgres", model="tiny-chat", max_tokens=6)
        assert outcome.text == reference_text(net, "on postgres", 6)[1]
        assert net.owner.get_job(outcome.job_id).coordinator.lower() == accounts[6].address.lower()
    finally:
        coord.stop()
    with psycopg2.connect(postgres_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT status, output FROM coordinator_jobs WHERE job_id = %s", (outcome.job_id,))
        assert cur.fetchone() == ("finalized", outcome.text)
        cur.execute("SELECT count(*) FROM coordinator_steps WHERE job_id = %s", (outcome.job_id,))
        assert cur.fetchone()[0] >= 6
        cur.execute("SELECT count(*) FROM chain_cursor")
        assert cur.fetchone()[0] == 1
    conn.close()
