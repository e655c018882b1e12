"""The `shardnet` commands as a user runs them: every command has help, and bad input gives one clear line
saying what to do (no traceback). They run in-process through `shardnet.cli.main` and need no chain: the checks
come before anything is sent.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from shardnet.chain.devnet import DEV_KEYS
from shardnet.cli import build_parser, main
from shardnet.store.local import LocalStore

_UNREACHABLE = (
    "http://127.0.0.1:9"  # nothing listens there: a command that got this far would fail differently
)


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--unbonding-period", "-1"], "--unbonding-period must be between 0 and"),
        (
            ["--coordinator-fee-bps", "70000"],
            "--coordinator-fee-bps must be between 0 and 10000 (10000 = 100%)",
        ),
        (["--slash-bps", "10001"], "--slash-bps must be between 0 and 10000"),
        (["--job-timeout", "0"], "--job-timeout must be between 1 and"),
        (["--max-prompt-tokens", str(2**32)], "--max-prompt-tokens must be between 1 and 4294967295"),
        (["--max-job-tokens", "0"], "--max-job-tokens must be between 1 and 1000000"),
        (["--max-job-tokens", "1000001"], "--max-job-tokens must be between 1 and 1000000"),
        (["--verify-bps", "2501"], "--verify-bps must be between 0 and 2500"),
        (["--min-stake", "0"], "--min-stake must be a positive amount of ether"),
        (["--min-stake", "1e-30"], "--min-stake must be a positive amount of ether"),
        (["--min-stake", "NaN"], "--min-stake must be a positive amount of ether"),
        (["--min-stake", "lots"], "--min-stake must be a number of ether"),
    ],
)
def test_deploy_refuses_out_of_range_parameters_before_sending(
    flags: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUDIT_DEPLOYER_KEY", DEV_KEYS[5])
    code = main(["deploy", "--rpc", _UNREACHABLE, "--key-env", "AUDIT_DEPLOYER_KEY", *flags])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: ") and message in err, err
    assert "Traceback" not in err


def test_devnet_refuses_a_bad_parameter_before_starting_a_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["devnet", "--port", "0", "--deployment", str(tmp_path / "d.json"), "--slash-bps", "20000"])
    assert code == 1
    assert "--slash-bps must be between 0 and 10000" in capsys.readouterr().err
    assert not (tmp_path / "d.json").exists()


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f"{name} {k}": v for k, v in _subparsers(sub).items()})
    return found


# the commands of issues 2 and 3 (shardnet/cli/chain_cmds.py, model_cmds.py); the client's are audited elsewhere
_AUDITED = ("compile", "devnet", "deploy", "chain status", "model import", "model fetch", "model show")


def test_every_shardnet_command_has_help_and_a_description(capsys: pytest.CaptureFixture[str]) -> None:
    commands = _subparsers(build_parser())
    assert set(_AUDITED) <= set(commands)
    for name, parser in commands.items():
        with pytest.raises(SystemExit) as exit_info:
            main([*name.split(), "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        assert text.startswith(f"usage: shardnet {name}"), name
        if name in _AUDITED:
            assert parser.description, f"`shardnet {name} --help` has no description of what it does"


@pytest.mark.parametrize(
    "cid,message",
    [
        ("notacid", "not a CID"),
        ("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", "shardnet uses CIDv1, raw codec, sha2-256"),
    ],
)
def test_fetch_with_a_bad_manifest_cid_is_one_clear_line(
    cid: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["model", "fetch", cid, "--layers", "0:1", "--from", str(tmp_path), "--store", str(tmp_path / "s")]
    )
    err = capsys.readouterr().err
    assert code == 1 and message in err and "shardnet model import" in err, err
    assert "Traceback" not in err


def test_import_of_a_file_that_is_not_gguf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"<html>404 Not Found</html>")
    assert main(["model", "import", str(fake), "--store", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert "is not a GGUF file" in err and "download is complete" in err, err
    assert LocalStore(tmp_path / "s").cids() == []


def test_import_of_a_folder_with_a_config_but_no_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import LlamaConfig

    LlamaConfig(
        vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2
    ).save_pretrained(tmp_path / "ckpt")
    assert main(["model", "import", str(tmp_path / "ckpt"), "--store", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert "has a config.json but no weights" in err and "save_pretrained" in err, err
    assert LocalStore(tmp_path / "s").cids() == []
