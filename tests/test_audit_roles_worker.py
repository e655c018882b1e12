"""Gaps found by auditing issue 4 (the worker) against a running network, each pinned by a test."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardnet.chain.devnet import free_port
from worker.cli import main


def _run_worker(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: dict[str, str], *args: str
) -> tuple[int, str]:
    """`worker ARGS` in this process (the same code as the console script); returns (exit status, stderr)."""
    with monkeypatch.context() as m:
        for key, value in env.items():
            m.setenv(key, value)
        capsys.readouterr()
        code = main(list(args))
        return code, capsys.readouterr().err


def test_missing_shard_files_name_the_workers_own_settings(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    registry,
    accounts,
    deployment,
    tiny_llama_store,
) -> None:
    """A worker whose --peers hold none of its files says so in terms of --peers, not the store CLI's --from."""
    store, cid, _ = tiny_llama_store
    registry.register_model("tiny", cid, 4, 1)
    empty = tmp_path / "empty-peer"
    empty.mkdir()
    code, err = _run_worker(
        monkeypatch,
        capsys,
        {"K": accounts[2].key.hex()},
        "run",
        "--deployment",
        str(deployment.save(tmp_path / "deployment.json")),
        "--key-env",
        "K",
        "--model",
        "tiny",
        "--layers",
        "0:2",
        "--store-dir",
        str(tmp_path / "store"),
        "--data-dir",
        str(tmp_path / "w"),
        "--peers",
        str(empty),
        "--port",
        str(free_port()),
    )
    assert code == 1
    assert f"cannot get layers 0:2 of tiny (manifest {cid}) from {empty}" in err
    assert "add to --peers" in err and "--from" not in err
    assert accounts[2].key.hex()[2:] not in err


def test_run_on_a_port_in_use_sends_nothing_on_chain(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    registry,
    accounts,
    anvil,
    deployment,
    tiny_llama_store,
) -> None:
    """Issue 12 item 3: the port is taken before any transaction, so a clash registers, stakes and announces nothing."""
    import socket

    store, cid, _ = tiny_llama_store
    registry.register_model("tiny", cid, 4, 1)
    worker = accounts[3]
    nonce = anvil.w3.eth.get_transaction_count(worker.address)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, err = _run_worker(
            monkeypatch, capsys, {"K": worker.key.hex()}, "run", "--deployment",
            str(deployment.save(tmp_path / "deployment.json")), "--key-env", "K", "--model", "tiny",
            "--layers", "0:2", "--store-dir", str(store), "--data-dir", str(tmp_path / "w"),
            "--host", "127.0.0.1", "--port", str(port),
        )
    assert code == 1
    assert f"port {port} on 127.0.0.1 is in use" in err and "nothing was sent on chain" in err, err
    assert "Traceback" not in err
    assert anvil.w3.eth.get_transaction_count(worker.address) == nonce
    assert not registry.get_node(worker.address).registered
