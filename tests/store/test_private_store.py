"""Private store end to end with real storage-node processes: `shardnet store put --encrypt` places n=6 pieces
on 6 nodes; `shardnet store get` rebuilds the file bit-exact with two nodes killed or corrupt, and names what is
missing when three are gone."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardnet.store.private.manifest import PrivateManifest
from tests.store.storage_nodes import StorageNode, hostile_node, run_cli, start_nodes


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[StorageNode]]:
    started = start_nodes(tmp_path / "nodes", 6)
    yield started
    for node in started:
        node.kill()


def _put(tmp_path: Path, nodes: list[StorageNode], payload: Path) -> tuple[str, Path, PrivateManifest]:
    keys = tmp_path / "owner.keys.json"
    args = ["store", "put", str(payload), "--encrypt", "--n", "6", "--k", "4", "--keys-out", str(keys)]
    args += ["--store", str(tmp_path / "owner-store")]
    for node in nodes:
        args += ["--node", node.url]
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    cid = done.stdout.strip().splitlines()[-1]
    manifest = PrivateManifest.from_json((tmp_path / "owner-store" / cid).read_bytes())
    return cid, keys, manifest


def _get(tmp_path: Path, cid: str, keys: Path, source: str, out: str = "out"):
    return run_cli(
        "store", "get", cid, "--keys", str(keys), "--out", str(tmp_path / out),
        "--from", source, "--store", str(tmp_path / f"{out}-store"), "--timeout", "5",
    )  # fmt: skip


def test_two_nodes_killed_or_corrupt_still_bit_exact_three_gone_named(
    tmp_path: Path, nodes: list[StorageNode]
) -> None:
    payload = tmp_path / "data"
    payload.mkdir()
    (payload / "weights.bin").write_bytes(os.urandom(5_000_000))
    (payload / "sub").mkdir()
    (payload / "sub" / "notes.txt").write_bytes(b"private notes\n" * 100)
    cid, keys, manifest = _put(tmp_path, nodes, payload)
    assert (
        b'"key' not in (tmp_path / "owner-store" / cid).read_bytes().lower()
    )  # the manifest never holds a key
    for f in manifest.files:
        holders = [p.holders[0] for p in f.pieces]
        assert holders == [n.url for n in nodes]  # piece j on node j: six distinct nodes
        for p, node in zip(f.pieces, nodes, strict=True):
            assert (node.store / p.cid).is_file()
            assert (
                sum(1 for q in f.pieces if (node.store / q.cid).is_file()) == 1
            )  # no node holds two pieces of a file

    # node 0 killed; node 1 replaced by a lying node on the same address that serves corrupted bytes for every
    # piece it holds without checking them (an honest node would quarantine them)
    nodes[0].kill()
    nodes[1].kill()
    for f in manifest.files:
        path = nodes[1].store / f.pieces[1].cid
        path.chmod(0o644)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    with hostile_node(nodes[1].store, nodes[1].port):
        done = _get(tmp_path, cid, keys, nodes[2].url)
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "out" / "weights.bin").read_bytes() == (payload / "weights.bin").read_bytes()
        notes = (tmp_path / "out" / "sub" / "notes.txt").read_bytes()
        assert notes == (payload / "sub" / "notes.txt").read_bytes()

        nodes[2].kill()  # three of six gone: the lying node must now be tried, and is refused
        done = _get(tmp_path, cid, keys, nodes[3].url, out="out2")
    assert done.returncode == 1
    assert "only 3 of the 4 pieces needed" in done.stderr
    assert "corrupt or substituted" in done.stderr  # what the lying node sent
    first = manifest.files[0]  # files are restored in name order; the first one already fails
    for i in (0, 1, 2):
        assert f"piece {i} ({first.pieces[i].cid})" in done.stderr
    assert nodes[0].url in done.stderr and nodes[2].url in done.stderr
    assert not (tmp_path / "out2" / "weights.bin").exists()
    assert not [p for p in (tmp_path / "out2").rglob("*") if p.is_file()]  # nothing partial written


def test_wrong_key_refused_and_nothing_written(tmp_path: Path, nodes: list[StorageNode]) -> None:
    payload = tmp_path / "secret.bin"
    payload.write_bytes(os.urandom(1_500_000))
    cid, keys, _ = _put(tmp_path, nodes, payload)
    text = keys.read_text()
    import json

    body = json.loads(text)
    body["keys"]["secret.bin"] = os.urandom(32).hex()
    wrong = tmp_path / "wrong.keys.json"
    wrong.write_text(json.dumps(body))
    done = _get(tmp_path, cid, wrong, nodes[0].url)
    assert done.returncode == 1
    assert "failed authentication" in done.stderr and "not this file's key" in done.stderr
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def test_registered_only_places_pieces_only_on_registered_nodes(
    tmp_path: Path, nodes: list[StorageNode], deployment, registry_for, accounts
) -> None:
    from tests.fixtures_chain import TEST_PARAMS

    dep_file = deployment.save(tmp_path / "deployment.json")
    for account, node in zip(accounts[2:7], nodes[:5], strict=True):  # the sixth node is not registered
        registry_for(account).register_node(node.url, TEST_PARAMS.min_stake)
    payload = tmp_path / "f.bin"
    payload.write_bytes(os.urandom(100_000))
    args = ["store", "put", str(payload), "--encrypt", "--registered-only", "--deployment", str(dep_file)]
    args += ["--store", str(tmp_path / "owner"), "--keys-out", str(tmp_path / "k.json")]
    for node in nodes:
        args += ["--node", node.url]
    refused = run_cli(*args)
    assert refused.returncode == 1
    assert (
        f"storage nodes {nodes[5].url} are not the endpoint of a registered, unjailed node" in refused.stderr
    )
    assert not any(p.is_file() for p in nodes[0].store.iterdir())  # nothing placed
    registry_for(accounts[7]).register_node(nodes[5].url, TEST_PARAMS.min_stake)
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    assert f"node {nodes[5].url}: registered as {accounts[7].address}" in done.stdout
