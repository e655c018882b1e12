"""Audit of issue 12 (client side): nothing is paid for a job that cannot run, and mistakes are told in the
user's terms. In-process `shardnet` commands against the session's real anvil; no coordinator is needed
where the check comes before anything is sent."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from shardnet.chain.deploy import deploy_registry
from shardnet.chain.devnet import DEV_KEYS, free_port
from shardnet.chain.errors import ContractRevert
from shardnet.chain.explain import explain
from shardnet.chain.registry import JobStatus, Registry, RegistryParams
from shardnet.cli import main
from shardnet.client import ShardnetClient
from worker.cli import main as worker_main

_UNREACHABLE = "http://127.0.0.1:9"


@pytest.mark.parametrize("value", ["-3", "4294967296", "0"])
def test_max_tokens_out_of_range_is_one_line_in_the_users_terms(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUDIT_CLIENT_KEY", DEV_KEYS[7])
    code = main(
        [
            "submit",
            "hi",
            "--model",
            "1",
            "--max-tokens",
            value,
            "--key-env",
            "AUDIT_CLIENT_KEY",
            "--rpc",
            _UNREACHABLE,
            "--coordinator",
            _UNREACHABLE,
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: --max-tokens must be a whole number from 1 to 4294967295"), err
    assert "nothing was paid" in err
    assert "Traceback" not in err and "eth_abi" not in err and "ZeroAmount" not in err


def test_submit_above_the_registrys_max_job_tokens_is_refused_before_paying(
    registry_for,
    accounts,
    anvil,
    deployment,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    owner = registry_for(accounts[0])
    model_id = owner.register_model("m", "bafkreitest", 3, 10).event("ModelRegistered").args["modelId"]
    limit = owner.max_job_tokens()
    dep = deployment.save(tmp_path / "d.json")
    monkeypatch.setenv("AUDIT_CLIENT_KEY", DEV_KEYS[7])
    nonce = anvil.w3.eth.get_transaction_count(accounts[7].address)
    code = main(
        [
            "submit",
            "hi",
            "--model",
            str(model_id),
            "--max-tokens",
            str(limit + 1),
            "--deployment",
            str(dep),
            "--key-env",
            "AUDIT_CLIENT_KEY",
            "--coordinator",
            f"http://127.0.0.1:{free_port()}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert f"--max-tokens {limit + 1} is more than this registry allows ({limit}" in err, err
    assert "nothing was paid" in err and "Traceback" not in err
    assert anvil.w3.eth.get_transaction_count(accounts[7].address) == nonce


def test_a_max_tokens_revert_is_told_as_a_sentence(registry_for, accounts) -> None:
    owner, client = registry_for(accounts[0]), registry_for(accounts[5])
    model_id = owner.register_model("m", "bafkreitest", 3, 10).event("ModelRegistered").args["modelId"]
    limit = owner.max_job_tokens()
    with pytest.raises(ContractRevert) as err:
        client.submit_job(model_id, b"\x01" * 32, limit + 1, accounts[1].address, value=0)
    text = explain(err.value)
    assert text.startswith(
        f"submitJob was refused: max tokens {limit + 1} is more than this registry allows ({limit})"
    ), text


def test_a_zero_amount_revert_is_told_as_a_sentence(registry_for, accounts) -> None:
    owner, client = registry_for(accounts[0]), registry_for(accounts[5])
    model_id = owner.register_model("m", "bafkreitest", 3, 10).event("ModelRegistered").args["modelId"]
    with pytest.raises(ContractRevert) as err:
        client.submit_job(model_id, b"\x01" * 32, 0, accounts[1].address, value=0)
    text = explain(err.value)
    assert text.startswith("submitJob was refused: an amount that must be positive is zero"), text
    assert text.endswith("(ShardRegistryZeroAmount())")


@pytest.mark.parametrize(
    "argv",
    [
        ["submit", "hi", "--model", "1", "--rpc", _UNREACHABLE, "--coordinator", _UNREACHABLE],
        ["jobs", "--mine", "--rpc", _UNREACHABLE],
        ["deploy", "--rpc", _UNREACHABLE],
        ["balance", "--rpc", _UNREACHABLE],
    ],
)
@pytest.mark.parametrize("secret", [DEV_KEYS[7], DEV_KEYS[7][2:], "correct horse battery staple"])
def test_key_env_given_a_key_never_echoes_it(
    argv: list[str], secret: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([*argv, "--key-env", secret])
    captured = capsys.readouterr()
    assert code == 1
    assert "--key-env takes the NAME of an environment variable" in captured.err, captured.err
    assert secret not in captured.err and secret not in captured.out
    assert DEV_KEYS[7][2:12] not in captured.err


def test_worker_key_env_given_a_key_never_echoes_it(capsys: pytest.CaptureFixture[str]) -> None:
    code = worker_main(["status", "--rpc-url", _UNREACHABLE, "--key-env", DEV_KEYS[7]])
    captured = capsys.readouterr()
    assert code == 1
    assert "--key-env takes the NAME" in captured.err, captured.err
    assert DEV_KEYS[7][2:12] not in captured.err + captured.out


def test_submit_refuses_when_no_coordinator_preflight_answers_and_pays_nothing(
    registry_for,
    accounts,
    anvil,
    deployment,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    owner = registry_for(accounts[0])
    model_id = owner.register_model("m", "bafkreitest", 3, 10).event("ModelRegistered").args["modelId"]
    dep = deployment.save(tmp_path / "d.json")
    monkeypatch.setenv("AUDIT_CLIENT_KEY", DEV_KEYS[7])
    nonce = anvil.w3.eth.get_transaction_count(accounts[7].address)
    code = main(
        [
            "submit",
            "hi",
            "--model",
            str(model_id),
            "--deployment",
            str(dep),
            "--key-env",
            "AUDIT_CLIENT_KEY",
            "--coordinator",
            f"http://127.0.0.1:{free_port()}",
        ]
    )
    assert code == 1 and "nothing was paid" in capsys.readouterr().err
    assert anvil.w3.eth.get_transaction_count(accounts[7].address) == nonce


def test_cancel_after_the_deadline_on_an_idle_devnet_mines_a_block(anvil, accounts) -> None:
    # a registry whose jobs expire after 1 s, so the wall clock passes the deadline while no block is made
    dep = deploy_registry(anvil.w3, accounts[0], RegistryParams(job_timeout=1))
    owner = Registry(anvil.w3, dep.registry, accounts[0], deploy_block=dep.deploy_block)
    model_id = owner.register_model("m", "bafkreitest", 3, 10).event("ModelRegistered").args["modelId"]
    client = ShardnetClient(owner.with_account(accounts[6]))
    job_id = client.pay("hello", model_id, 4, coordinator=accounts[1].address)
    deadline = owner.get_job(job_id).deadline
    offset = (
        int(anvil.w3.eth.get_block("latest")["timestamp"]) - time.time()
    )  # earlier tests may move the clock
    while time.time() + offset <= deadline + 1:
        time.sleep(0.2)
    assert int(anvil.w3.eth.get_block("latest")["timestamp"]) <= deadline  # the chain's clock stood still
    client.cancel(job_id)
    assert owner.get_job(job_id).status == JobStatus.Cancelled


def test_balance_of_any_address_without_a_key(
    registry_for, accounts, deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    owner = registry_for(accounts[0])
    model_id = owner.register_model("m", "bafkreitest", 3, 10).event("ModelRegistered").args["modelId"]
    client = ShardnetClient(registry_for(accounts[6]))
    job_id = client.pay("hello", model_id, 4, coordinator=accounts[1].address)
    escrow = owner.get_job(job_id).escrow
    dep = deployment.save(tmp_path / "d.json")
    assert main(["balance", accounts[6].address, "--deployment", str(dep)]) == 0
    out = capsys.readouterr().out
    assert f"address    {accounts[6].address}" in out
    assert f"escrowed   {escrow} wei in 1 open jobs (#{job_id})" in out, out
    assert "claimable  0 ETH" in out and "wallet     " in out
    assert main(["jobs", "--deployment", str(dep)]) == 0
    listing = capsys.readouterr().out
    assert any(
        line.split()[:4] == [str(job_id), "open", "m", "4"] and f"{escrow} wei" in line
        for line in listing.splitlines()
    ), listing
    assert main(["balance", "--deployment", str(dep)]) == 1
    assert "give an ADDRESS" in capsys.readouterr().err
