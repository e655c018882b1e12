"""The `worker` CLI as a user runs it: help, keygen, status, stake, unstake, withdraw, claim, low balance."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from shardnet.chain.devnet import free_port
from tests.service_proc import REPO
from worker.cli import main
from worker.config import WorkerConfig


def _worker(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`worker ARGS` as a real process."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """`worker ARGS` through `worker.cli.main` in this process (the same code, without a second torch import)."""

    def call(*args: str, env: dict[str, str] | None = None) -> Result:
        with monkeypatch.context() as m:
            for k, v in (env or {}).items():
                m.setenv(k, v)
            capsys.readouterr()
            code = main(list(args))
            out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return call


def test_run_help_explains_every_setting() -> None:
    out = _worker("run", "--help")
    text = " ".join(out.stdout.split())
    assert out.returncode == 0
    for name in WorkerConfig.model_fields:
        assert f"--{name.replace('_', '-')} " in text and f"SHARDNET_WORKER_{name.upper()}" in text, name
    assert "--perturb-outputs SCALE" in text and "for testing the verifier only" in text.lower()


def test_status_help_describes_it_and_shows_only_its_own_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["status", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Print a worker's standing on chain" in text and "--address" in text
    for foreign in ("--port", "--host", "--public-url", "--model", "--layers"):
        assert f"{foreign} " not in text, foreign


@pytest.mark.parametrize("command", ["keygen", "status", "stake", "unstake", "withdraw", "claim"])
def test_subcommand_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    text = capsys.readouterr().out
    assert done.value.code == 0 and "usage: worker " + command in text
    assert ("--out FILE" if command == "keygen" else "--deployment") in text


def test_keygen_status_stake_unstake_withdraw_claim(cli, tmp_path: Path, anvil, accounts, deployment) -> None:
    dep_file = deployment.save(tmp_path / "deployment.json")
    key, pw = tmp_path / "key.json", tmp_path / "pw.txt"
    pw.write_text("correct horse\n")
    out = cli("keygen", "--out", str(key), "--password-file", str(pw))
    assert out.returncode == 0, out.stderr
    address = re.search(r"0x[0-9a-fA-F]{40}", out.stdout).group(0)  # type: ignore[union-attr]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert cli("keygen", "--out", str(key), "--password-file", str(pw)).returncode == 1  # no overwrite

    chain = ["--deployment", str(dep_file), "--keystore", str(key)]
    env = {"SHARDNET_KEY_PASSWORD": "correct horse"}
    status = cli("status", *chain, env=env)
    assert status.returncode == 0, status.stderr
    assert address in status.stdout and "registered   False" in status.stdout
    wrong = cli("status", *chain, env={"SHARDNET_KEY_PASSWORD": "wrong"})
    assert wrong.returncode == 1 and "wrong password" in wrong.stderr

    broke = cli("stake", *chain, "--amount-wei", str(10**18), env=env)
    assert broke.returncode == 1 and "holds 0.000000 ETH" in broke.stderr and "send at least" in broke.stderr

    funder = accounts[9]
    tx = {
        "from": funder.address,
        "to": address,
        "value": 3 * 10**18,
        "gas": 21000,
        "nonce": anvil.w3.eth.get_transaction_count(funder.address),
        "chainId": anvil.w3.eth.chain_id,
        "maxFeePerGas": 10**10,
        "maxPriorityFeePerGas": 10**9,
    }
    anvil.w3.eth.wait_for_transaction_receipt(
        anvil.w3.eth.send_raw_transaction(funder.sign_transaction(tx).raw_transaction)
    )

    staked = cli(
        "stake", *chain, "--amount-wei", str(2 * 10**18), "--public-url", "http://10.0.0.5:8700", env=env
    )
    assert staked.returncode == 0, staked.stderr
    assert (
        "registered   True at http://10.0.0.5:8700" in staked.stdout
        and "stake        2.000000 ETH" in staked.stdout
    )
    unstaked = cli("unstake", *chain, "--amount-wei", str(10**18), env=env)
    assert unstaked.returncode == 0 and "unbonding    1.000000 ETH" in unstaked.stdout
    by_address = cli("status", "--deployment", str(dep_file), "--address", address)  # no key at all
    assert by_address.returncode == 0, by_address.stderr
    assert address in by_address.stdout and "stake        1.000000 ETH" in by_address.stdout
    assert re.search(
        r"unbonding    1\.000000 ETH .*withdrawable from \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC",
        by_address.stdout,
    ), by_address.stdout
    early = cli("withdraw", *chain, env=env)
    assert early.returncode == 1 and "ShardRegistryStillUnbonding" in early.stderr
    anvil.advance_time(deployment.params["unbonding_period"] + 1)
    withdrawn = cli("withdraw", *chain, env=env)
    assert withdrawn.returncode == 0 and "unbonding    0.000000 ETH" in withdrawn.stdout
    assert (
        "claimable    1.000000 ETH" in withdrawn.stdout and "worker claim" in withdrawn.stdout
    )  # pull payment
    claimed = cli("claim", *chain, env=env)
    assert claimed.returncode == 0 and "claimable    0.000000 ETH" in claimed.stdout
    claim = cli("claim", *chain, env=env)
    assert claim.returncode == 1 and "ShardRegistryNothingToClaim" in claim.stderr
    assert "correct horse" not in status.stdout + staked.stdout + claim.stderr


def test_run_with_an_unfunded_key_says_why_it_cannot_register(
    cli, tmp_path: Path, registry, deployment, tiny_llama_store
) -> None:
    dep_file = deployment.save(tmp_path / "deployment.json")
    store, cid, _ = tiny_llama_store
    args = [
        "run",
        "--deployment",
        str(dep_file),
        "--key-env",
        "K",
        "--store-dir",
        str(store),
        "--data-dir",
        str(tmp_path / "w"),
        "--port",
        str(free_port()),
    ]
    key = "0x" + "42" * 32
    unknown = cli(*args, "--model", "tiny", env={"K": key})
    assert unknown.returncode == 1 and "no model named 'tiny' on chain (registered: none)" in unknown.stderr
    registry.register_model("tiny", cid, 4, 1)
    out = cli(*args, "--model", "tiny", env={"K": key})
    assert out.returncode == 1
    assert "cannot register with a stake of 1.000000 ETH" in out.stderr and "holds 0.000000 ETH" in out.stderr
    assert key[2:] not in out.stdout + out.stderr


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
            monkeypatch,
            capsys,
            {"K": worker.key.hex()},
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
            str(store),
            "--data-dir",
            str(tmp_path / "w"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        )
    assert code == 1
    assert f"port {port} on 127.0.0.1 is in use" in err and "nothing was sent on chain" in err, err
    assert "Traceback" not in err
    assert anvil.w3.eth.get_transaction_count(worker.address) == nonce
    assert not registry.get_node(worker.address).registered


def test_a_dtype_the_manifest_does_not_allow_is_refused_before_anything_goes_on_chain(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    registry,
    accounts,
    anvil,
    deployment,
    tiny_llama_store,
) -> None:
    """Issue 10 item 3: a model whose manifest allows only float32 workers is refused in bfloat16 at announce (the
    worker stops before registering), rather than slashed for bf16 drift later."""
    from shardnet.chain.devnet import free_port
    from shardnet.store.local import LocalStore
    from shardnet.store.manifest import Manifest, load_manifest

    store, cid, _ = tiny_llama_store
    strict = Manifest.from_json({**load_manifest(store, cid).to_json(), "worker_dtypes": ["float32"]})
    strict_cid = LocalStore(store).put_bytes(strict.to_json_bytes())
    registry.register_model("tiny-strict", strict_cid, 4, 1)
    worker = accounts[3]
    nonce = anvil.w3.eth.get_transaction_count(worker.address)
    code, err = _run_worker(
        monkeypatch,
        capsys,
        {"K": worker.key.hex()},
        "run",
        "--deployment",
        str(deployment.save(tmp_path / "deployment.json")),
        "--key-env",
        "K",
        "--model",
        "tiny-strict",
        "--layers",
        "0:2",
        "--dtype",
        "bfloat16",
        "--store-dir",
        str(store),
        "--data-dir",
        str(tmp_path / "w"),
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
    )
    assert code == 1
    assert "allows workers in float32 only" in err and "--dtype float32" in err, err
    assert "Traceback" not in err
    assert anvil.w3.eth.get_transaction_count(worker.address) == nonce
    assert not registry.get_node(worker.address).registered
