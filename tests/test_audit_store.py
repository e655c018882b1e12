"""Audit of issue 3: `ensure_file`, the one-file verified fetch for callers that need a manifest or a
tokenizer file (the coordinator), so that no caller has to trust a file just because the store has it."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardnet.errors import IntegrityError
from shardnet.store.fetch import FetchError, ensure_file
from shardnet.store.local import LocalStore
from tests.fixtures_store import serve_store
from tests.store.test_fetch import _publish


def test_a_verified_stored_copy_needs_no_source(tmp_path: Path) -> None:
    src, mcid, manifest, blobs = _publish(tmp_path / "published")
    tok = manifest.tokenizer[0]
    assert ensure_file(tok.cid, [], src.root, size=tok.size, label=tok.name).read_bytes() == blobs[tok.name]


def test_a_corrupt_stored_copy_is_never_returned(tmp_path: Path) -> None:
    src, _, manifest, blobs = _publish(tmp_path / "published")
    tok = manifest.tokenizer[0]
    dest = LocalStore(tmp_path / "dest").ensure()
    dest.put_bytes(blobs[tok.name])
    path = dest.path(tok.cid)
    path.chmod(0o644)
    path.write_bytes(blobs[tok.name].upper())  # same size, other content
    with pytest.raises(FetchError, match=r"tokenizer.json .* its copy is corrupt"):
        ensure_file(tok.cid, [], dest.root, size=tok.size, label=tok.name)
    with serve_store(src.root) as url:
        got = ensure_file(tok.cid, url, dest.root, size=tok.size, label=tok.name)
    assert got == path and path.read_bytes() == blobs[tok.name]


def test_a_substituted_file_from_a_peer_is_refused(tmp_path: Path) -> None:
    src, mcid, manifest, blobs = _publish(tmp_path / "published")
    tok = manifest.tokenizer[0]
    liar = LocalStore(tmp_path / "liar").ensure()
    (liar.root / tok.cid).write_bytes(blobs["layer-000.safetensors"])
    with serve_store(liar.root) as url:
        with pytest.raises(IntegrityError, match="tokenizer.json"):
            ensure_file(tok.cid, url, tmp_path / "dest", label=tok.name)
    assert not (tmp_path / "dest" / tok.cid).exists()
    with pytest.raises(FetchError, match="not a CID"):
        ensure_file("../../etc/passwd", src.root, tmp_path / "dest")
