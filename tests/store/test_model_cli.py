"""`shardnet model import | fetch | show` as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from shardnet.cli import main
from shardnet.span import LayerSpan
from shardnet.store.local import LocalStore
from shardnet.store.manifest import load_manifest
from tests.fixtures_store import serve_store
from tests.store.test_fetch import _publish


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [str(Path(sys.executable).parent / "shardnet"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_import_then_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(2)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "ckpt")
    store = tmp_path / "store"
    assert main(["model", "import", str(tmp_path / "ckpt"), "--store", str(store), "--name", "t2"]) == 0
    out = capsys.readouterr().out
    cid = out.strip().splitlines()[-1]
    manifest = load_manifest(store, cid)
    assert manifest.name == "t2" and f"manifest  {cid}" in out
    for f in manifest.files:
        assert f.name in out and f.cid in out
    assert main(["model", "show", cid, "--store", str(store), "--layers", "1:2"]) == 0
    shown = capsys.readouterr().out
    assert "layer-001.safetensors" in shown and "head.safetensors" in shown and "layer-000" not in shown


def test_fetch_over_http_in_a_real_process(tmp_path: Path) -> None:
    src, mcid, manifest, _ = _publish(tmp_path / "published")
    dest = tmp_path / "dest"
    with serve_store(src.root) as url:
        done = _run(
            "model",
            "fetch",
            mcid,
            "--layers",
            "1:3",
            "--from",
            "http://127.0.0.1:9",
            "--from",
            url,
            "--store",
            str(dest),
            "--timeout",
            "5",
            cwd=tmp_path,
        )
    assert done.returncode == 0, done.stderr
    assert "layer-001.safetensors" in done.stdout and "layer-002.safetensors" in done.stdout
    wanted = {f.cid for f in manifest.files_for(LayerSpan(1, 3))}
    assert wanted | {t.cid for t in manifest.tokenizer} | {mcid} == set(LocalStore(dest).cids())


def test_fetch_errors_are_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    src, mcid, _, _ = _publish(tmp_path / "published")
    monkeypatch.chdir(tmp_path)
    assert main(["model", "fetch", mcid, "--layers", "3:1", "--from", str(src.root), "--store", "s"]) == 1
    assert "START:END" in capsys.readouterr().err
    assert main(["model", "fetch", mcid, "--layers", "0:1", "--from", str(tmp_path), "--store", "s"]) == 1
    assert "no source could deliver" in capsys.readouterr().err
    assert main(["model", "show", mcid]) == 1  # the default store .shardnet/store is empty here
    assert "not in the store" in capsys.readouterr().err
