"""Gaps found by auditing issue 4 (the worker) against a running network, each pinned by a test."""

from __future__ import annotations

from pathlib import Path

import pytest

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
    )
    assert code == 1
    assert f"cannot get layers 0:2 of tiny (manifest {cid}) from {empty}" in err
    assert "add to --peers" in err and "--from" not in err
    assert accounts[2].key.hex()[2:] not in err
