"""shardnet across real interfaces: anvil, the coordinator and four workers each in its own network namespace
(tests/netns/network.py), every link behind a delaying proxy; the client is this process.

Hosts: chain (1 ms), coordinator (5 ms), a 0:2, b 2:4, b2 2:4, c 4:6 (5 ms each; b2 25 ms: 20 ms more). b2 gets
the lower address of the two replicas, so the router's tie-break alone would pick it: only its measured round
trip keeps it out of routes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shardnet.chain.registry import JobStatus
from shardnet.client import ShardnetClient
from shardnet.http_json import request_json
from shardnet.localnet import CLIENT, dev_account
from shardnet.role_process import RoleProcess
from shardnet.span import LayerSpan
from tests.coordinator.harness import build_tiny_chat_model, wait_for
from tests.netns.netlab import Host, NetLab, unavailable_reason
from tests.netns.network import NamespaceNetwork

BASE_DELAY_S = 0.005
EXTRA_DELAY_S = 0.020
PUSH_DELAY_S = 0.025  # every worker's and coordinator's link in the push vs relay test
PRICE = 10**6
COORDINATOR_FLAGS = (
    "--poll-interval-s",
    "0.1",
    "--health-interval-s",
    "0.25",
    "--step-timeout-s",
    "1.5",
    "--verify-share",
    "0",
)

UNAVAILABLE = unavailable_reason()
pytestmark = pytest.mark.skipif(
    UNAVAILABLE is not None, reason=f"no namespace test network here: {UNAVAILABLE}"
)


@dataclass
class NsNet:
    net: NamespaceNetwork
    lab: NetLab
    coordinator: RoleProcess
    workers: dict[str, RoleProcess]
    addresses: dict[str, str]  # worker name -> lowercase address
    reference: Any
    tokenizer: Any

    def host(self, name: str) -> Host:
        return self.net.hosts[name]

    def node_name(self, address: str) -> str:
        return next(n for n, a in self.addresses.items() if a == address.lower())

    def workers_view(self) -> dict[str, dict[str, Any]]:
        view = request_json("GET", self.coordinator.url + "/v1/workers", timeout=5)[1]["workers"]
        return {self.node_name(w["node"]): w for w in view}


@pytest.fixture(scope="module")
def nsnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NsNet]:
    from transformers import AutoTokenizer

    from shardnet.model.reference import load_reference

    tmp = tmp_path_factory.mktemp("netns")
    lab = NetLab.create()
    net: NamespaceNetwork | None = None
    try:
        net = NamespaceNetwork.start(tmp / "net", lab, chain_delay_s=0.001)
        hf_dir = tmp / "hf"
        build_tiny_chat_model(hf_dir)
        model_id, _cid, manifest = net.import_model(hf_dir, price_wei=PRICE, name="tiny-chat")
        # the two replicas of 2:4: b2 (the slow link) takes the lower address, which wins ties
        pair = sorted((4, 5), key=lambda i: str(dev_account(i).address).lower())
        keys = {"a": 3, "b": pair[1], "b2": pair[0], "c": 6}
        spans = {"a": "0:2", "b": "2:4", "b2": "2:4", "c": "4:6"}
        coordinator = net.start_coordinator(delay_s=BASE_DELAY_S, extra=COORDINATOR_FLAGS)
        workers = {
            name: net.add_worker(
                name,
                keys[name],
                model_id,
                LayerSpan.parse(spans[name]),
                delay_s=BASE_DELAY_S + (EXTRA_DELAY_S if name == "b2" else 0.0),
                extra=("--poll-interval-s", "0.2", "--drain-grace-s", "1"),
            )
            for name in spans
        }
        for w in workers.values():
            w.wait_healthy(timeout=300)
        coordinator.wait_healthy(timeout=120)
        net.wait_for_workers(coordinator, 4, timeout=60)
        yield NsNet(
            net,
            lab,
            coordinator,
            workers,
            {n: str(dev_account(k).address).lower() for n, k in keys.items()},
            load_reference(net.store_dir, manifest.to_json()),  # type: ignore[arg-type]
            AutoTokenizer.from_pretrained(hf_dir),
        )
    finally:
        if net is not None:
            net.close()
        lab.close()


def reference_tokens(ns: NsNet, prompt: str, n: int) -> list[int]:
    import torch

    from shardnet.model.reference import greedy_generate

    ids = ns.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    torch.set_num_threads(1)
    return list(greedy_generate(ns.reference, torch.tensor([ids]), n).tokens)


def link_bytes(host: Host) -> int:
    """Bytes the host's link carried both ways so far (the root end of its veth pair)."""
    stats = Path(f"/sys/class/net/{host.link}/statistics")
    return int((stats / "rx_bytes").read_text()) + int((stats / "tx_bytes").read_text())


def submit(ns: NsNet, prompt: str, max_tokens: int) -> Any:
    client = ShardnetClient(ns.net.registry_for(CLIENT), coordinator_url=None)
    return client.submit(prompt, model="tiny-chat", max_tokens=max_tokens)


def test_paid_job_end_to_end_across_namespaces(nsnet: NsNet) -> None:
    before = {name: link_bytes(nsnet.host(name)) for name in nsnet.net.hosts}
    outcome = submit(nsnet, "hello across the bridge", 10)
    expected = reference_tokens(nsnet, "hello across the bridge", 10)
    if 256 in expected:
        expected = expected[: expected.index(256)]
    assert outcome.text == nsnet.tokenizer.decode(expected, skip_special_tokens=True)
    job = nsnet.net.owner.get_job(outcome.job_id)
    assert job.status == JobStatus.Settled
    route = [nsnet.node_name(r["node"]) for r in outcome.route]
    assert route[0] == "a" and route[-1] == "c" and len(route) == 3
    # the traffic crossed the interfaces: every host on the route, the coordinator and the chain moved bytes
    moved = {name: link_bytes(nsnet.host(name)) - before[name] for name in nsnet.net.hosts}
    for name in ("chain", "coordinator", *route):
        assert moved[name] > 1000, f"{name}'s link carried only {moved[name]} bytes during a job through it"


def test_router_avoids_the_replica_whose_link_has_20ms_more_delay(nsnet: NsNet) -> None:
    # the coordinator's /health probes see b2's extra round trip (2 x 20 ms) ...
    wait_for(
        lambda: (v := nsnet.workers_view())["b2"]["rtt_s"] - v["b"]["rtt_s"] > 1.5 * EXTRA_DELAY_S,
        20,
        "the coordinator's measured round trip to b2 to exceed b's by 30 ms",
    )
    # ... and every job goes through b, although b2 wins ties by address
    for i in range(3):
        outcome = submit(nsnet, f"route me {i}", 4)
        assert [nsnet.node_name(r["node"]) for r in outcome.route] == ["a", "b", "c"]
    view = nsnet.workers_view()
    assert view["b2"]["rtt_s"] >= 2 * EXTRA_DELAY_S and view["b"]["rtt_s"] < 2 * EXTRA_DELAY_S


def stream_completion(url: str, prompt: str, n: int, on_chunk: Any) -> tuple[str, int]:
    """Stream a greedy completion of exactly `n` tokens from the coordinator at `url`; returns (text, job id)."""
    import openai

    api = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
    text, job_id = "", 0
    for count, chunk in enumerate(
        api.completions.create(
            model="tiny-chat",
            prompt=prompt,
            max_tokens=n,
            temperature=0,
            stream=True,
            extra_body={"ignore_eos": True},
        ),
        start=1,
    ):
        job_id = int(str(chunk.id).split("-")[1])
        piece = chunk.choices[0].text if chunk.choices else ""
        text += piece
        on_chunk(count, job_id, piece)
    return text, job_id


def test_failover_when_a_workers_link_is_cut(nsnet: NsNet) -> None:
    prompt, n = "cut the wire", 40
    cut: dict[str, float] = {}

    def cut_mid(count: int, job_id: int, _text: str) -> None:
        if count != 8 or cut:
            return
        route = request_json("GET", f"{nsnet.coordinator.url}/v1/jobs/{job_id}")[1]["route"]
        victim = nsnet.node_name(next(h["node"] for h in route if h["span"] == [2, 4]))
        nsnet.lab.cut(nsnet.host(victim))  # link down: the worker keeps running, nothing reaches it
        cut[victim] = time.monotonic()

    victim = ""
    try:
        text, job_id = stream_completion(nsnet.coordinator.url, prompt, n, cut_mid)
        [victim] = cut
        assert text == nsnet.tokenizer.decode(reference_tokens(nsnet, prompt, n), skip_special_tokens=True)
        assert nsnet.workers[victim].alive(), "the cut worker must still run: this is a network failure"
        spans = [
            (nsnet.node_name(h["node"]), h["span"])
            for h in request_json("GET", f"{nsnet.coordinator.url}/v1/jobs/{job_id}")[1]["route"]
        ]
        replica = "b2" if victim == "b" else "b"
        assert (replica, [2, 4]) in spans, f"the replica of the cut worker did not serve 2:4: {spans}"
        assert nsnet.workers_view()[victim]["down"]
    finally:
        for name in cut:
            nsnet.lab.restore(nsnet.host(name))
    # back on the link, the worker answers /health again and is routable
    wait_for(lambda: not nsnet.workers_view()[victim]["down"], 30, f"{victim} back in routing after restore")


def completion_s(url: str, prompt: str, n: int) -> float:
    """Seconds a whole (not streamed) greedy completion of exactly `n` tokens takes, paid job and all."""
    t0 = time.perf_counter()
    status, body = request_json(
        "POST",
        url + "/v1/completions",
        {"model": "tiny-chat", "prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": True},
        timeout=120,
    )
    assert status == 200 and body["usage"]["completion_tokens"] == n, (status, body)
    return time.perf_counter() - t0


def decode_ms_per_token(url: str, prompt: str) -> float:
    """Per-token decode time: (the quickest of two 24-token completions - the quickest of two 4-token ones) / 20.
    The job's fixed costs (payment, prefill, settlement) cancel out, and streamed chunks, which hold back bytes
    that are not yet whole UTF-8 characters, are not needed."""
    short = min(completion_s(url, prompt, 4) for _ in range(2))
    long = min(completion_s(url, prompt, 24) for _ in range(2))
    return (long - short) * 1000 / 20


def test_push_mode_saves_link_traversals_over_relaying(nsnet: NsNet) -> None:
    from coordinator.config import CoordinatorConfig

    if "data_path" not in CoordinatorConfig.model_fields:
        pytest.skip(
            "the coordinator has no --data-path relay|push option in this branch yet (issue 14 item 1, "
            "engineer x14p): unskip after the merge"
        )
    # every link but the chain's at PUSH_DELAY_S. Relaying, a token crosses 6 links (coordinator -> a -> coordinator
    # -> b -> coordinator -> c -> coordinator); pushing, 4 (coordinator -> a -> b -> c -> coordinator): push must
    # save 2 link delays a token. Two coordinators, one of each mode, take turns on the same workers (same load).
    delay_ms = PUSH_DELAY_S * 1000
    coordinators: dict[str, RoleProcess] = {}
    try:
        for key_index, mode in ((7, "relay"), (8, "push")):
            coordinators[mode] = nsnet.net.start_coordinator(
                name=f"coord-{mode}",
                key_index=key_index,
                delay_s=PUSH_DELAY_S,
                extra=(*COORDINATOR_FLAGS, "--health-interval-s", "1", "--data-path", mode),
            )
        for c in coordinators.values():
            c.wait_healthy(timeout=120)
            nsnet.net.wait_for_workers(c, 4, timeout=60)
        for name in ("a", "b", "b2", "c"):
            nsnet.net.set_delay(name, PUSH_DELAY_S)
        # no warm-up job: each figure is the quickest of two, so a coordinator's cold first job never counts
        per_token = {mode: decode_ms_per_token(c.url, "push or relay") for mode, c in coordinators.items()}
        saved = per_token["relay"] - per_token["push"]
        print(f"decode ms a token at {delay_ms:g} ms a link: {per_token}; push saved {saved:.1f} ms")
        assert saved >= 1.5 * delay_ms, (
            f"push saved {saved:.1f} ms a token, 2 x {delay_ms:g} expected: {per_token}"
        )
    finally:
        for name in ("a", "b", "c"):
            nsnet.net.set_delay(name, BASE_DELAY_S)
        nsnet.net.set_delay("b2", BASE_DELAY_S + EXTRA_DELAY_S)
        for c in coordinators.values():
            c.stop()
