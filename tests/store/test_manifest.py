"""The manifest format: round trips, canonical bytes, checks of every field, loading by CID."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shardnet.errors import IntegrityError
from shardnet.span import LayerSpan
from shardnet.store.cid import cid_of_bytes
from shardnet.store.local import LocalStore
from shardnet.store.manifest import (
    Manifest,
    ManifestError,
    ShardFile,
    TokenizerFile,
    load_manifest,
    tokenizer_folder,
)
from tests.store.test_fetch import _publish


def _manifest(num_layers: int = 3, per_file: int = 1) -> Manifest:
    files = [ShardFile("embed.safetensors", "embed", 0, 0, cid_of_bytes(b"e"), 1)]
    for a in range(0, num_layers, per_file):
        b = min(a + per_file, num_layers)
        files.append(ShardFile(f"layer-{a:03d}.safetensors", "layer", a, b, cid_of_bytes(b"l%d" % a), 2))
    files.append(ShardFile("head.safetensors", "head", num_layers, num_layers, cid_of_bytes(b"h"), 3))
    return Manifest(
        name="m",
        family="llama",
        architecture="LlamaForCausalLM",
        kind="decoder",
        num_layers=num_layers,
        dtype="float32",
        config={"model_type": "llama", "id2label": {"0": "a"}},
        files=tuple(files),
    )


def test_round_trip_and_canonical_bytes() -> None:
    m = _manifest()
    data = m.to_json_bytes()
    assert Manifest.from_json(data) == m
    assert Manifest.from_json(data.decode()) == m
    assert data == json.dumps(json.loads(data), sort_keys=True, separators=(",", ":")).encode()
    assert m.cid == cid_of_bytes(data)
    assert json.loads(data)["format"] == "shardnet-manifest/1"
    assert set(json.loads(data)) == {
        "format",
        "name",
        "family",
        "architecture",
        "kind",
        "num_layers",
        "dtype",
        "config",
        "files",
        "tokenizer",
    }


def test_files_for_spans() -> None:
    m = _manifest(4)
    names = lambda span: [f.name for f in m.files_for(LayerSpan.parse(span))]  # noqa: E731
    assert names("0:1") == ["embed.safetensors", "layer-000.safetensors"]
    assert names("1:3") == ["layer-001.safetensors", "layer-002.safetensors"]
    assert names("3:4") == ["layer-003.safetensors", "head.safetensors"]
    assert len(names("0:4")) == 6
    assert m.file_for_layer(2).name == "layer-002.safetensors"
    with pytest.raises(ManifestError, match="outside model"):
        m.files_for(LayerSpan(2, 5))
    with pytest.raises(ManifestError, match="no file for layer 9"):
        m.file_for_layer(9)
    grouped = _manifest(5, per_file=2)  # files of two layers: a span takes every file it touches
    assert [f.name for f in grouped.files_for(LayerSpan(1, 3))] == [
        "layer-000.safetensors",
        "layer-002.safetensors",
    ]


def test_gaps_are_reported() -> None:
    m = _manifest(3)
    gappy = Manifest.from_json({**m.to_json(), "files": [f.to_json() for f in m.files if f.start != 1]})
    with pytest.raises(ManifestError, match=r"no file for layers \[1\]"):
        gappy.files_for(LayerSpan(0, 3))


@pytest.mark.parametrize(
    "change,match",
    [
        ({"format": "other/2"}, "format"),
        ({"name": ""}, "'name' must be a non-empty string"),
        ({"kind": "mixer"}, "kind 'mixer'"),
        ({"num_layers": 0}, "positive integer"),
        ({"num_layers": "3"}, "positive integer"),
        ({"config": []}, "'config' must be an object"),
        ({"files": []}, "non-empty list"),
    ],
)
def test_malformed_fields(change: dict, match: str) -> None:
    with pytest.raises(ManifestError, match=match):
        Manifest.from_json({**_manifest().to_json(), **change})


def test_malformed_files() -> None:
    base = _manifest().to_json()
    bad_part = [{**base["files"][0], "part": "blob"}]
    with pytest.raises(ManifestError, match="part 'blob'"):
        Manifest.from_json({**base, "files": bad_part})
    bad_cid = [{**base["files"][1], "cid": "../x"}]
    with pytest.raises(ManifestError, match="not a CID"):
        Manifest.from_json({**base, "files": bad_cid})
    outside = [{**base["files"][1], "start": 2, "end": 7}]
    with pytest.raises(ManifestError, match="outside 0..3"):
        Manifest.from_json({**base, "files": outside})
    with pytest.raises(ManifestError, match="bad tokenizer file name"):
        Manifest.from_json({**base, "tokenizer": [{"name": "../evil", "cid": cid_of_bytes(b"t"), "size": 1}]})
    with pytest.raises(ManifestError, match="not valid JSON"):
        Manifest.from_json(b"{")
    with pytest.raises(ManifestError, match="malformed"):
        Manifest.from_json({**base, "files": [{"name": "x", "part": "layer"}]})


def test_load_manifest_verifies_its_cid(tmp_path: Path) -> None:
    store = LocalStore(tmp_path).ensure()
    m = _manifest()
    cid = store.put_bytes(m.to_json_bytes())
    assert load_manifest(tmp_path, cid) == m
    with pytest.raises(ManifestError, match="not in the store"):
        load_manifest(tmp_path, cid_of_bytes(b"other"))
    with pytest.raises(ManifestError, match="not a CID"):
        load_manifest(tmp_path, "nope")
    path = store.path(cid)
    path.chmod(0o644)
    path.write_bytes(m.to_json_bytes().replace(b'"m"', b'"n"'))
    with pytest.raises(IntegrityError, match="corrupt"):
        load_manifest(tmp_path, cid)


def _model_with_tokenizer(root: Path) -> tuple[LocalStore, Manifest]:
    src, _, manifest, _ = _publish(root)
    return src, manifest


def test_a_corrupt_tokenizer_in_the_store_is_refused_not_loaded(tmp_path: Path) -> None:
    from shardnet.errors import IntegrityError

    store, manifest = _model_with_tokenizer(tmp_path / "store")
    tok: TokenizerFile = manifest.tokenizer[0]
    path = store.path(tok.cid)
    path.chmod(0o644)
    good = path.read_bytes()
    path.write_bytes(good.replace(b"tokenizer", b"tokenizeR"))  # same size, other bytes
    with pytest.raises(IntegrityError, match="tokenizer.json: the store's copy is corrupt"):
        tokenizer_folder(store.root, manifest)
    assert not (store.root / ".tokenizers" / manifest.cid / tok.name).exists()

    path.write_bytes(good)
    folder = tokenizer_folder(store.root, manifest)
    assert (folder / tok.name).read_bytes() == good
    (folder / tok.name).write_bytes(good.replace(b"model", b"MODEL"))  # the cached copy is tampered with
    assert (tokenizer_folder(store.root, manifest) / tok.name).read_bytes() == good


def test_worker_dtypes_restrict_workers_and_leave_other_manifests_cids_alone() -> None:
    plain = _manifest()
    assert "worker_dtypes" not in plain.to_json()  # manifests without it keep their bytes and CID
    assert plain.allowed_worker_dtypes() == ("float32", "float16", "bfloat16")
    plain.check_worker_dtype("bfloat16")
    strict = Manifest.from_json({**plain.to_json(), "worker_dtypes": ["float32", "float16"]})
    assert strict.worker_dtypes == ("float32", "float16") and strict.cid != plain.cid
    assert Manifest.from_json(strict.to_json_bytes()) == strict
    strict.check_worker_dtype("float16")
    with pytest.raises(ManifestError, match="allows workers in float32, float16 only.*--dtype float32"):
        strict.check_worker_dtype("bfloat16")
    with pytest.raises(ManifestError, match="worker_dtypes"):
        Manifest.from_json({**plain.to_json(), "worker_dtypes": ["int8"]})
