"""Account keys of every role (client, worker, coordinator): an encrypted eth-account keystore, or, for
development, a hex private key in an environment variable named by `--key-env`.

    account = load_account(Path("key.json"), Path("pw.txt"), None)      # or load_account(None, None, "MY_KEY")
    address = write_keystore(Path("key.json"), read_password(Path("pw.txt")))

The private key is never printed or logged; errors name the file or the variable, never its content.
This module imports eth-account only inside its functions, so that commands' `--help` stays fast.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from shardnet.errors import ConfigError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

#: The variable read for the keystore password when no password file is given.
PASSWORD_ENV = "SHARDNET_KEY_PASSWORD"

#: A variable name as a shell accepts it (what --key-env must hold).
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Something that looks like key material: long runs of hex (a private key, with or without 0x).
_HEXISH = re.compile(r"(0x)?[0-9a-fA-F]{32,}")

#: How a user makes a keystore, for error messages.
KEYGEN_HINT = "create one with `shardnet keygen --out FILE --password-file PW`"


def read_password(password_file: Path | None, environ: Mapping[str, str] | None = None) -> str:
    """The keystore password: the first line of `password_file`, else $SHARDNET_KEY_PASSWORD."""
    env = os.environ if environ is None else environ
    if password_file is not None:
        try:
            lines = Path(password_file).read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read password file {password_file}: {exc.strerror}") from exc
        return lines[0] if lines else ""
    if PASSWORD_ENV in env:
        return env[PASSWORD_ENV]
    raise ConfigError(f"the keystore is encrypted: pass --password-file FILE or set {PASSWORD_ENV}")


def check_key_env_name(key_env: str) -> str:
    """`key_env` if it is an environment variable's name; refuses, without echoing it, a value that may be the
    private key itself (or anything else that is not a variable name)."""
    if _HEXISH.fullmatch(key_env.strip()) or not _VARIABLE_NAME.fullmatch(key_env):
        raise ConfigError(
            "--key-env takes the NAME of an environment variable that holds the key, not the key itself "
            "(the value given is not shown, as it may be secret): run `export MY_KEY=0x...` and pass "
            "--key-env MY_KEY, or use --keystore FILE"
        )
    return key_env


def load_account(
    keystore: Path | None,
    password_file: Path | None,
    key_env: str | None,
    environ: Mapping[str, str] | None = None,
) -> LocalAccount:
    """The account in `keystore` (unlocked with its password) or in the variable named by `key_env`."""
    from eth_account import Account

    env = os.environ if environ is None else environ
    if key_env is not None:
        value = env.get(check_key_env_name(key_env))
        if not value:
            raise ConfigError(f"--key-env names ${key_env}, but that variable is not set or empty")
        try:
            account: LocalAccount = Account.from_key(value.strip())
        except (ValueError, TypeError):
            raise ConfigError(f"${key_env} does not hold a valid hex private key (32 bytes)") from None
        return account
    if keystore is None:
        raise ConfigError(
            f"no key given: pass --keystore FILE ({KEYGEN_HINT}) or, for development, --key-env VAR"
        )
    try:
        data = json.loads(Path(keystore).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read keystore {keystore}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"keystore {keystore} is not JSON: is it an eth-account keystore file?") from exc
    password = read_password(password_file, env)
    try:
        key = Account.decrypt(data, password)
    except ValueError:
        raise ConfigError(f"cannot decrypt keystore {keystore}: wrong password (or a corrupt file)") from None
    unlocked: LocalAccount = Account.from_key(key)
    return unlocked


def write_keystore(path: Path, password: str, *, overwrite: bool = False) -> str:
    """Create a new key, write it encrypted to `path` (mode 0600); returns its address."""
    from eth_account import Account

    path = Path(path)
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} exists; refusing to overwrite a key (pass --force to replace it)")
    if not password:
        raise ConfigError(
            "refusing an empty keystore password: give a password file with a non-empty first line"
        )
    account = Account.create()
    data = Account.encrypt(account.key, password)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    return str(account.address)
