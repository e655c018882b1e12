"""Hostile input against one real `worker run` process (tiny random Llama, all 4 layers) on a real anvil:
JSON bombs, out-of-range ticket ids, leaked session ids, revoked coordinators, half-open sockets and a
corrupted store file. Each case ends by checking that the process is alive and still serves a session."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import torch
from aiohttp.http_exceptions import HttpProcessingError

from shardnet.chain.registry import Registry
from shardnet.model.reference import greedy_generate, load_reference
from shardnet.peer.client import WorkerClient
from shardnet.peer.errors import WorkerAPIError
from shardnet.span import LayerSpan
from shardnet.store.cid import cid_of_file
from tests.worker.fuzz_requests import FuzzRequest, FuzzTargets, hostile_requests
from tests.worker.harness import WorkerProc, run, start_worker, ticket, tiny_llama_on_chain

SPAN = LayerSpan(0, 4)
PROMPT = torch.tensor([[5, 17, 99, 3, 42]], dtype=torch.int64)
HEADER_TIMEOUT_S, BODY_TIMEOUT_S, MAX_PER_IP = 2.0, 2.0, 24


@dataclass
class Net:
    owner: Registry
    coordinator: Any
    other_coordinator: Any
    worker: WorkerProc
    store: Path  # the worker's own copy
    reference_store: Path  # the untouched original, for the reference model
    manifest: Any


@pytest.fixture(scope="module")
def net(tmp_path_factory, anvil, accounts, module_deployment, tiny_llama_store) -> Iterator[Net]:
    tmp = tmp_path_factory.mktemp("hostile")
    shared_store, cid, manifest = tiny_llama_store
    store = tmp / "store"  # a copy: one test corrupts a file in it
    shutil.copytree(shared_store, store)
    dep_file, owner, _ = tiny_llama_on_chain(
        tmp, anvil, accounts[0], module_deployment, cid, [accounts[1], accounts[4]]
    )
    worker = start_worker(
        tmp,
        accounts[2],
        dep_file,
        "tiny-llama",
        store,
        "--layers",
        "0:4",
        "--header-timeout-s",
        str(HEADER_TIMEOUT_S),
        "--body-timeout-s",
        str(BODY_TIMEOUT_S),
        "--max-connections-per-ip",
        str(MAX_PER_IP),
        "--max-sessions",
        "8",
        name="hostile",
    )
    try:
        worker.wait_ready()
        yield Net(owner, accounts[1], accounts[4], worker, store, shared_store, manifest)
    finally:
        # the hostile clients leave sessions open, which a draining worker waits up to 30 s for: no need here
        worker.stop(timeout=3)


def reference_tokens(net: Net, n: int) -> list[int]:
    torch.manual_seed(0)
    return list(
        greedy_generate(load_reference(net.reference_store, net.manifest.to_json()), PROMPT, n).tokens
    )


async def generate(net: Net, n: int) -> list[int]:
    """A normal session: greedy tokens from the worker (all layers), then closed."""
    async with WorkerClient(net.worker.url) as w:
        sid = (await w.open_session(ticket(net.owner.domain(), net.coordinator, net.worker.address, SPAN)))[
            "session_id"
        ]
        x, pos, tokens = PROMPT, 0, []
        for _ in range(n):
            logits, _ = await w.step(sid, x, pos)
            pos += x.shape[1]
            tokens.append(int(logits[0, -1].argmax()))
            x = torch.tensor([[tokens[-1]]])
        await w.close(sid)
        return tokens


def assert_still_serving(net: Net) -> None:
    assert net.worker.proc is not None and net.worker.proc.poll() is None, net.worker.log()[-3000:]
    assert run(generate(net, 3)) == reference_tokens(net, 3)


async def raw(
    url: str, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url + path, data=body, headers=headers or {}) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


def test_a_100k_deep_json_and_an_oversized_one_get_4xx_and_the_worker_lives(net: Net) -> None:
    bomb = b"[" * 100_000 + b"]" * 100_000  # used to overflow the C stack (SIGSEGV): py_ecc's recursion limit
    assert run(raw(net.worker.url, "POST", "/v1/sessions", bomb))[0] in (400, 413)
    within_size = b"[" * 30_000 + b"]" * 30_000
    status, data = run(raw(net.worker.url, "POST", "/v1/sessions", within_size))
    assert status == 400 and "nested" in data["error"]
    nested_ticket = b'{"ticket": ' + b'{"a": ' * 8_000 + b"1" + b"}" * 8_001
    assert run(raw(net.worker.url, "POST", "/v1/sessions", nested_ticket))[0] == 400
    big = b'{"ticket": {}, "codec": "' + b"x" * 200_000 + b'"}'
    status, data = run(raw(net.worker.url, "POST", "/v1/sessions", big))
    assert status == 413 and "larger" in data["error"]
    for body in (b'{"ticket": {"a": NaN}}', b'{"ticket": "\\ud800"}', b'{"ticket": 1' + b"0" * 5000 + b"}"):
        assert run(raw(net.worker.url, "POST", "/v1/sessions", body))[0] == 400, body[:40]
    assert_still_serving(net)


def test_a_ticket_with_an_out_of_range_or_non_integer_job_id_is_refused_and_opens_nothing(net: Net) -> None:
    def open_status(t: dict[str, Any]) -> int:
        try:
            run(WorkerClient(net.worker.url).open_session(t))
        except WorkerAPIError as exc:
            return exc.status
        return 200

    signed = ticket(net.owner.domain(), net.coordinator, net.worker.address, SPAN, job_id=1)
    for job_id in (2**63, 2**64, 2**256, -1):  # ids no ticket can be signed for: forged into a signed one
        assert open_status({**signed, "job_id": job_id}) == 400, job_id
    as_string = {**ticket(net.owner.domain(), net.coordinator, net.worker.address, SPAN), "job_id": "7"}
    assert open_status(as_string) == 401
    assert run(WorkerClient(net.worker.url).health())["sessions"] == 0
    assert "internal error" not in net.worker.log()
    assert_still_serving(net)


def test_a_leaked_session_id_alone_reads_steps_and_closes_nothing(net: Net) -> None:
    async def go() -> list[int]:
        async with WorkerClient(net.worker.url) as w:
            sid = (
                await w.open_session(ticket(net.owner.domain(), net.coordinator, net.worker.address, SPAN))
            )["session_id"]
            await w.step(sid, PROMPT, 0)
            path = f"/v1/sessions/{sid}"
            statuses = []
            for headers in ({}, {"X-Session-Token": "0" * 32}, {"X-Session-Token": ""}):
                statuses.append((await raw(net.worker.url, "GET", path + "/outputs", headers=headers))[0])
                statuses.append((await raw(net.worker.url, "DELETE", path, headers=headers))[0])
                step_headers = {**headers, "X-Start-Pos": "5"}
                statuses.append((await raw(net.worker.url, "POST", path + "/step", b"x", step_headers))[0])
            assert (await w.outputs(sid)).shape[0] == 1  # the owner still reads and steps
            await w.step(sid, torch.tensor([[1]]), PROMPT.shape[1])
            await w.close(sid)
            return statuses

    assert run(go()) == [401] * 9


def test_a_revoked_coordinator_is_refused_within_a_second(net: Net) -> None:
    other = net.other_coordinator

    async def open_and_close() -> int:
        async with WorkerClient(net.worker.url) as w:
            try:
                sid = (await w.open_session(ticket(net.owner.domain(), other, net.worker.address, SPAN)))[
                    "session_id"
                ]
            except WorkerAPIError as exc:
                return exc.status
            await w.close(sid)
            return 200

    def try_open() -> int:
        return run(open_and_close())

    assert try_open() == 200  # approved, and now cached as approved for a minute
    net.owner.set_coordinator(other.address, "http://127.0.0.1:9", False)
    revoked_at = time.monotonic()
    while try_open() == 200:
        assert time.monotonic() - revoked_at < 1.0, "a revoked coordinator's ticket was still accepted"
        time.sleep(0.05)
    net.owner.set_coordinator(other.address, "http://127.0.0.1:9", True)
    assert "revoked on chain" in net.worker.log()


def _half_open(port: int, kind: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    if kind == 0:  # a request line and half a header, never finished
        s.sendall(b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Le")
    elif kind == 1:  # a whole head announcing a body that never comes in full
        s.sendall(b'POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"ticket"')
    return s  # kind 2: connected, silent


def _closed_by_peer(s: socket.socket, deadline: float) -> bool:
    s.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        while s.recv(4096):
            pass  # a 408/429 answer, then EOF
        return True
    except TimeoutError:
        return False
    except ConnectionError:
        return True


def test_a_hundred_half_open_sockets_are_closed_in_bounded_time_and_service_goes_on(net: Net) -> None:
    socks = [_half_open(net.worker.port, i % 3) for i in range(100)]
    try:
        # beyond the per-IP cap the worker answers 429 and closes at once: well within a second each, where a held
        # socket waits for the header timeout (50 ms each missed 2 of 66 once, in a full CI run on 2 loaded cores)
        t0 = time.monotonic()
        refused = sum(_closed_by_peer(s, time.monotonic() + 0.5) for s in socks[MAX_PER_IP + 10 :])
        assert refused == len(socks) - MAX_PER_IP - 10, "connections beyond the per-IP cap were kept"
        # the rest are closed once the header or body timeout passes
        deadline = t0 + BODY_TIMEOUT_S + HEADER_TIMEOUT_S + 5.0  # 408, then a bounded drain of the body
        held = [s for s in socks[: MAX_PER_IP + 10] if not _closed_by_peer(s, deadline)]
        assert not held, f"{len(held)} half-open sockets still held {deadline - t0:.0f} s later"
    finally:
        for s in socks:
            s.close()
    assert_still_serving(net)


def test_a_corrupted_store_file_is_not_served_but_quarantined(net: Net) -> None:
    cid = net.manifest.file_for_layer(1).cid
    url = f"{net.worker.url}/v1/shards/{cid}"

    async def get() -> tuple[int, bytes]:
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            return resp.status, await resp.read()

    status, body = run(get())
    assert status == 200 and len(body) == (net.store / cid).stat().st_size
    path = net.store / cid
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    status, _ = run(get())
    assert status == 404
    assert not path.exists()
    quarantined = net.store / ".quarantine" / cid
    assert quarantined.exists() and cid_of_file(quarantined) != cid
    assert run(asyncio.wait_for(get(), 10))[0] == 404  # still not served


_RAW_GARBAGE = [
    b"GET / HTTP/9.9\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello
    b"POST /v1/sessions HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    b"POST /v1/sessions HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
    b"POST /v1/sessions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n",
    b"GET /health HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n",
    b"GET /health HTTP/1.1\r\n" + b"X-H: 1\r\n" * 500 + b"\r\n",
    b"GET /\x00\xff HTTP/1.1\r\n\r\n",
    b"\r\n\r\n\r\n",
]


async def _send_raw(port: int, data: bytes) -> int:
    """Send raw bytes; the status the worker answers (0 when it just closes the connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 15)
        parts = line.split()
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    except (ConnectionError, TimeoutError):
        return 0
    finally:
        writer.close()


async def _fuzz(net: Net, seed: int, count: int) -> Counter[int]:
    rng = random.Random(seed)
    tickets = [
        ticket(net.owner.domain(), net.coordinator, net.worker.address, SPAN, job_id=rng.randrange(2**40))
        for _ in range(40)
    ]
    statuses: Counter[int] = Counter()
    async with WorkerClient(net.worker.url) as w:
        sessions = []
        for _ in range(4):
            sid = (
                await w.open_session(ticket(net.owner.domain(), net.coordinator, net.worker.address, SPAN))
            )["session_id"]
            sessions.append((sid, w.session_token(sid)))
        targets = FuzzTargets(tickets, sessions, hidden_size=64, vocab_size=256)
        limit = asyncio.Semaphore(16)
        connector = aiohttp.TCPConnector(limit=16)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=30)
        ) as http:

            async def send(req: FuzzRequest) -> None:
                async with limit:
                    try:
                        async with http.request(
                            req.method, net.worker.url + req.path, data=req.body, headers=req.headers
                        ) as resp:
                            await resp.read()
                            status = resp.status
                    except (aiohttp.ClientError, HttpProcessingError):
                        status = 0  # the worker answered 400 and closed before the client finished sending
                    statuses[status] += 1
                    if status >= 500:
                        raise AssertionError(f"{status} for {req.method} {req.path[:80]} {req.body[:80]!r}")

            await asyncio.gather(*(send(r) for r in hostile_requests(seed, count, targets)))
        for data in _RAW_GARBAGE * (1 + count // 1000):
            statuses[await _send_raw(net.worker.port, data)] += 1
    assert not [s for s in statuses if s >= 500], statuses
    return statuses


def test_five_thousand_hostile_requests_get_no_5xx_and_a_normal_session_is_served_after(net: Net) -> None:
    """The in-suite fuzz run (the soak below sends 100,000)."""
    t0 = time.monotonic()
    statuses = run(_fuzz(net, seed=11, count=5_000))
    elapsed = time.monotonic() - t0
    assert sum(statuses.values()) >= 5_000 and statuses[0] < 100, statuses  # nearly all answered
    assert {400, 401, 404, 409, 413, 422} <= set(statuses), statuses  # the generator reaches every check
    assert "internal error" not in net.worker.log()
    assert_still_serving(net)
    print(f"fuzz: {sum(statuses.values())} requests in {elapsed:.1f} s: {dict(sorted(statuses.items()))}")


@pytest.mark.soak
def test_soak_a_hundred_thousand_hostile_requests(net: Net) -> None:
    for seed in range(10):
        run(_fuzz(net, seed=1000 + seed, count=10_000))
    assert "internal error" not in net.worker.log()
    assert_still_serving(net)
