"""Store fixtures: content-addressed stores holding imported models, and a real HTTP shard peer.

- ``tiny_llama_store``: a small random Llama (4 layers) imported: ``(store_dir, manifest_cid, manifest)``.
- ``smollm2_store``: the real SmolLM2-135M imported once per test session. Set ``SHARDNET_TEST_CACHE``
  to a folder to keep that import between sessions (the first import takes ~40 s).
- ``serve_store(store_dir)``: a context manager running ``make_shard_routes`` on 127.0.0.1 in a
  thread; yields the peer's base URL.
- ``hostile_routes(store_dir)``: routes of a peer that serves whatever bytes its folder holds under a CID,
  unverified (an honest worker hashes before serving; a hostile one does not): for tests of the fetching side.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiohttp import web

from shardnet.store.manifest import Manifest, load_manifest


def hostile_routes(store_dir: str | Path) -> list[web.RouteDef]:
    """`GET /v1/shards/{cid}` answering the folder's file as is, without checking it against its CID."""
    root = Path(store_dir)

    async def serve(request: web.Request) -> web.StreamResponse:
        path = root / request.match_info["cid"]
        return web.FileResponse(path) if path.is_file() else web.Response(status=404)

    return [web.get("/v1/shards/{cid}", serve)]


@contextmanager
def serve_store(store_dir: str | Path, routes: list[web.RouteDef] | None = None) -> Iterator[str]:
    """Serve a store folder over real HTTP on 127.0.0.1 (a free port) until the block exits."""
    from shardnet.store.http import make_shard_routes

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.add_routes(routes if routes is not None else make_shard_routes(store_dir))
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, name="shard-peer", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def _import_cached(source: str | Path, cache: Path, name: str | None = None) -> tuple[Path, str, Manifest]:
    """Import ``source`` into ``cache/store`` once; later calls reuse it (keyed by the stored CID)."""
    from shardnet.model.importer import import_model

    store = cache / "store"
    marker = cache / "manifest_cid.json"
    if marker.is_file():
        cid = json.loads(marker.read_text())["cid"]
        try:
            manifest = load_manifest(store, cid)
            cids = [f.cid for f in manifest.files] + [t.cid for t in manifest.tokenizer]
            if all((store / c).is_file() for c in cids):
                return store, cid, manifest
        except Exception:  # a stale or partial cache: import again
            pass
    cid, manifest = import_model(source, store, name=name)
    marker.write_text(json.dumps({"cid": cid}))
    return store, cid, manifest


@pytest.fixture(scope="session")
def tiny_llama_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Manifest]:
    """A random 4-layer Llama saved as an HF checkpoint and imported: (store_dir, manifest_cid, manifest)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("tiny_llama")
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(root / "hf")
    return _import_cached(root / "hf", root / "imported", name="tiny-llama")


@pytest.fixture(scope="session")
def smollm2_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Manifest]:
    """The real SmolLM2-135M-Instruct (from the packaged GGUF) imported in fp32."""
    from shardnet.model.importer import smollm2_gguf_path

    gguf = smollm2_gguf_path()
    cache_env = os.environ.get("SHARDNET_TEST_CACHE")
    cache = Path(cache_env) / "smollm2" if cache_env else tmp_path_factory.mktemp("smollm2")
    cache.mkdir(parents=True, exist_ok=True)
    return _import_cached(gguf, cache)
