"""Account keys for every role (`shardnet.keys`): keystore round trip, `--key-env`, clear errors, `shardnet keygen`."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from shardnet.chain.devnet import DEV_KEYS
from shardnet.cli import main as shardnet_main
from shardnet.errors import ConfigError
from shardnet.keys import load_account, read_password, write_keystore


def test_keystore_round_trip_and_errors(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\nignored second line\n")
    address = write_keystore(tmp_path / "k.json", read_password(pw, {}))
    assert stat.S_IMODE((tmp_path / "k.json").stat().st_mode) == 0o600
    assert load_account(tmp_path / "k.json", pw, None, {}).address == address
    assert (
        load_account(tmp_path / "k.json", None, None, {"SHARDNET_KEY_PASSWORD": "s3cret"}).address == address
    )
    with pytest.raises(ConfigError, match="--password-file FILE or set SHARDNET_KEY_PASSWORD"):
        load_account(tmp_path / "k.json", None, None, {})
    with pytest.raises(ConfigError, match="wrong password"):
        load_account(tmp_path / "k.json", None, None, {"SHARDNET_KEY_PASSWORD": "guess"})
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        write_keystore(tmp_path / "k.json", "x")
    with pytest.raises(ConfigError, match="empty keystore password"):
        write_keystore(tmp_path / "k2.json", "")
    (tmp_path / "notjson").write_text("hello")
    with pytest.raises(ConfigError, match="not JSON"):
        load_account(tmp_path / "notjson", pw, None, {})
    with pytest.raises(ConfigError, match="cannot read keystore"):
        load_account(tmp_path / "missing.json", pw, None, {})


def test_key_env_and_missing_key_errors_name_the_variable_not_the_key() -> None:
    from eth_account import Account

    expected = Account.from_key(DEV_KEYS[9]).address
    assert load_account(None, None, "K", {"K": " " + DEV_KEYS[9] + "\n"}).address == expected
    with pytest.raises(ConfigError, match=r"\$NOPE.*not set"):
        load_account(None, None, "NOPE", {})
    with pytest.raises(ConfigError, match="valid hex private key") as err:
        load_account(None, None, "K", {"K": "0x1234"})
    assert "0x1234" not in str(err.value)
    with pytest.raises(ConfigError, match="no key given.*shardnet keygen.*--key-env VAR") as err:
        load_account(None, None, None, {})
    assert "worker" not in str(err.value)  # the same message serves clients and coordinators


def test_shardnet_keygen_writes_a_keystore_the_other_commands_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pw, key = tmp_path / "pw", tmp_path / "client-key.json"
    pw.write_text("pass phrase\n")
    assert shardnet_main(["keygen", "--out", str(key), "--password-file", str(pw)]) == 0
    address = capsys.readouterr().out.split()[-1]
    assert json.loads(key.read_text())["address"].lower() == address[2:].lower()
    assert load_account(key, pw, None, {}).address == address
    assert shardnet_main(["keygen", "--out", str(key), "--password-file", str(pw)]) == 1  # no overwrite
    assert "refusing to overwrite" in capsys.readouterr().err
    assert shardnet_main(["keygen", "--out", str(key), "--password-file", str(pw), "--force"]) == 0
    assert load_account(key, pw, None, {}).address != address
