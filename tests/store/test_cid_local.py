"""CIDs and the local content-addressed store."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from multiformats import CID

from shardnet.errors import IntegrityError
from shardnet.store.cid import cid_of_bytes, cid_of_file, is_cid, parse_cid, verify_cid
from shardnet.store.local import LocalStore


def test_cid_is_v1_raw_sha256_base32() -> None:
    data = b"hello shardnet"
    cid = cid_of_bytes(data)
    assert cid.startswith("bafkrei")
    decoded = CID.decode(cid)
    assert decoded.version == 1 and decoded.codec.name == "raw" and decoded.hashfun.name == "sha2-256"
    assert decoded.raw_digest == hashlib.sha256(data).digest()
    # the well-known IPFS CID of b"hello" as a raw block
    assert cid_of_bytes(b"hello") == "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"


def test_cid_of_file_streams_the_same(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)  # more than one read chunk
    path = tmp_path / "f"
    path.write_bytes(data)
    assert cid_of_file(path) == cid_of_bytes(data)
    verify_cid(path, cid_of_bytes(data))
    with pytest.raises(IntegrityError, match="does not match its CID"):
        verify_cid(data[:-1], cid_of_bytes(data))


def test_parse_cid_refuses_other_kinds() -> None:
    good = cid_of_bytes(b"x")
    assert parse_cid(good) == good
    assert parse_cid(str(CID.decode(good).set(base="base58btc"))) == good  # canonical base32 back
    for bad in [
        "",
        "../etc/passwd",
        "bafkreinotacid",
        "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
        "x" * 300,
    ]:
        assert not is_cid(bad)
    dag_pb = str(CID("base32", 1, "dag-pb", CID.decode(good).digest))
    with pytest.raises(ValueError, match="shardnet uses CIDv1, raw codec, sha2-256"):
        parse_cid(dag_pb)


def test_put_bytes_and_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    assert store.cids() == [] and not store.has(cid_of_bytes(b"a"))
    cid = store.put_bytes(b"alpha")
    assert store.has(cid) and cid in store and store.path(cid).read_bytes() == b"alpha"
    src = tmp_path / "src.bin"
    src.write_bytes(b"beta" * 1000)
    cid2 = store.put_file(src, expected_cid=cid_of_bytes(b"beta" * 1000))
    assert store.path(cid2).read_bytes() == src.read_bytes()
    assert store.cids() == sorted([cid, cid2])
    assert not any(p.name.startswith(".tmp-") for p in store.root.iterdir())
    assert store.path(cid).stat().st_mode & 0o222 == 0  # stored read-only


def test_put_refuses_mismatch_and_leaves_nothing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    with pytest.raises(IntegrityError, match="corrupt or substituted"):
        store.put_bytes(b"evil", expected_cid=cid_of_bytes(b"good"))
    src = tmp_path / "s"
    src.write_bytes(b"short")
    with pytest.raises(IntegrityError, match="truncated"):
        with open(src, "rb") as f:
            store.put_stream(f, expected_cid=cid_of_bytes(b"shorter"), expected_size=7)
    assert list(store.root.iterdir()) == []


def test_existing_file_is_never_rewritten(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    cid = store.put_bytes(b"weights")
    before = store.path(cid).stat()
    assert store.put_bytes(b"weights") == cid
    after = store.path(cid).stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_path_refuses_malformed_cids(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(ValueError, match="not a CID"):
        store.path("../../secret")
    assert not store.has("../../secret")
