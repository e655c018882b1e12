"""The price of a fine-tuning backward position comes from the model's manifest (issue 16): the optional field
`backward_factor` (absent: 2, and a manifest without it keeps its CID); a real `worker run` process of a model
whose manifest says 3 bills forward + 3 x backward positions and says so in the close answer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import torch

from shardnet.chain.registry import Registry
from shardnet.finetune.spans import RemoteSpan
from shardnet.span import LayerSpan
from shardnet.store.cid import cid_of_bytes
from shardnet.store.manifest import Manifest, ManifestError, load_manifest, with_backward_factor
from tests.worker.harness import start_worker, ticket

SPAN = LayerSpan(1, 3)


def test_the_manifest_field_is_optional_checked_and_leaves_existing_cids_unchanged(
    tmp_path: Path, tiny_llama_store: Any
) -> None:
    store, cid, manifest = tiny_llama_store
    assert manifest.backward_factor == 2 and "backward_factor" not in manifest.to_json()
    assert cid_of_bytes(manifest.to_json_bytes()) == cid  # the default writes nothing: same CID as before
    new_cid, changed = with_backward_factor(tmp_path / "store", manifest, 3)
    assert new_cid != cid and changed.backward_factor == 3
    assert load_manifest(tmp_path / "store", new_cid) == changed  # round trip through the stored bytes
    assert Manifest.from_json({**manifest.to_json(), "backward_factor": 2}).cid == cid
    for bad in (0, 17, True, "3", 2.5, None):
        with pytest.raises(ManifestError, match="backward_factor"):
            Manifest.from_json({**manifest.to_json(), "backward_factor": bad})


def test_worker_bills_backward_positions_at_the_manifests_factor(
    tmp_path: Path, anvil: Any, accounts: list[Any], deployment: Any, tiny_llama_store: Any
) -> None:
    store, _, manifest = tiny_llama_store
    cid, _ = with_backward_factor(store, manifest, 3)
    owner = Registry(anvil.w3, deployment.registry, accounts[0], deploy_block=deployment.deploy_block)
    owner.register_model("tiny-llama-b3", cid, 4, 10**6)
    owner.set_coordinator(accounts[1].address, "http://127.0.0.1:9", True)
    dep_file = deployment.save(tmp_path / "deployment.json")
    worker = start_worker(tmp_path, accounts[2], dep_file, "tiny-llama-b3", store, "--layers", str(SPAN))
    try:
        worker.wait_ready(timeout=120)

        async def scenario() -> dict[str, Any]:
            async with aiohttp.ClientSession() as http:
                span = await RemoteSpan.open(
                    http, worker.url, ticket(owner.domain(), accounts[1], worker.address, SPAN)
                )
                await span.forward(0, torch.randn(2, 5, 64), {})
                await span.backward(0, torch.randn(2, 5, 64))
                return await span.close()

        closed = asyncio.run(scenario())
        assert closed["backward_factor"] == 3
        assert (closed["forward_positions"], closed["backward_positions"]) == (10, 10)
        assert closed["positions"] == 10 + 3 * 10
    finally:
        worker.stop()
