"""Sealing and opening private files in process: round trips at chunk boundaries, any k of n pieces, Merkle
proofs, and bad input (wrong key, truncated or substituted piece, manifest disagreeing with its pieces)."""

from __future__ import annotations

import io
import itertools
import json
import os
from pathlib import Path

import pytest

from shardnet.errors import IntegrityError
from shardnet.store.http import download
from shardnet.store.local import LocalStore
from shardnet.store.manifest import ManifestError
from shardnet.store.private.codec import CHUNK_SIZE, DecryptError, open_pieces, piece_size, seal_file
from shardnet.store.private.get import restore_file
from shardnet.store.private.manifest import PrivateFile, PrivateManifest
from shardnet.store.private.merkle import leaf_hashes, merkle_proof, merkle_root, verify_proof
from shardnet.store.private.put import put_private
from tests.fixtures_store import hostile_routes, serve_store


def _seal(tmp_path: Path, data: bytes, n: int = 6, k: int = 4):
    src = tmp_path / "plain.bin"
    src.write_bytes(data)
    store = LocalStore(tmp_path / "store")
    sealed, key = seal_file(src, store, n, k)
    return store, sealed, key


def _open(store: LocalStore, sealed, key: bytes, indices) -> bytes:
    out = io.BytesIO()
    handles = {i: open(store.root / sealed.pieces[i].cid, "rb") for i in indices}
    try:
        open_pieces(sealed.size, sealed.sha256, sealed.k, sealed.n, handles, key, out)
    finally:
        for h in handles.values():
            h.close()
    return out.getvalue()


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 17, 2 * CHUNK_SIZE + 5])
def test_round_trip_at_chunk_boundaries(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    store, sealed, key = _seal(tmp_path, data)
    assert all(p.size == piece_size(size, 4) for p in sealed.pieces)
    assert all(merkle_root(leaf_hashes(store.root / p.cid)) == p.merkle_root for p in sealed.pieces)
    assert _open(store, sealed, key, [5, 0, 3, 2]) == data


def test_any_k_of_n_rebuild(tmp_path: Path) -> None:
    data = os.urandom(CHUNK_SIZE + 1000)
    store, sealed, key = _seal(tmp_path, data, n=5, k=3)
    for combo in itertools.combinations(range(5), 3):
        assert _open(store, sealed, key, combo) == data


def test_no_piece_holds_the_plaintext(tmp_path: Path) -> None:
    data = b"the secret weights " * 60000
    store, sealed, _ = _seal(tmp_path, data)
    for p in sealed.pieces:
        assert b"the secret weights" not in (store.root / p.cid).read_bytes()


def test_wrong_key_is_refused(tmp_path: Path) -> None:
    store, sealed, _ = _seal(tmp_path, os.urandom(5000))
    with pytest.raises(DecryptError, match="not this file's key"):
        _open(store, sealed, os.urandom(32), [0, 1, 2, 3])


def test_truncated_piece_is_refused(tmp_path: Path) -> None:
    store, sealed, key = _seal(tmp_path, os.urandom(CHUNK_SIZE + 10))
    short = tmp_path / "short"
    short.write_bytes((store.root / sealed.pieces[0].cid).read_bytes()[:-3])
    out = io.BytesIO()
    handles = {0: open(short, "rb"), **{i: open(store.root / sealed.pieces[i].cid, "rb") for i in (1, 2, 3)}}
    with pytest.raises(IntegrityError, match="piece 0 is truncated"):
        open_pieces(sealed.size, sealed.sha256, 4, 6, handles, key, out)
    for h in handles.values():
        h.close()


def test_altered_piece_fails_authentication_and_leaves_no_file(tmp_path: Path) -> None:
    store, sealed, key = _seal(tmp_path, os.urandom(3000))
    entry = PrivateFile.from_sealed("f.bin", sealed, {})
    bad = tmp_path / "bad"
    data = bytearray((store.root / sealed.pieces[1].cid).read_bytes())
    data[0] ^= 1
    bad.write_bytes(bytes(data))
    paths = {
        0: store.root / sealed.pieces[0].cid,
        1: bad,
        2: store.root / sealed.pieces[2].cid,
        3: store.root / sealed.pieces[3].cid,
    }
    with pytest.raises(DecryptError):
        restore_file(entry, paths, key, tmp_path / "out" / "f.bin")
    assert list((tmp_path / "out").iterdir()) == []  # no partial file, no temporary left


def test_manifest_disagreeing_with_its_pieces_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(10_000))
    manifest, _ = put_private(src, tmp_path / "store", n=6, k=4)
    body = manifest.to_json()
    body["files"][0]["size"] = 20_000  # pieces of a 10 kB file listed for a 20 kB one
    with pytest.raises(ManifestError, match="disagrees with its pieces"):
        PrivateManifest.from_json(json.dumps(body))
    body = manifest.to_json()
    body["files"][0]["pieces"] = body["files"][0]["pieces"][:5]
    with pytest.raises(ManifestError, match="exactly indices 0..5"):
        PrivateManifest.from_json(json.dumps(body))
    body = manifest.to_json()
    body["files"][0]["name"] = "../escape"
    with pytest.raises(ManifestError, match="without '..'"):
        PrivateManifest.from_json(json.dumps(body))
    assert "key" not in json.dumps(manifest.to_json()).lower()


def test_piece_served_under_a_wrong_cid_is_refused(tmp_path: Path) -> None:
    store, sealed, _ = _seal(tmp_path, os.urandom(4000))
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    # the hostile peer answers piece 0's CID with piece 1's bytes
    (hostile / sealed.pieces[0].cid).write_bytes((store.root / sealed.pieces[1].cid).read_bytes())
    reader = LocalStore(tmp_path / "reader")
    with (
        serve_store(hostile, hostile_routes(hostile)) as url,
        pytest.raises(IntegrityError, match="corrupt or substituted"),
    ):
        download(url, sealed.pieces[0].cid, reader, expected_size=sealed.pieces[0].size, progress=False)
    assert reader.cids() == []  # nothing stored
    assert [p.name for p in reader.root.iterdir()] == []  # no temporary left either


def test_merkle_proofs_verify_and_catch_a_wrong_segment(tmp_path: Path) -> None:
    for size in (1, 1024, 5000, 1024 * 7 + 3):
        path = tmp_path / f"p{size}"
        path.write_bytes(os.urandom(size))
        leaves = leaf_hashes(path)
        root = merkle_root(leaves)
        data = path.read_bytes()
        for i in range(len(leaves)):
            segment = data[i * 1024 : (i + 1) * 1024]
            proof = merkle_proof(leaves, i)
            assert verify_proof(segment, i, len(leaves), proof, root)
            assert not verify_proof(segment + b"x", i, len(leaves), proof, root)
            if len(leaves) > 1:
                assert not verify_proof(segment, (i + 1) % len(leaves), len(leaves), proof, root)
