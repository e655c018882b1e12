"""Attack review of the private store (issue 15): a dripping node, a hostile manifest, a stranger filling a node's
disk, and bad command-line input. Real HTTP servers and real `shardnet` processes; nothing mocked."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web

from shardnet.store.cid import cid_of_bytes
from shardnet.store.http import PeerError, download
from shardnet.store.local import LocalStore
from shardnet.store.manifest import ManifestError
from shardnet.store.private.codec import seal_file
from shardnet.store.private.manifest import PrivateFile, PrivateManifest
from tests.fixtures_store import serve_store
from tests.store.storage_nodes import SHARDNET, StorageNode


def _drip_routes(data: bytes, step: int = 64, pause: float = 0.2) -> list[web.RouteDef]:
    """A node that announces the whole body, then sends it `step` bytes at a time every `pause` s."""

    async def drip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(len(data))})
        await response.prepare(request)
        for i in range(0, len(data), step):
            await response.write(data[i : i + step])
            await asyncio.sleep(pause)
        return response

    return [web.get("/v1/shards/{cid}", drip)]


def test_a_dripping_node_is_given_up_in_bounded_time(tmp_path: Path) -> None:
    data = os.urandom(
        256 << 10
    )  # at 320 B/s this would take 14 minutes; each read comes well within the timeout
    cid = cid_of_bytes(data)
    store = LocalStore(tmp_path / "store").ensure()
    with serve_store(tmp_path, _drip_routes(data)) as url:
        started = time.monotonic()
        with pytest.raises(PeerError, match="slower than"):
            download(url, cid, store, expected_size=len(data), timeout=2.0, progress=False)
        assert time.monotonic() - started < 15
    assert not store.has(cid) and not [p for p in store.root.iterdir() if p.name.startswith(".tmp-")]


def test_a_manifest_with_a_huge_size_is_refused_at_once(tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(5000))
    sealed, _ = seal_file(src, LocalStore(tmp_path / "s"), 3, 2)
    good = PrivateManifest("x", (PrivateFile.from_sealed("f.bin", sealed, {}),)).to_json()
    PrivateManifest.from_json(good)  # the honest one parses
    hostile = json.loads(json.dumps(good))
    hostile["files"][0]["size"] = 10**18  # would be ~10^12 chunks to list before any check
    started = time.monotonic()
    with pytest.raises(ManifestError, match="size must be within"):
        PrivateManifest.from_json(hostile)
    assert time.monotonic() - started < 2


def _put(url: str, data: bytes) -> int:
    request = urllib.request.Request(f"{url}/v1/pieces/{cid_of_bytes(data)}", data=data, method="PUT")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_a_stranger_cannot_fill_a_storage_nodes_disk(tmp_path: Path) -> None:
    store = tmp_path / "node" / "store"
    store.mkdir(parents=True)
    node = StorageNode(store)
    log = open(tmp_path / "node.log", "wb")  # noqa: SIM115
    node.proc = subprocess.Popen(
        [SHARDNET, "store", "serve", "--store", str(store), "--port", str(node.port), "--max-store-mb", "1"],
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(node.url + "/health", timeout=2).close()
                break
            except OSError:
                assert node.proc.poll() is None and time.monotonic() < deadline, (
                    tmp_path / "node.log"
                ).read_text()
                time.sleep(0.2)
        first, second = os.urandom(700 << 10), os.urandom(700 << 10)
        assert _put(node.url, first) == 200
        assert _put(node.url, second) == 507  # the quota counts what is held
        held = {p.name for p in store.iterdir() if p.is_file()}
        assert held == {cid_of_bytes(first)}  # nothing of the refused one, not even a temporary file
        assert _put(node.url, os.urandom(100 << 10)) == 200  # within the quota: still served
    finally:
        node.kill()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("store", "serve", "--port", "99999"), "not a TCP port"),
        (("store", "serve", "--port", "0", "--max-piece-mb", "-5"), "at least 1"),
        (("store", "serve", "--port", "0", "--max-store-mb", "0"), "at least 1"),
        (
            ("store", "get", "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy", "--keyholder",
             "http://127.0.0.1:1", "--model-id", "1", "--key-env", "R15_BAD_KEY", "--out", "o"),
            "not a hex private key",
        ),
    ],
)  # fmt: skip
def test_bad_command_line_input_is_a_sentence_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], expected: str
) -> None:
    monkeypatch.setenv("R15_BAD_KEY", "zz-not-hex")
    # a command that should refuse at once but serves instead is stopped after 60 s (and fails)
    done = subprocess.run(
        [SHARDNET, *args, "--store", str(tmp_path / "s")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert expected in done.stderr and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("name", [".", "./a", "a/./b", "a/", "a//b", "a\x00b", "../a", "/etc/x"])
def test_a_manifest_file_name_that_is_not_a_plain_relative_path_is_refused(tmp_path: Path, name: str) -> None:
    src = tmp_path / "f.bin"
    src.write_bytes(b"x" * 100)
    sealed, _ = seal_file(src, LocalStore(tmp_path / "s"), 2, 1)
    hostile = PrivateManifest("x", (PrivateFile.from_sealed(name, sealed, {}),)).to_json()
    with pytest.raises(ManifestError, match="relative path"):  # '.' would write over the --out folder itself
        PrivateManifest.from_json(hostile)


def test_a_keyholder_answers_json_bombs_and_garbage_with_4xx_and_keeps_serving(
    tmp_path: Path, deployment, registry_for, accounts
) -> None:
    """A key request nested 30,000 deep reached json.loads: RecursionError, 500. Size and depth are checked first."""
    from shardnet.store.private.keyholder import KEYS_PATH, make_keyholder_routes
    from shardnet.store.private.put import put_private

    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(10_000))
    _, keys = put_private(src, tmp_path / "owner", n=6, k=4)
    registered = registry_for(accounts[0]).register_model("private-bomb", keys.manifest_cid, 4, 1)
    model_id = int(registered.event("ModelRegistered").args["modelId"])
    bodies = [
        b"[" * 30_000 + b"]" * 30_000,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b"[" * 60_000,
        b'{"manifest": NaN}',
        b"\xff\xfe",
        b"",
        b'"\\ud800"',
        json.dumps(
            {"manifest": keys.manifest_cid, "model_id": 10**400, "address": 1, "expires": [], "signature": {}}
        ).encode(),
        b"[1, 2]",
        b'"' + b"a" * 100_000 + b'"',
    ]
    with serve_store(tmp_path, make_keyholder_routes(registry_for(None), keys, model_id)) as url:
        for body in bodies:
            req = urllib.request.Request(url + KEYS_PATH, data=body, method="POST")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(req, timeout=10)
            assert 400 <= refused.value.code < 500, (refused.value.code, body[:40])
        with pytest.raises(
            urllib.error.HTTPError
        ) as refused:  # still serving: a stranger's request is judged
            from shardnet.store.private.wrap import sign_request

            signed = sign_request(bytes(accounts[7].key), keys.manifest_cid, model_id)
            req = urllib.request.Request(
                url + KEYS_PATH, data=json.dumps(signed.to_json()).encode(), method="POST"
            )
            urllib.request.urlopen(req, timeout=10)
        assert refused.value.code == 403 and b"not a registered node" in refused.value.read()
