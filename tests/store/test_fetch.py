"""Fetching a span's files from folders and real HTTP peers, with corrupt, truncated and lying peers."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web

from shardnet.errors import IntegrityError
from shardnet.span import LayerSpan
from shardnet.store.cid import cid_of_bytes
from shardnet.store.fetch import FetchError, ensure_file, fetch_files
from shardnet.store.http import PeerError, download, make_shard_routes
from shardnet.store.local import LocalStore
from shardnet.store.manifest import Manifest, ShardFile, TokenizerFile
from tests.fixtures_store import hostile_routes, serve_store

NUM_LAYERS = 4


def _publish(root: Path) -> tuple[LocalStore, str, Manifest, dict[str, bytes]]:
    """A synthetic published model: random bytes stand in for weights (fetching is content-blind)."""
    store = LocalStore(root).ensure()
    blobs: dict[str, bytes] = {}
    files = []
    parts = [("embed.safetensors", "embed", 0, 0)]
    parts += [(f"layer-{i:03d}.safetensors", "layer", i, i + 1) for i in range(NUM_LAYERS)]
    parts += [("head.safetensors", "head", NUM_LAYERS, NUM_LAYERS)]
    for name, part, start, end in parts:
        data = os.urandom(1000 + 10 * start) + name.encode()
        cid = store.put_bytes(data)
        blobs[name] = data
        files.append(ShardFile(name, part, start, end, cid, len(data)))
    tok = b'{"model": "tokenizer"}'
    blobs["tokenizer.json"] = tok
    manifest = Manifest(
        name="synthetic",
        family="llama",
        architecture="LlamaForCausalLM",
        kind="decoder",
        num_layers=NUM_LAYERS,
        dtype="float32",
        config={"model_type": "llama", "num_hidden_layers": NUM_LAYERS},
        files=tuple(files),
        tokenizer=(TokenizerFile("tokenizer.json", store.put_bytes(tok), len(tok)),),
    )
    mcid = store.put_bytes(manifest.to_json_bytes())
    return store, mcid, manifest, blobs


@pytest.fixture()
def published(tmp_path: Path) -> tuple[LocalStore, str, Manifest, dict[str, bytes]]:
    return _publish(tmp_path / "published")


def _names(store: LocalStore, manifest: Manifest) -> set[str]:
    by_cid = {f.cid: f.name for f in manifest.files} | {t.cid: t.name for t in manifest.tokenizer}
    return {by_cid.get(c, "manifest") for c in store.cids()}


@pytest.mark.parametrize(
    "span,expected",
    [
        ("0:2", {"embed.safetensors", "layer-000.safetensors", "layer-001.safetensors"}),
        ("1:3", {"layer-001.safetensors", "layer-002.safetensors"}),
        ("3:4", {"layer-003.safetensors", "head.safetensors"}),
        ("0:4", {"embed.safetensors", "head.safetensors"} | {f"layer-00{i}.safetensors" for i in range(4)}),
    ],
)
def test_fetch_from_folder_takes_exactly_the_span(
    published, tmp_path: Path, span: str, expected: set[str]
) -> None:
    src, mcid, manifest, blobs = published
    dest = LocalStore(tmp_path / "dest")
    got = fetch_files(mcid, LayerSpan.parse(span), src.root, dest.root, progress=False)
    assert got == manifest
    assert _names(dest, manifest) == expected | {"tokenizer.json", "manifest"}
    for f in manifest.files_for(LayerSpan.parse(span)):
        assert dest.path(f.cid).read_bytes() == blobs[f.name]


def test_fetch_over_http_and_refetch_is_a_no_op(published, tmp_path: Path) -> None:
    src, mcid, manifest, _ = published
    dest = LocalStore(tmp_path / "dest")
    with serve_store(src.root) as url:
        fetch_files(mcid, "2:4", url, dest.root, progress=False)
        first = {c: dest.path(c).stat().st_ino for c in dest.cids()}
        fetch_files(mcid, "2:4", [url], dest.root, progress=False)
    assert {c: dest.path(c).stat().st_ino for c in dest.cids()} == first
    assert _names(dest, manifest) == {
        "layer-002.safetensors",
        "layer-003.safetensors",
        "head.safetensors",
        "tokenizer.json",
        "manifest",
    }


def test_http_routes_answer_404_and_400(published) -> None:
    src, mcid, _, _ = published
    with serve_store(src.root) as url:
        with urllib.request.urlopen(f"{url}/v1/shards/{mcid}") as r:
            assert r.status == 200 and r.headers["Content-Type"] == "application/octet-stream"
            assert r.read() == src.path(mcid).read_bytes()
        for path, code in [
            (cid_of_bytes(b"absent"), 404),
            ("not-a-cid", 400),
            ("..%2F..%2Fetc%2Fpasswd", 400),
        ]:
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(f"{url}/v1/shards/{path}")
            assert err.value.code == code
            assert b'"error"' in err.value.read()


def _tampered(src: LocalStore, root: Path, name_cid: str, content: bytes) -> LocalStore:
    """A copy of ``src`` where the file stored under ``name_cid`` holds ``content`` instead."""
    bad = LocalStore(root).ensure()
    for cid in src.cids():
        (bad.root / cid).write_bytes(content if cid == name_cid else src.path(cid).read_bytes())
    return bad


@pytest.mark.parametrize("damage", ["corrupt", "truncated", "substituted", "longer"])
def test_bad_peer_is_refused_then_the_next_peer_is_used(published, tmp_path: Path, damage: str) -> None:
    src, mcid, manifest, blobs = published
    target = manifest.file_for_layer(1)
    good = blobs[target.name]
    content = {
        "corrupt": good[:500] + bytes([good[500] ^ 1]) + good[501:],
        "truncated": good[:-10],
        "substituted": blobs["layer-002.safetensors"],
        "longer": good + b"tail",
    }[damage]
    bad = _tampered(src, tmp_path / "bad", target.cid, content)
    dest = LocalStore(tmp_path / "dest")
    with serve_store(bad.root, routes=hostile_routes(bad.root)) as bad_url:
        with pytest.raises(IntegrityError, match="nothing was stored"):
            fetch_files(mcid, "1:2", bad_url, dest.root, progress=False)
        assert not dest.has(target.cid)
        assert not any(p.name.startswith(".tmp-") for p in dest.root.iterdir())
        with serve_store(src.root) as good_url:
            fetch_files(mcid, "1:2", [bad_url, "http://127.0.0.1:9", good_url], dest.root, progress=False)
    assert dest.path(target.cid).read_bytes() == good


def test_bad_folder_copy_is_refused(published, tmp_path: Path) -> None:
    src, mcid, manifest, blobs = published
    target = manifest.file_for_layer(0)
    bad = _tampered(src, tmp_path / "bad", target.cid, b"garbage")
    dest = tmp_path / "dest"
    with pytest.raises(IntegrityError, match="truncated"):
        fetch_files(mcid, "0:1", bad.root, dest, progress=False)
    assert not (dest / target.cid).exists()
    fetch_files(mcid, "0:1", [bad.root, src.root], dest, progress=False)
    assert (dest / target.cid).read_bytes() == blobs[target.name]


def test_corrupt_copy_already_in_the_store_is_replaced(published, tmp_path: Path) -> None:
    src, mcid, manifest, blobs = published
    dest = LocalStore(tmp_path / "dest")
    fetch_files(mcid, "3:4", src.root, dest.root, progress=False)
    head = manifest.part_file("head")
    assert head is not None
    path = dest.path(head.cid)
    os.chmod(path, 0o644)
    path.write_bytes(b"bitrot" + blobs[head.name][6:])
    fetch_files(mcid, "3:4", src.root, dest.root, progress=False)
    assert path.read_bytes() == blobs[head.name]


def test_missing_everywhere_is_a_fetch_error(published, tmp_path: Path) -> None:
    src, mcid, _, _ = published
    with serve_store(tmp_path / "empty") as url:
        with pytest.raises(FetchError, match="404"):
            fetch_files(mcid, "0:1", url, tmp_path / "dest", progress=False)
    with pytest.raises(FetchError, match="unreachable|cannot reach"):
        fetch_files(mcid, "0:1", "http://127.0.0.1:9", tmp_path / "dest", progress=False, timeout=2)
    with pytest.raises(FetchError, match="no source given"):
        fetch_files(mcid, "0:1", [], tmp_path / "dest")


def test_span_beyond_the_model_is_refused(published, tmp_path: Path) -> None:
    from shardnet.store.manifest import ManifestError

    src, mcid, _, _ = published
    with pytest.raises(ManifestError, match="outside model"):
        fetch_files(mcid, "2:6", src.root, tmp_path / "dest", progress=False)


def test_download_checks_and_lying_content_length(published, tmp_path: Path) -> None:
    src, mcid, _, _ = published
    real = src.path(mcid).read_bytes()

    async def liar(request: web.Request) -> web.Response:
        return web.Response(body=real[:-1])

    with serve_store(src.root, routes=[web.get("/v1/shards/{cid}", liar)]) as url:
        with pytest.raises(IntegrityError, match="corrupt or substituted"):
            download(url, mcid, LocalStore(tmp_path / "d"), progress=False)
    with serve_store(src.root, routes=make_shard_routes(src.root)) as url:
        path = download(url, mcid, LocalStore(tmp_path / "d"), expected_size=len(real), progress=False)
        assert path.read_bytes() == real
    with pytest.raises(PeerError):
        download("http://127.0.0.1:9", mcid, LocalStore(tmp_path / "d"), timeout=2, progress=False)


def test_peer_that_breaks_off_mid_body_is_skipped(published, tmp_path: Path) -> None:
    src, mcid, _, _ = published
    real = src.path(mcid).read_bytes()

    async def breaks_off(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(len(real))})
        await response.prepare(request)
        await response.write(real[: len(real) // 2])
        request.transport.close()  # the connection drops before the promised length
        return response

    dest = LocalStore(tmp_path / "d")
    with serve_store(src.root, routes=[web.get("/v1/shards/{cid}", breaks_off)]) as url:
        with pytest.raises(PeerError, match="broke off"):
            download(url, mcid, dest, progress=False)
        assert dest.cids() == []
        fetch_files(mcid, "0:1", [url, src.root], dest.root, progress=False)
    assert dest.path(mcid).read_bytes() == real


def test_manifest_that_is_not_a_manifest(tmp_path: Path) -> None:
    from shardnet.store.manifest import ManifestError

    src = LocalStore(tmp_path / "src").ensure()
    cid = src.put_bytes(b'{"format": "shardnet-manifest/1", "files": [1, 2]}')
    with pytest.raises(ManifestError):
        fetch_files(cid, "0:1", src.root, tmp_path / "dest", progress=False)


def test_a_source_that_is_neither_folder_nor_http_is_refused(tmp_path: Path) -> None:
    src, mcid, _, _ = _publish(tmp_path / "published")
    with pytest.raises(FetchError, match="neither a store folder nor an http"):
        fetch_files(mcid, "0:1", [src.root, "ftp://example.org"], tmp_path / "dest", progress=False)
    assert not (tmp_path / "dest" / mcid).exists()


def test_fetch_errors_name_the_file_not_just_its_cid(tmp_path: Path) -> None:
    src, mcid, manifest, _ = _publish(tmp_path / "published")
    partial = LocalStore(tmp_path / "partial").ensure()
    partial.put_bytes(src.path(mcid).read_bytes())  # the manifest, but no weights
    with pytest.raises(FetchError, match=r"could deliver embed\.safetensors \(bafk"):
        fetch_files(mcid, "0:1", partial.root, tmp_path / "dest", progress=False)


@pytest.mark.parametrize("kind", ["http", "folder"])
def test_fetch_progress_is_labelled_with_the_file_name(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, mcid, _, _ = _publish(tmp_path / "published")
    if kind == "http":
        with serve_store(src.root) as url:
            fetch_files(mcid, "1:2", url, tmp_path / "dest", progress=True)
    else:
        fetch_files(mcid, "1:2", src.root, tmp_path / "dest", progress=True)
    err = capsys.readouterr().err
    assert "layer-001.safetensors:" in err and "tokenizer.json:" in err, err


# -- ensure_file: the one-file verified fetch for callers that need a manifest or a tokenizer file (the
# coordinator), so that no caller has to trust a file just because the store has it


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
    with serve_store(liar.root, routes=hostile_routes(liar.root)) as url:
        with pytest.raises(IntegrityError, match="tokenizer.json"):
            ensure_file(tok.cid, url, tmp_path / "dest", label=tok.name)
    assert not (tmp_path / "dest" / tok.cid).exists()
    with pytest.raises(FetchError, match="not a CID"):
        ensure_file("../../etc/passwd", src.root, tmp_path / "dest")
