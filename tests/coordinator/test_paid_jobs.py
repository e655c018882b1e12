"""A real network on 127.0.0.1: anvil, four `worker run` processes of a tiny chat model (layers 0:2, 2:4
twice, 4:6) and one `coordinator run`. Paid jobs from contract call to checked text, the OpenAI API,
failover after SIGKILL, and a coordinator killed mid-job."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from eth_utils import keccak

from coordinator.settlement import expected_split
from shardnet.chain.registry import JobStatus, Registry
from shardnet.client import ShardnetClient
from tests.coordinator.harness import (
    EOS_ID,
    CoordinatorProc,
    build_tiny_chat_model,
    http_json,
    start_coordinator,
    wait_for,
)
from tests.service_proc import REPO
from tests.worker.harness import WorkerProc, start_worker

PRICE = 10**6
SHARDNET = [str(Path(sys.executable).parent / "shardnet")]  # the installed console script


@dataclass
class Net:
    tmp: Path
    dep_file: Path
    owner: Registry
    client_account: Any
    client: ShardnetClient
    coordinator: CoordinatorProc
    coordinator_address: str
    model_id: int
    store: Path
    hf_dir: Path
    workers: dict[str, WorkerProc]
    reference: Any


def _reference_text(net: Net, prompt: str, n: int, chat: bool = False) -> tuple[list[int], str]:
    """Greedy tokens of the unsplit model (up to EOS) and their text; `chat` wraps the prompt in the chat template."""
    from shardnet.model.reference import greedy_generate

    if chat:
        prompt = net.reference["tokenizer"].apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                                add_generation_prompt=True)
    ids = net.reference["tokenizer"](prompt, add_special_tokens=False)["input_ids"]
    torch.set_num_threads(1)
    tokens = greedy_generate(net.reference["model"], torch.tensor([ids]), n).tokens
    if EOS_ID in tokens:
        tokens = tokens[: tokens.index(EOS_ID)]
    return tokens, net.reference["tokenizer"].decode(tokens, skip_special_tokens=True)


@pytest.fixture(scope="module")
def net(tmp_path_factory, anvil, accounts, module_deployment) -> Iterator[Net]:
    from transformers import AutoTokenizer

    from shardnet.model.importer import import_model
    from shardnet.model.reference import load_reference

    tmp = tmp_path_factory.mktemp("coordnet")
    dep_file = module_deployment.save(tmp / "deployment.json")
    owner = Registry(anvil.w3, module_deployment.registry, accounts[0], deploy_block=module_deployment.deploy_block)
    hf_dir = tmp / "hf"
    build_tiny_chat_model(hf_dir)
    store = tmp / "store"
    cid, manifest = import_model(hf_dir, store, name="tiny-chat", progress=False)
    model_id = int(owner.register_model("tiny-chat", cid, 6, PRICE).event("ModelRegistered").args["modelId"])

    coord = start_coordinator(tmp, accounts[1].key.hex(), dep_file, tmp / "coord-store", "--verify-share", "0.3",
                              "--load-penalty-s", "0.05")
    owner.set_coordinator(accounts[1].address, coord.url, True)
    spans = {"a": (2, "0:2"), "b": (3, "2:4"), "b2": (4, "2:4"), "c": (5, "4:6")}
    workers: dict[str, WorkerProc] = {}
    network: Net | None = None
    try:
        for name, (i, span) in spans.items():
            workers[name] = start_worker(tmp, accounts[i], dep_file, "tiny-chat", store, "--layers", span,
                                         "--drain-grace-s", "2", name=name)
        for w in workers.values():
            w.wait_ready(timeout=300)
        coord.wait_ready(timeout=300)
        wait_for(lambda: len(http_json("GET", coord.url + "/v1/workers")[1]["workers"]) == 4, 20, "4 workers routable")
        client_account = accounts[9]
        reference = {"model": load_reference(store, manifest.to_json()), "tokenizer": AutoTokenizer.from_pretrained(hf_dir)}
        network = Net(tmp, dep_file, owner, client_account,
                      ShardnetClient(owner.with_account(client_account), coordinator_url=None), coord,
                      accounts[1].address, model_id, store, hf_dir, workers, reference)
        yield network
    finally:
        coord.stop()
        if network is not None:
            network.coordinator.stop()  # a test may have replaced it with a restarted process
        for w in workers.values():  # SIGTERM all first, so they drain and release in parallel
            if w.proc is not None and w.proc.poll() is None:
                w.signal(signal.SIGTERM)
        for w in workers.values():
            w.stop()


def _claimables(reg: Registry, addresses: list[str]) -> dict[str, int]:
    return {a.lower(): reg.claimable(a) for a in addresses}


def test_submit_pays_routes_generates_and_settles(net: Net) -> None:
    prompt = "hello shardnet"
    nodes = [w.address for w in net.workers.values()]
    before = _claimables(net.owner, [*nodes, net.coordinator_address, net.client_account.address])
    progress: list[str] = []
    outcome = net.client.submit(prompt, model="tiny-chat", max_tokens=12, progress=progress.append)

    expected_tokens, expected_text = _reference_text(net, prompt, 12)
    assert outcome.text == expected_text
    assert outcome.output_hash == keccak(expected_text.encode())
    assert any("finalized" in p for p in progress)
    job = net.owner.get_job(outcome.job_id)
    assert job.status == JobStatus.Finalized and job.output_hash == outcome.output_hash
    assert job.coordinator.lower() == net.coordinator_address.lower()

    # the route covers [0, 6) and every hop committed on chain
    hops = net.owner.get_hops(outcome.job_id)
    assert [(h.start, h.end) for h in hops][:3] == [(0, 2), (2, 4), (4, 6)]
    assert all(h.committed for h in hops)
    assert [c["commitment"] for c in outcome.commitments] == ["0x" + h.commitment.hex() for h in hops]

    # the escrow went where finalizeJob says: nodes by layer-tokens, the fee, the rest back to the client
    layer_tokens = [r["layer_tokens"] for r in outcome.route]
    positions = len(net.reference["tokenizer"](prompt)["input_ids"]) + len(expected_tokens)
    if len(expected_tokens) == 12:
        positions -= 1  # the last token is never fed back
    assert layer_tokens == [2 * positions] * len(hops)
    split = expected_split(layer_tokens, [True] * len(hops), price_per_layer_token=PRICE,
                           coordinator_fee_bps=net.owner.coordinator_fee_bps(), escrow=job.escrow)
    after = _claimables(net.owner, [*nodes, net.coordinator_address, net.client_account.address])
    for hop, pay in zip(hops, split.per_hop, strict=True):
        assert after[hop.node.lower()] - before[hop.node.lower()] == pay
    assert after[net.coordinator_address.lower()] - before[net.coordinator_address.lower()] == split.coordinator_fee
    assert after[net.client_account.address.lower()] - before[net.client_account.address.lower()] == split.refund


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
    assert mine["output_tokens"] == _reference_text(net, "private", 3)[0]
    listed = http_json("GET", f"{net.coordinator.url}/v1/jobs?client={net.client_account.address}")[1]["jobs"]
    assert listed and all(j["output"] is None for j in listed)


def test_a_json_bomb_gets_4xx_and_the_coordinator_keeps_serving(net: Net) -> None:
    """100,000 `[` used to overflow the C stack (py_ecc raises the recursion limit): SIGSEGV."""
    bomb = b"[" * 100_000 + b"]" * 100_000
    for path in ("/v1/completions", "/v1/chat/completions", "/v1/jobs/1/prompt"):
        req = urllib.request.Request(net.coordinator.url + path, data=bomb, method="POST",
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 400 and "nested" in json.loads(err.value.read())["error"]["message"]
    assert net.coordinator.proc is not None and net.coordinator.proc.poll() is None
    assert http_json("GET", f"{net.coordinator.url}/health")[0] == 200


def test_wrong_prompt_is_refused_and_unknown_jobs_are_404(net: Net) -> None:
    job_id = net.client.pay("the real prompt", net.model_id, 4)
    status, body = http_json("POST", f"{net.coordinator.url}/v1/jobs/{job_id}/prompt", {"prompt": "another prompt"})
    assert status == 400 and "inputHash" in body["error"]["message"]
    status, body = http_json("POST", f"{net.coordinator.url}/v1/jobs/99999/prompt", {"prompt": "x"})
    assert status == 404
    status, _ = http_json("GET", f"{net.coordinator.url}/v1/jobs/99999")
    assert status == 404


def test_cli_submit_and_jobs(net: Net) -> None:
    env = {**os.environ, "CLIENT_KEY": net.client_account.key.hex()}
    base = ["--deployment", str(net.dep_file), "--key-env", "CLIENT_KEY"]
    for flags, chat in ((["--raw"], False), ([], True)):  # by default the chat template wraps the prompt
        out = subprocess.run(
            [*SHARDNET, "submit", "cli prompt", "--model", "tiny-chat", "--max-tokens", "5",
             "--json", *flags, *base], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
        )
        assert out.returncode == 0, out.stderr
        record = json.loads(out.stdout)
        assert record["output"] == _reference_text(net, "cli prompt", 5, chat=chat)[1]
        assert "finalized" in out.stderr  # progress on stderr
    listing = subprocess.run([*SHARDNET, "jobs", "--mine", *base], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=60, check=True).stdout
    assert any(line.split()[:2] == [str(record["job_id"]), "Finalized"] for line in listing.splitlines()), listing


def test_openai_api(net: Net) -> None:
    import openai

    api = openai.OpenAI(base_url=net.coordinator.url + "/v1", api_key="unused", max_retries=0)
    assert "tiny-chat" in [m.id for m in api.models.list().data]

    prompt = "The sky is"
    _, expected = _reference_text(net, prompt, 10)
    done = api.completions.create(model="tiny-chat", prompt=prompt, max_tokens=10, temperature=0)
    assert done.choices[0].text == expected
    streamed = "".join(c.choices[0].text for c in api.completions.create(
        model="tiny-chat", prompt=prompt, max_tokens=10, temperature=0, stream=True))
    assert streamed == expected

    messages = [{"role": "user", "content": "hi"}]
    chat_prompt = net.reference["tokenizer"].apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    _, expected_chat = _reference_text(net, chat_prompt, 8)
    chat = api.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=8, temperature=0)
    assert chat.choices[0].message.content == expected_chat
    chunks = list(api.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=8, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected_chat
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")

    # seeded sampling is reproducible through the network
    a = api.completions.create(model="tiny-chat", prompt=prompt, max_tokens=10, temperature=1.0, top_p=0.9, seed=5)
    b = api.completions.create(model="tiny-chat", prompt=prompt, max_tokens=10, temperature=1.0, top_p=0.9, seed=5)
    assert a.choices[0].text == b.choices[0].text


def test_concurrent_jobs_spread_over_replicas(net: Net) -> None:
    """While one job holds a session on a 2:4 replica, the next job is routed through the other one."""
    import threading

    import openai

    api = openai.OpenAI(base_url=net.coordinator.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    results: dict[str, Any] = {}
    started = threading.Event()

    def run(name: str, prompt: str) -> None:
        pieces = []
        for chunk in api.completions.create(model="tiny-chat", prompt=prompt, max_tokens=120, temperature=0,
                                            stream=True):
            results.setdefault(name + "_job", int(chunk.id.split("-")[1]))
            pieces.append(chunk.choices[0].text)
            started.set()
        results[name] = "".join(pieces)

    first = threading.Thread(target=run, args=("first", "one job"))
    first.start()
    assert started.wait(60)
    second = threading.Thread(target=run, args=("second", "another job"))
    second.start()
    first.join(120)
    second.join(120)
    assert results["first"] == _reference_text(net, "one job", 120)[1]
    assert results["second"] == _reference_text(net, "another job", 120)[1]

    def middle(job_id: int) -> str:
        route = http_json("GET", f"{net.coordinator.url}/v1/jobs/{job_id}")[1]["route"]
        return next(h["node"] for h in route if h["span"] == [2, 4])

    assert middle(results["first_job"]) != middle(results["second_job"])


def _workers(net: Net) -> dict[str, dict[str, Any]]:
    return {w["node"]: w for w in http_json("GET", net.coordinator.url + "/v1/workers")[1]["workers"]}


def test_failover_after_sigkill_gives_identical_tokens(net: Net) -> None:
    import openai

    api = openai.OpenAI(base_url=net.coordinator.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    prompt = "failover test"
    n = 150
    expected_tokens, expected = _reference_text(net, prompt, n)
    assert len(expected_tokens) > 40, "the reference stopped too early for a mid-generation kill"

    pieces: list[str] = []
    arrivals: list[float] = []
    killed_at = None
    victim = None
    stream = api.completions.create(model="tiny-chat", prompt=prompt, max_tokens=n, temperature=0, stream=True)
    for chunk in stream:
        pieces.append(chunk.choices[0].text)
        arrivals.append(time.monotonic())
        if killed_at is None and len(pieces) == 10:
            job_id = int(chunk.id.split("-")[1])
            route = http_json("GET", f"{net.coordinator.url}/v1/jobs/{job_id}")[1]["route"]
            victim_addr = next(h["node"] for h in route if h["span"] == [2, 4])
            victim = next(w for w in net.workers.values() if w.address.lower() == victim_addr)
            assert victim.proc is not None
            victim.proc.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
    assert killed_at is not None and victim is not None
    after_kill = [t for t in arrivals if t > killed_at]
    stall = after_kill[0] - killed_at
    print(f"\nfailover stall between SIGKILL and the next token: {stall:.3f} s")
    assert "".join(pieces) == expected
    assert stall < 2.0
    route = http_json("GET", f"{net.coordinator.url}/v1/jobs/{job_id}")[1]["route"]
    replacement = [h for h in route if h["reason"] == "failover"]
    assert [(h["span"], h["node"] != victim.address.lower()) for h in replacement] == [([2, 4], True)]
    assert replacement[0]["positions"] > 0  # it replayed the history and went on

    # the dead worker is out of routing until it answers /health again
    down = _workers(net)[victim.address.lower()]
    assert down["down"] is True
    victim.proc.wait(timeout=10)
    restarted = WorkerProc(victim.account, victim.args, victim.log_path, victim.port).start()
    net.workers[next(k for k, w in net.workers.items() if w is victim)] = restarted
    restarted.wait_ready()
    wait_for(lambda: not _workers(net)[victim.address.lower()]["down"], 20, "the restarted worker back in routing")


def test_coordinator_killed_mid_job_fails_it_on_chain_after_restart(net: Net) -> None:
    client_reg = net.owner.with_account(net.client_account)
    job_id = net.client.pay("kill the coordinator", net.model_id, 400)
    escrow = net.owner.get_job(job_id).escrow
    before = client_reg.claimable(net.client_account.address)
    status, _ = http_json("POST", f"{net.coordinator.url}/v1/jobs/{job_id}/prompt", {"prompt": "kill the coordinator"})
    assert status == 202
    wait_for(lambda: http_json("GET", f"{net.coordinator.url}/v1/jobs/{job_id}")[1]["status"] == "running", 20,
             "the job to run", interval=0.02)
    net.coordinator.kill()
    assert net.owner.get_job(job_id).status == JobStatus.Routed
    restarted = CoordinatorProc(net.coordinator.key, net.coordinator.args, net.coordinator.log_path,
                                net.coordinator.port).start()
    net.coordinator = restarted
    restarted.wait_ready()
    wait_for(lambda: net.owner.get_job(job_id).status == JobStatus.Failed, 30, "failJob after the restart")
    assert client_reg.claimable(net.client_account.address) - before == escrow
    view = http_json("GET", f"{restarted.url}/v1/jobs/{job_id}")[1]
    assert view["status"] == "failed" and "restarted" in view["error"]
    # and the restarted coordinator serves new jobs
    assert net.client.submit("after restart", model="tiny-chat", max_tokens=3).text == \
        _reference_text(net, "after restart", 3)[1]


def _job_status(net: Net, job_id: int) -> str:
    return http_json("GET", f"{net.coordinator.url}/v1/jobs/{job_id}")[1]["status"]


def test_cheating_worker_is_caught_refereed_slashed_and_excluded(net: Net, accounts) -> None:
    """A worker started with --perturb-outputs on layers 2:4 is put on the route (the two honest replicas are
    paused while the job is routed, then resumed); a verified step disagrees with a replica, the third worker
    referees, the cheat is slashed on chain and excluded, and the job is re-run on honest workers."""
    import sqlite3

    cheat = start_worker(net.tmp, accounts[8], net.dep_file, "tiny-chat",
                         net.store, "--layers", "2:4", "--perturb-outputs", "0.5", "--drain-grace-s", "2", name="cheat")
    try:
        cheat.wait_ready(timeout=300)
        wait_for(lambda: cheat.address.lower() in _workers(net), 20, "the cheat in the directory")
        honest = [w for w in net.workers.values() if _workers(net)[w.address.lower()]["span"] == [2, 4]]
        assert len(honest) == 2
        prompt = "catch the cheat"
        n = 300
        expected_tokens, expected = _reference_text(net, prompt, n)
        assert len(expected_tokens) > 60
        stake_before = net.owner.get_node(cheat.address).stake

        for w in honest:  # paused: their /health probes time out, so routing takes the cheat
            w.signal(signal.SIGSTOP)
        try:
            wait_for(lambda: all(_workers(net)[w.address.lower()]["down"] for w in honest), 20, "replicas down")
            job_id = net.client.pay(prompt, net.model_id, n)
            status, _ = http_json("POST", f"{net.coordinator.url}/v1/jobs/{job_id}/prompt", {"prompt": prompt})
            assert status == 202
            wait_for(lambda: _job_status(net, job_id) != "queued", 20, "the job routed", interval=0.02)
        finally:
            for w in honest:
                w.signal(signal.SIGCONT)
        hops = net.owner.get_hops(job_id)
        assert (hops[1].node.lower(), hops[1].start, hops[1].end) == (cheat.address.lower(), 2, 4)

        view = net.client.wait(net.coordinator.url, job_id, timeout_s=180)
        job = net.client.check(job_id, view)
        assert view["output"] == expected and job.output_hash == keccak(expected.encode())

        slashes = [e for e in net.owner.get_logs(0, net.owner.block_number(), ["NodeSlashed"])
                   if int(e.args["jobId"]) == job_id]
        assert [e.args["node"].lower() for e in slashes] == [cheat.address.lower()]
        node = net.owner.get_node(cheat.address)
        assert node.jailed and node.stake < stake_before
        assert _workers(net)[cheat.address.lower()]["excluded"] is True
        # the evidence behind the slash is in the coordinator's database, and its keccak is on chain
        db = sqlite3.connect(net.tmp / "coordinator" / "coordinator.db")
        (evidence, evidence_hash), = db.execute(
            "SELECT evidence, evidence_hash FROM coordinator_slashes WHERE job_id = ?", (job_id,)).fetchall()
        db.close()
        record = json.loads(evidence)
        assert record["node"] == cheat.address.lower() and record["span"] == [2, 4]
        assert {record["replica"], record["referee"]} <= {w.address.lower() for w in honest}
        assert evidence_hash == "0x" + bytes(slashes[0].args["evidenceHash"]).hex()
        assert evidence_hash == "0x" + keccak(evidence.encode()).hex()
        # the re-run went through honest workers; the cheat's hop is paid nothing
        by_node = {(r["node"], tuple(r["span"])): r for r in view["route"]}
        assert by_node[(cheat.address.lower(), (2, 4))]["layer_tokens"] == 0
        assert any(node in {w.address.lower() for w in honest} and span == (2, 4) and r["reason"] == "rerun"
                   for (node, span), r in by_node.items())
        # and the excluded cheat is never routed again
        again = net.client.submit("after the cheat", model="tiny-chat", max_tokens=4)
        assert cheat.address.lower() not in {h["node"] for h in again.route}
        assert again.text == _reference_text(net, "after the cheat", 4)[1]
    finally:
        cheat.stop()


def test_cancel_after_the_deadline_refunds_and_claim_pays_out(net: Net, anvil) -> None:
    env = {**os.environ, "CLIENT_KEY": net.client_account.key.hex()}
    base = ["--deployment", str(net.dep_file), "--key-env", "CLIENT_KEY"]
    job_id = net.client.pay("never handed over", net.model_id, 4)  # the coordinator never gets the prompt
    escrow = net.owner.get_job(job_id).escrow

    early = subprocess.run([*SHARDNET, "cancel", str(job_id), *base], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=60, check=False)
    assert early.returncode == 1 and "only after its deadline" in early.stderr
    anvil.advance_time(net.owner.job_timeout() + 1)
    before = net.owner.claimable(net.client_account.address)
    subprocess.run([*SHARDNET, "cancel", str(job_id), *base], cwd=REPO, env=env, capture_output=True, text=True,
                   timeout=60, check=True)
    assert net.owner.get_job(job_id).status == JobStatus.Cancelled
    assert net.owner.claimable(net.client_account.address) - before == escrow
    wait_for(lambda: _job_status(net, job_id) == "cancelled", 20, "the coordinator to see the cancellation")

    claimed = subprocess.run([*SHARDNET, "claim", *base], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=60, check=True).stdout
    assert f"claimed {before + escrow} wei" in claimed
    assert net.owner.claimable(net.client_account.address) == 0
    paid_out = net.owner.get_logs(0, net.owner.block_number(), ["Claimed"])[-1].args
    assert (paid_out["account"].lower(), paid_out["amount"]) == (net.client_account.address.lower(), before + escrow)


def test_no_honest_worker_was_slashed(net: Net) -> None:
    slashed = {e.args["node"].lower() for e in net.owner.get_logs(0, net.owner.block_number(), ["NodeSlashed"])}
    honest = {w.address.lower() for w in net.workers.values()}
    assert not slashed & honest
    assert not any(_workers(net)[a]["excluded"] for a in honest)


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
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql; scripts/test.sh does it)")
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run the cluster as the postgres user
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(f"/tmp/shardnet-pg-{os.getpid()}-{tmp_path.name}")
    data = root / "data"
    root.mkdir(parents=True)
    if as_user:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True, timeout=120)
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                    f"-p {port} -h 127.0.0.1 -k {root}", "start"], check=True, capture_output=True, timeout=120)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60, check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.postgres
def test_coordinator_on_postgresql(net: Net, accounts, postgres_url: str) -> None:
    import psycopg2

    sqlalchemy_url = postgres_url.replace("postgresql://", "postgresql+psycopg2://")  # the installed driver
    coord = start_coordinator(net.tmp, accounts[6].key.hex(), net.dep_file, net.store, "--db-url", sqlalchemy_url,
                              "--verify-share", "0", name="coordinator-pg")
    try:
        net.owner.set_coordinator(accounts[6].address, coord.url, True)
        coord.wait_ready(timeout=300)
        client = ShardnetClient(net.owner.with_account(net.client_account), coordinator_url=coord.url)
        outcome = client.submit("on postgres", model="tiny-chat", max_tokens=6)
        assert outcome.text == _reference_text(net, "on postgres", 6)[1]
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
