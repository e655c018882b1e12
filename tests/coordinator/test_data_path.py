"""The two data paths (`--data-path relay|push`) on one network of real processes: a coordinator of each mode
over the same four workers of a tiny chat model (layers 0:2, 2:4 twice, 4:6), each worker (and the push
coordinator's answer endpoint) behind a counting proxy, so every message of a step is seen on its link.

Both modes: paid greedy tokens equal the unsplit model's, every hop is settled with the commitment its worker
signed, a seeded sampled job draws the same tokens, and a worker SIGKILLed mid-generation is failed over with
identical tokens. Push mode: a token's data crosses n + 1 links for n workers (relay: 2n), greedy answers are
the compact top-k frame, and each hop's after-the-fact packages are read back from the workers."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from shardnet.chain.deploy import deploy_registry
from shardnet.chain.devnet import free_port
from shardnet.chain.registry import Registry
from tests.coordinator.counting_proxy import CountingProxy
from tests.coordinator.harness import (
    EOS_ID,
    CoordinatorProc,
    build_tiny_chat_model,
    http_json,
    start_coordinator,
    wait_for,
)
from tests.fixtures_chain import TEST_PARAMS
from tests.worker.harness import WorkerProc, start_worker

PRICE = 10**6
MODES = ["relay", "push"]
SPANS = {"a": (2, "0:2"), "b": (3, "2:4"), "b2": (4, "2:4"), "c": (5, "4:6")}
COORDINATOR_ACCOUNTS = {"relay": 1, "push": 6}


@dataclass
class PathNet:
    coordinators: dict[str, CoordinatorProc]
    workers: dict[str, WorkerProc]
    proxies: dict[str, CountingProxy]  # by worker name, and "push-answers"
    reference: Any


@pytest.fixture(scope="module")
def paths(tmp_path_factory: Any, anvil: Any, accounts: Any) -> Iterator[PathNet]:
    from transformers import AutoTokenizer

    from shardnet.model.importer import import_model
    from shardnet.model.reference import load_reference

    tmp = tmp_path_factory.mktemp("datapath")
    deployment = deploy_registry(anvil.w3, accounts[0], TEST_PARAMS)
    dep_file = deployment.save(tmp / "deployment.json")
    owner = Registry(anvil.w3, deployment.registry, accounts[0], deploy_block=deployment.deploy_block)
    hf_dir = tmp / "hf"
    build_tiny_chat_model(hf_dir)
    store = tmp / "store"
    cid, manifest = import_model(hf_dir, store, name="tiny-chat", progress=False)
    owner.register_model("tiny-chat", cid, 6, PRICE)
    proxies: dict[str, CountingProxy] = {}
    coordinators: dict[str, CoordinatorProc] = {}
    workers: dict[str, WorkerProc] = {}
    try:
        push_port = free_port()
        proxies["push-answers"] = CountingProxy(f"http://127.0.0.1:{push_port}", free_port()).start()
        for mode in MODES:
            extra = ["--data-path", mode, "--verify-share", "0.3"]
            if mode == "push":
                extra += ["--compact-answers", "--public-url", proxies["push-answers"].url]
            coordinators[mode] = start_coordinator(
                tmp,
                accounts[COORDINATOR_ACCOUNTS[mode]].key.hex(),
                dep_file,
                tmp / f"store-{mode}",
                *extra,
                name=f"coordinator-{mode}",
                port=push_port if mode == "push" else None,
            )
            owner.set_coordinator(accounts[COORDINATOR_ACCOUNTS[mode]].address, coordinators[mode].url, True)
        for name, (i, span) in SPANS.items():
            port = free_port()
            proxies[name] = CountingProxy(f"http://127.0.0.1:{port}", free_port()).start()
            workers[name] = start_worker(
                tmp, accounts[i], dep_file, "tiny-chat", store, "--layers", span,
                "--public-url", proxies[name].url, name=name, port=port,
            )  # fmt: skip
        for w in workers.values():
            w.wait_ready(timeout=300)
        for c in coordinators.values():
            c.wait_ready(timeout=300)
            wait_for(lambda c=c: _routable(c) == 4, 30, "4 workers routable")
        reference = {
            "model": load_reference(store, manifest.to_json()),
            "tokenizer": AutoTokenizer.from_pretrained(hf_dir),
        }
        yield PathNet(coordinators, workers, proxies, reference)
    finally:
        for c in coordinators.values():
            c.stop()
        for w in workers.values():
            if w.proc is not None and w.proc.poll() is None:
                w.signal(signal.SIGTERM)
        for w in workers.values():
            w.stop()
        for p in proxies.values():
            p.stop()


def _verifications(net: PathNet, mode: str, job_id: int) -> list[tuple[int, int]]:
    """(step, agree) of the job's shadow checks, from the coordinator's database."""
    import sqlite3

    db = net.coordinators[mode].log_path.parent / f"coordinator-{mode}" / "coordinator.db"
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT step_index, agree FROM coordinator_verifications WHERE job_id = ? AND step_index >= 0",
            (job_id,),
        ).fetchall()
    return [(int(step), int(agree)) for step, agree in rows]


def _routable(coordinator: CoordinatorProc) -> int:
    workers = http_json("GET", coordinator.url + "/v1/workers")[1]["workers"]
    return sum(1 for w in workers if w["live"] and not w["down"] and not w["excluded"])


def _reference(net: PathNet, prompt: str, n: int) -> str:
    import torch

    from shardnet.model.reference import greedy_generate

    ids = net.reference["tokenizer"](prompt, add_special_tokens=False)["input_ids"]
    torch.set_num_threads(1)
    tokens = greedy_generate(net.reference["model"], torch.tensor([ids]), n).tokens
    if EOS_ID in tokens:
        tokens = tokens[: tokens.index(EOS_ID)]
    return str(net.reference["tokenizer"].decode(tokens, skip_special_tokens=True))


def _api(net: PathNet, mode: str) -> Any:
    import openai

    return openai.OpenAI(
        base_url=net.coordinators[mode].url + "/v1", api_key="unused", max_retries=0, timeout=120
    )


def _job(net: PathNet, mode: str, job_id: int) -> dict[str, Any]:
    return http_json("GET", f"{net.coordinators[mode].url}/v1/jobs/{job_id}")[1]  # type: ignore[no-any-return]


def _settled(net: PathNet, mode: str, job_id: int) -> dict[str, Any]:
    return wait_for(
        lambda: job if (job := _job(net, mode, job_id)).get("status") == "finalized" else None,
        90,
        "settlement",
    )


@pytest.mark.parametrize("mode", MODES)
def test_greedy_tokens_equal_transformers_and_every_hop_is_settled(paths: PathNet, mode: str) -> None:
    prompt = "The data path"
    expected = _reference(paths, prompt, 24)
    done = _api(paths, mode).completions.create(
        model="tiny-chat", prompt=prompt, max_tokens=24, temperature=0
    )
    assert done.choices[0].text == expected
    job = _settled(paths, mode, int(done.id.split("-")[1]))
    worked = {h["hop"] for h in job["route"] if h["positions"] > 0}
    hops = [h for h in job["commitments"] if h["hop"] in worked]
    assert [h["span"] for h in hops] == [[0, 2], [2, 4], [4, 6]]
    # settled with the commitment each worker signed (a package that did not rebuild it would leave it unpaid)
    assert all(h["settled"] and h["note"] is None for h in hops), hops
    # the sampled shadow checks ran (push mode: over the frames read back after the last token) and agreed
    checks = _verifications(paths, mode, job["job_id"])
    assert checks and all(agree for _, agree in checks), checks
    if mode == "push":  # every hop's packages were read back from the workers (relay mode relays them)
        log = paths.coordinators[mode].log_path.read_text()
        read_back = [f"job {job['job_id']}: hop {h['hop']}: " for h in hops]
        assert all(f"{line}" in log for line in read_back), log[-3000:]


@pytest.mark.parametrize("mode", MODES)
def test_link_traversals_per_token(paths: PathNet, mode: str) -> None:
    """n workers: relay sends each its input and reads back its output (2n link traversals a token); push sends
    the first its input, each the next, and the last answers the coordinator (n + 1)."""
    before = {name: p.snapshot() for name, p in paths.proxies.items()}
    done = _api(paths, mode).completions.create(
        model="tiny-chat", prompt="count", max_tokens=12, temperature=0
    )
    route = _settled(paths, mode, int(done.id.split("-")[1]))["route"]
    nodes = {h["node"] for h in route if h["positions"] > 0}
    routed = [n for n, w in paths.workers.items() if w.address.lower() in nodes] + ["push-answers"]
    seen: Counter[str] = Counter()
    for name in routed:
        seen.update(paths.proxies[name].snapshot() - before[name])
    steps = (paths.proxies["a"].snapshot() - before["a"])["step request"]
    assert steps >= 2  # a prefill and decode steps (one token each)
    data = seen["step request"] + seen["step response"] + seen["answer request"]
    n = 3
    print(f"\n{mode}: {steps} steps, {dict(seen)}: {data / steps:g} data traversals a token for {n} workers")
    assert data == (2 * n if mode == "relay" else n + 1) * steps


def test_a_seeded_sampled_job_draws_the_same_tokens_in_both_modes(paths: PathNet) -> None:
    texts = [
        _api(paths, mode)
        .completions.create(
            model="tiny-chat", prompt="Sample", max_tokens=16, temperature=1.0, top_p=0.9, seed=7
        )
        .choices[0]
        .text
        for mode in MODES
    ]
    assert texts[0] == texts[1] and texts[0]


@pytest.mark.parametrize("mode", MODES)
def test_failover_after_sigkill_gives_identical_tokens(paths: PathNet, mode: str) -> None:
    prompt = f"failover in {mode} mode"
    n = 120
    expected = _reference(paths, prompt, n)
    assert len(expected) > 40, "the reference stopped too early for a mid-generation kill"
    pieces: list[str] = []
    victim: WorkerProc | None = None
    job_id = 0
    for chunk in _api(paths, mode).completions.create(
        model="tiny-chat", prompt=prompt, max_tokens=n, temperature=0, stream=True
    ):
        pieces.append(chunk.choices[0].text)
        if victim is None and len(pieces) == 10:
            job_id = int(chunk.id.split("-")[1])
            node = next(h["node"] for h in _job(paths, mode, job_id)["route"] if h["span"] == [2, 4])
            victim = next(w for w in paths.workers.values() if w.address.lower() == node)
            assert victim.proc is not None
            victim.proc.send_signal(signal.SIGKILL)
    assert victim is not None
    assert "".join(pieces) == expected
    route = _job(paths, mode, job_id)["route"]
    replacement = [h for h in route if h["reason"] == "failover"]
    assert [(h["span"], h["node"] != victim.address.lower()) for h in replacement] == [([2, 4], True)]
    assert replacement[0]["positions"] > 0
    victim.proc.wait(timeout=10)  # type: ignore[union-attr]
    name = next(k for k, w in paths.workers.items() if w is victim)
    paths.workers[name] = WorkerProc(victim.account, victim.args, victim.log_path, victim.port).start()
    paths.workers[name].wait_ready()
    for c in paths.coordinators.values():
        wait_for(lambda c=c: _routable(c) == 4, 30, "the restarted worker back in routing")


@pytest.mark.parametrize("mode", MODES)
def test_a_hung_worker_is_found_and_failed_over(paths: PathNet, mode: str) -> None:
    """A worker that stops answering (SIGSTOP, not a kill): relay times out its hop; push times out the whole chain,
    then finds the hung worker by its /health (the workers before it answer) and replaces that one."""
    prompt = f"a hung worker in {mode} mode"
    n = 60
    expected = _reference(paths, prompt, n)
    pieces: list[str] = []
    victim: WorkerProc | None = None
    job_id = 0
    try:
        for chunk in _api(paths, mode).completions.create(
            model="tiny-chat", prompt=prompt, max_tokens=n, temperature=0, stream=True
        ):
            pieces.append(chunk.choices[0].text)
            if victim is None and len(pieces) == 5:
                job_id = int(chunk.id.split("-")[1])
                node = next(h["node"] for h in _job(paths, mode, job_id)["route"] if h["span"] == [2, 4])
                victim = next(w for w in paths.workers.values() if w.address.lower() == node)
                victim.signal(signal.SIGSTOP)
    finally:
        if victim is not None:
            victim.signal(signal.SIGCONT)
    assert victim is not None
    assert "".join(pieces) == expected
    route = _job(paths, mode, job_id)["route"]
    replaced = [(h["span"], h["node"] != victim.address.lower()) for h in route if h["reason"] == "failover"]
    assert replaced == [([2, 4], True)], route  # the hung worker's span, not the first worker's
    for c in paths.coordinators.values():
        wait_for(lambda c=c: _routable(c) == 4, 30, "the resumed worker back in routing")
