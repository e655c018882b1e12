"""A private model end to end (issue 15 item 3): the real SmolLM2-135M sealed (n=6, k=4), registered by its
private manifest, served by three `worker run` processes that each start with an empty store, get their keys
from a `shardnet keyholder run` process (checked on anvil) and their pieces from a `shardnet store serve` node
holding only ciphertext: 16 greedy tokens equal the public model's."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from shardnet.chain.devnet import free_port
from shardnet.chain.registry import Registry
from shardnet.model.reference import greedy_generate, load_reference
from shardnet.peer.client import WorkerClient
from shardnet.span import LayerSpan
from shardnet.store.private.keyfile import save_keys
from shardnet.store.private.model import seal_model
from tests.store.storage_nodes import SHARDNET, StorageNode
from tests.worker.harness import run, start_worker, stop_workers, ticket

SPANS = [LayerSpan(0, 10), LayerSpan(10, 20), LayerSpan(20, 30)]
PROMPT = torch.tensor([[1, 9690, 198, 2683, 314, 253, 5356, 30, 2, 198]], dtype=torch.int64)
NEW_TOKENS = 16


def _start_keyholder(
    tmp: Path, dep_file: Path, keys_path: Path, model_id: int
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = open(tmp / "keyholder.log", "wb")  # noqa: SIM115 (kept for the process's life)
    proc = subprocess.Popen(
        [SHARDNET, "keyholder", "run", "--deployment", str(dep_file), "--keys", str(keys_path),
         "--model-id", str(model_id), "--port", str(port)],
        stdout=log, stderr=log,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return proc, url
        except OSError:
            assert proc.poll() is None, (tmp / "keyholder.log").read_text()
            time.sleep(0.2)
    raise TimeoutError("keyholder did not start")


@pytest.mark.slow
def test_private_smollm2_over_three_workers_equals_the_public_model(
    tmp_path_factory, anvil, accounts, module_deployment, smollm2_store
) -> None:
    tmp = tmp_path_factory.mktemp("private-smollm2")
    dep_file = module_deployment.save(tmp / "deployment.json")
    owner = Registry(
        anvil.w3, module_deployment.registry, accounts[0], deploy_block=module_deployment.deploy_block
    )
    store, cid, manifest = smollm2_store
    pieces = tmp / "pieces"
    _, keys = seal_model(store, cid, n=6, k=4, piece_dir=pieces)
    keys_path = save_keys(keys, tmp / "owner.keys.json")
    assert not any((pieces / f.cid).exists() for f in manifest.files)  # the node holds ciphertext only
    model_id = int(
        owner.register_model("smollm2-private", keys.manifest_cid, manifest.num_layers, 10**6)
        .event("ModelRegistered").args["modelId"]
    )  # fmt: skip
    owner.set_coordinator(accounts[1].address, "http://127.0.0.1:9", True)
    domain = owner.domain()
    node = StorageNode(pieces).start()
    keyholder, keyholder_url = _start_keyholder(tmp, dep_file, keys_path, model_id)
    workers = []
    try:
        for i, span in enumerate(SPANS):
            empty = tmp / f"w{i}-store"
            empty.mkdir()
            workers.append(
                start_worker(
                    tmp,
                    accounts[2 + i],
                    dep_file,
                    "smollm2-private",
                    empty,
                    "--layers",
                    str(span),
                    "--peers",
                    node.url,
                    "--keyholder",
                    keyholder_url,
                    name=f"w{i}",
                )  # fmt: skip
            )
        for w in workers:
            w.wait_ready(timeout=420)

        async def generate() -> list[int]:
            clients = [WorkerClient(w.url) for w in workers]
            try:
                sessions: list[str] = []
                nxt = None
                for w, c, span in reversed(list(zip(workers, clients, SPANS, strict=True))):
                    opened = await c.open_session(
                        ticket(domain, accounts[1], w.address, span), "fp32", next=nxt
                    )
                    sessions.insert(0, opened["session_id"])
                    nxt = {"url": w.url, "session_id": opened["session_id"], "token": opened["session_token"]}
                tokens, x, pos = [], PROMPT, 0
                for _ in range(NEW_TOKENS):
                    res = await clients[0].step_full(sessions[0], x, pos)
                    pos += x.shape[1]
                    tokens.append(int(res.tensor[0, -1].argmax()))
                    x = torch.tensor([[tokens[-1]]])
                for c, sid in zip(clients, sessions, strict=True):
                    await c.close(sid)
                return tokens
            finally:
                for c in clients:
                    await c.aclose()

        tokens = run(generate())
        logs = [w.log() for w in workers]
    finally:
        stop_workers(workers)
        keyholder.kill()
        keyholder.wait(10)
        node.kill()
    assert all("restored layers" in log for log in logs)
    for i, span in enumerate(SPANS):  # each worker rebuilt only its span's weight files
        held = {p.name for p in (tmp / f"w{i}-store").iterdir() if p.is_file()}
        assert set(manifest.cids_for(span)) <= held
        assert not ({f.cid for f in manifest.files} - set(manifest.cids_for(span))) & held
    torch.set_num_threads(1)
    ref = greedy_generate(load_reference(store, manifest.to_json()), PROMPT, NEW_TOKENS)
    assert tokens == ref.tokens
