"""Keys go only where the chain says (issue 15 item 3): a keyholder on a real anvil registry wraps a private
model's file keys to a worker with a live shard of that model, and refuses a registered worker without one, a
stranger, a storage node, a worker that released its shard, and a request signed by someone else."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from shardnet.span import LayerSpan
from shardnet.store.private.codec import DecryptError
from shardnet.store.private.get import get_private
from shardnet.store.private.keyfile import FileKeys
from shardnet.store.private.keyholder import (
    KEYS_PATH,
    AnnouncedShards,
    make_keyholder_routes,
    refusal,
    request_keys,
)
from shardnet.store.private.put import put_private
from shardnet.store.private.wrap import KeyAccessError, public_key_of, sign_request, unwrap_keys, wrap_keys
from tests.fixtures_chain import TEST_PARAMS
from tests.fixtures_store import serve_store


def _key(account) -> bytes:
    return bytes(account.key)


def test_only_a_worker_with_a_live_shard_gets_the_keys(
    tmp_path: Path, deployment, registry_for, accounts
) -> None:
    owner, assigned, unassigned, storage, stranger = (
        accounts[0],
        accounts[4],
        accounts[5],
        accounts[6],
        accounts[7],
    )
    src = tmp_path / "private-model"
    src.mkdir()
    (src / "layers.bin").write_bytes(os.urandom(400_000))
    (src / "config.json").write_bytes(b'{"secret": true}')
    manifest, keys = put_private(src, tmp_path / "owner", n=6, k=4)
    gov = registry_for(owner)
    model_id = int(
        gov.register_model("private", keys.manifest_cid, 4, 1).event("ModelRegistered").args["modelId"]
    )
    other_model = int(
        gov.register_model("public", "bafkreitiny", 4, 1).event("ModelRegistered").args["modelId"]
    )
    for node in (assigned, unassigned, storage):
        registry_for(node).register_node("http://127.0.0.1:1", TEST_PARAMS.min_stake)
    shard = int(
        registry_for(assigned)
        .announce_shard(model_id, LayerSpan(0, 4))
        .event("ShardAnnounced")
        .args["assignmentId"]
    )
    registry_for(unassigned).announce_shard(other_model, LayerSpan(0, 4))  # serves another model only

    with pytest.raises(KeyAccessError, match="registered with manifest bafkreitiny"):
        make_keyholder_routes(registry_for(None), keys, other_model)
    routes = make_keyholder_routes(registry_for(None), keys, model_id)
    with serve_store(tmp_path, routes) as url:
        got = request_keys(url, _key(assigned), keys.manifest_cid, model_id)
        assert got.keys == keys.keys
        _, written = get_private(keys.manifest_cid, got, tmp_path / "worker-out", tmp_path / "owner")
        assert {p.name: p.read_bytes() for p in written} == {
            "config.json": (src / "config.json").read_bytes(),
            "layers.bin": (src / "layers.bin").read_bytes(),
        }

        for who, reason in (
            (unassigned, "has no live shard of model"),
            (storage, "has no live shard of model"),
            (stranger, "is not a registered node"),
        ):
            with pytest.raises(KeyAccessError, match=reason):
                request_keys(url, _key(who), keys.manifest_cid, model_id)

        # a stranger signing a request in the assigned worker's name: the signature names the stranger
        forged = replace(sign_request(_key(stranger), keys.manifest_cid, model_id), address=assigned.address)
        with pytest.raises(KeyAccessError, match="signed by"):
            public_key_of(forged)
        import json
        import urllib.error
        import urllib.request

        req = urllib.request.Request(
            url + KEYS_PATH, data=json.dumps(forged.to_json()).encode(), method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert refused.value.code == 403

        registry_for(assigned).release_shard(shard)
        with pytest.raises(KeyAccessError, match="has no live shard"):
            request_keys(url, _key(assigned), keys.manifest_cid, model_id)


def test_keys_wrapped_to_one_worker_open_for_no_one_else(tmp_path: Path, accounts) -> None:
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(50_000))
    _, keys = put_private(src, tmp_path / "store", n=6, k=4)
    request = sign_request(_key(accounts[4]), keys.manifest_cid, 1)
    envelope = wrap_keys(keys, public_key_of(request), accounts[4].address)
    assert unwrap_keys(envelope, _key(accounts[4])).keys == keys.keys
    for other in (accounts[5], accounts[6]):
        with pytest.raises(KeyAccessError, match="not wrapped to this key"):
            unwrap_keys(envelope, _key(other))
    # a storage node holds every piece but no key: a guessed key fails authentication, nothing is written
    guess = FileKeys(keys.manifest_cid, {"f.bin": os.urandom(32)})
    with pytest.raises(DecryptError):
        get_private(keys.manifest_cid, guess, tmp_path / "out", tmp_path / "store")
    assert not (tmp_path / "out" / "f.bin").exists()


def test_a_worker_that_cannot_get_the_keys_releases_the_shard_it_announced(
    tmp_path: Path, deployment, registry_for, accounts
) -> None:
    from worker.config import WorkerConfig
    from worker.private_model import restore_private_span

    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(10_000))
    _, keys = put_private(src, tmp_path / "owner", n=6, k=4)
    model_id = int(
        registry_for(accounts[0])
        .register_model("private", keys.manifest_cid, 4, 1)
        .event("ModelRegistered")
        .args["modelId"]
    )
    worker = registry_for(accounts[4])
    cfg = WorkerConfig(
        store_dir=tmp_path / "w", keyholder="http://127.0.0.1:9", port=18999, stake_wei=TEST_PARAMS.min_stake
    )
    model = worker.get_model(model_id)
    with pytest.raises(KeyAccessError, match="cannot reach keyholder"):
        restore_private_span(cfg, worker, model, LayerSpan(0, 4), [])
    assert worker.get_node(accounts[4].address).registered
    assert worker.live_assignments(model_id) == []  # announced, then released
    assert worker.assignment_count() >= 1


def test_announced_shards_are_read_from_the_last_block_read_on(deployment, registry_for, accounts) -> None:
    """The keyholder reads ShardAnnounced incrementally, not from the deploy block on every request."""
    worker = accounts[4]
    model_id = int(
        registry_for(accounts[0])
        .register_model("private", "bafkreitiny", 4, 1)
        .event("ModelRegistered")
        .args["modelId"]
    )
    registry_for(worker).register_node("http://127.0.0.1:1", TEST_PARAMS.min_stake)
    reader = registry_for(None)
    ranges: list[tuple[int, int]] = []
    real_get_logs = reader.get_logs

    def recording_get_logs(start, end, names):  # the real chain read, its range recorded
        ranges.append((start, end))
        return real_get_logs(start, end, names)

    reader.get_logs = recording_get_logs
    shards = AnnouncedShards(reader)
    assert refusal(reader, worker.address, model_id, shards) is not None  # no shard yet
    first_end = ranges[-1][1]
    shard = int(
        registry_for(worker)
        .announce_shard(model_id, LayerSpan(0, 4))
        .event("ShardAnnounced")
        .args["assignmentId"]
    )
    assert refusal(reader, worker.address, model_id, shards) is None
    assert shards.assignments(model_id, worker.address.lower()) == [shard]
    assert ranges[0][0] == reader.deploy_block and ranges[1][0] == first_end + 1  # only the new blocks
