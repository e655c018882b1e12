"""A private model (issue 15 items 1 and 3): `shardnet model import --private` seals every file of an import;
an assigned worker gets the keys from the keyholder (checked on a real anvil registry), restores only its span's
files, and they are byte for byte (by CID) the public import's, so its block computes the same outputs."""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from shardnet.model.block import load_block
from shardnet.span import LayerSpan
from shardnet.store.private.keyholder import make_keyholder_routes, request_keys
from shardnet.store.private.model import restore_model
from shardnet.store.private.node import make_piece_routes
from tests.fixtures_chain import TEST_PARAMS
from tests.fixtures_store import serve_store
from tests.store.storage_nodes import run_cli


def _block_output(store: Path, manifest, span: LayerSpan) -> torch.Tensor:
    block = load_block(store, manifest.to_json(), span)
    session = block.new_session(max_length=16)
    return session.step(torch.tensor([[1, 5, 42, 7]]), 0)


def test_private_import_restores_the_public_files_for_an_assigned_worker_only(
    tmp_path: Path, tiny_llama_store, deployment, registry_for, accounts, monkeypatch
) -> None:
    public_store, public_cid, public_manifest = tiny_llama_store
    checkpoint = public_store.parent.parent / "hf"
    assert (checkpoint / "config.json").is_file(), checkpoint
    owner_store, keys_path = tmp_path / "owner", tmp_path / "model.keys.json"
    done = run_cli(
        "model", "import", str(checkpoint), "--private", "--name", "tiny-llama", "--store", str(owner_store),
        "--keys-out", str(keys_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    private_cid = done.stdout.strip().splitlines()[-1]
    assert f"model manifest {public_cid} sealed" in done.stdout  # the same import as the public one
    assert private_cid != public_cid

    from shardnet.store.private.keyfile import load_keys

    keys = load_keys(keys_path)
    assert keys.manifest_cid == private_cid
    monkeypatch.setenv("S15_OWNER_KEY", accounts[0].key.hex())
    dep_file = deployment.save(tmp_path / "deployment.json")
    register = ["model", "register", private_cid, "--price-wei", "1", "--name", "tiny-private"]
    register += ["--store", str(owner_store), "--deployment", str(dep_file), "--key-env", "S15_OWNER_KEY"]
    wrong = run_cli(*register, "--model-manifest", private_cid)  # not the model manifest sealed in it
    assert wrong.returncode == 1 and "format" in wrong.stderr, wrong.stderr
    done = run_cli(*register, "--model-manifest", public_cid)
    assert done.returncode == 0, done.stderr
    assert "4 layers" in done.stdout and f"manifest {private_cid}" in done.stdout
    model_id = int(done.stdout.split("registered model ")[1].split(":")[0])
    assert registry_for(None).get_model(model_id).manifest_cid == private_cid
    worker = accounts[4]
    registry_for(worker).register_node("http://127.0.0.1:1", TEST_PARAMS.min_stake)
    registry_for(worker).announce_shard(model_id, LayerSpan(0, 2))

    # the pieces live only on a storage node now (the owner's plaintext is not a source)
    piece_store = tmp_path / "storage-node"
    piece_store.mkdir()
    from shardnet.store.private.get import load_private_manifest

    private = load_private_manifest(private_cid, [str(owner_store)], owner_store)
    shutil.copy(owner_store / private_cid, piece_store / private_cid)
    for f in private.files:
        for p in f.pieces[:4]:
            shutil.copy(owner_store / p.cid, piece_store / p.cid)
    with (
        serve_store(piece_store, make_piece_routes(piece_store)) as node_url,
        serve_store(tmp_path, make_keyholder_routes(registry_for(None), keys, model_id)) as keyholder,
    ):
        worker_keys = request_keys(keyholder, bytes(worker.key), private_cid, model_id)
        worker_store = tmp_path / "worker"
        span = LayerSpan(0, 2)
        model_cid, model = restore_model(private_cid, worker_keys, span, worker_store, sources=[node_url])
    assert model_cid == public_cid
    held = {p.name for p in worker_store.iterdir() if p.is_file() and not p.name.startswith(".")}
    needed = set(public_manifest.cids_for(span))
    assert needed <= held
    other = {f.cid for f in public_manifest.files} - needed
    assert other and not other & held  # only the span's files were rebuilt
    assert torch.equal(
        _block_output(worker_store, model, span), _block_output(public_store, public_manifest, span)
    )
    # the worker serves its store (GET /v1/shards/{cid}) to anyone; the private manifest names every plaintext
    # file by its CID (and the model manifest's sha256 is its CID's digest): none of them may be served in the clear
    for store_dir in (worker_store, owner_store):
        with serve_store(store_dir) as url:
            for cid in sorted(needed | {model_cid}):
                with pytest.raises(urllib.error.HTTPError) as refused:
                    urllib.request.urlopen(f"{url}/v1/shards/{cid}", timeout=10)
                assert refused.value.code == 404, cid
            for p in private.files[0].pieces[:4]:  # ciphertext pieces still are
                with urllib.request.urlopen(f"{url}/v1/shards/{p.cid}", timeout=10) as answer:
                    assert len(answer.read()) == p.size
