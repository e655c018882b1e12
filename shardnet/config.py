"""Layered settings for the long-running roles (worker, coordinator): one pydantic model per role, filled
from defaults < a TOML file < `<PREFIX><FIELD>` environment variables < command-line flags, validated once.
Each field's `description` is its help text, so `--help` and the config never disagree.

`ChainSettings` holds the fields every role shares (deployment, RPC URL, key, polling, confirmations);
each role's model extends it. `add_settings_flags` turns any such model into argparse flags and
`flag_overrides` reads them back, for both roles' CLIs."""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shardnet.errors import ConfigError
from shardnet.keys import PASSWORD_ENV

M = TypeVar("M", bound=BaseModel)

#: Metavars of the shared fields' flags (a role adds its own).
CHAIN_METAVARS = {
    "rpc_url": "URL",
    "key_env": "VAR",
    "keystore": "FILE",
    "password_file": "FILE",
    "deployment": "FILE",
    "db_url": "URL",
}


class ChainSettings(BaseModel):
    """The chain and key settings of every long-running role. Field descriptions are the CLI help."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deployment: Path | None = Field(
        None,
        description="deployment file (JSON) written by `shardnet devnet` / `shardnet deploy`; "
        "default: $SHARDNET_DEPLOYMENT, else .shardnet/deployment.json",
    )
    rpc_url: str | None = Field(
        None, description="JSON-RPC URL of the chain; default: the deployment file's rpc_url"
    )
    keystore: Path | None = Field(
        None,
        description="encrypted eth-account keystore (JSON) holding this node's key; create one with `worker keygen`",
    )
    password_file: Path | None = Field(
        None, description=f"file whose first line is the keystore password (or set {PASSWORD_ENV})"
    )
    key_env: str | None = Field(
        None, description="for development: name of an environment variable holding the hex private key"
    )
    poll_interval_s: float = Field(1.0, gt=0, description="seconds between polls of the chain for new events")
    ws_url: str | None = Field(
        None,
        description="websocket URL on which the node pushes new blocks (eth_subscribe newHeads), so events are "
        "handled within milliseconds instead of at the next poll; default: rpc_url with ws:// (anvil serves both "
        "on one port; for geth give its --ws port); 'off': poll only. Polling stays the fallback while it is down",
    )
    confirmations: int = Field(
        0, ge=0, description="blocks an event must be buried under before it is handled"
    )

    @model_validator(mode="after")
    def _check_key_source(self) -> ChainSettings:
        if self.keystore is not None and self.key_env is not None:
            raise ValueError("give either keystore or key_env, not both")
        return self


def field_help(model: type[BaseModel]) -> dict[str, str]:
    """Field name -> help text, for a CLI."""
    return {name: info.description or "" for name, info in model.model_fields.items()}


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML config file's settings, with `-` in keys read as `_`."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    return {k.replace("-", "_"): v for k, v in data.items()}


def env_values(model: type[BaseModel], prefix: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings given as `<prefix><FIELD>` environment variables (empty ones ignored)."""
    return {
        name: environ[prefix + name.upper()]
        for name in model.model_fields
        if environ.get(prefix + name.upper(), "") != ""
    }


def load_layered(
    model: type[M],
    *,
    role: str,
    env_prefix: str,
    overrides: Mapping[str, Any] | None = None,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> M:
    """Merge defaults < TOML file < environment < `overrides` (flags; None values are ignored) and validate."""
    values: dict[str, Any] = read_toml(config_file) if config_file is not None else {}
    values.update(env_values(model, env_prefix, os.environ if environ is None else environ))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return model(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(
            f"invalid {role} configuration: {problems} (check flags, {env_prefix}* variables and --config)"
        ) from exc


def add_settings_flags(
    parser: argparse.ArgumentParser,
    model: type[BaseModel],
    *,
    env_prefix: str,
    config_help: str,
    metavars: Mapping[str, str] | None = None,
    names: Iterable[str] | None = None,
) -> None:
    """Add `--config FILE` and one `--field-name` flag per field of `model` (or of `names`), each with the
    field's description, its default and its environment variable as help. Flags default to None, so
    `flag_overrides` passes on only what was given."""
    parser.add_argument("--config", type=Path, metavar="FILE", help=config_help)
    shown_metavars = {**CHAIN_METAVARS, **(metavars or {})}
    helps = field_help(model)
    wanted = None if names is None else set(names)
    for name, info in model.model_fields.items():
        if wanted is not None and name not in wanted:
            continue
        default = info.get_default(call_default_factory=True)
        shown = "" if default is None or default == [] else f" (default: {default})"
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            metavar=shown_metavars.get(name, name.upper()),
            help=helps[name] + shown + f" [env {env_prefix}{name.upper()}]",
        )


def flag_overrides(args: argparse.Namespace, model: type[BaseModel]) -> dict[str, Any]:
    """The values of `model`'s flags in parsed `args` (None where a flag was not given or not defined)."""
    return {name: getattr(args, name, None) for name in model.model_fields}
