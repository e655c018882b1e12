"""Layered settings for the long-running roles (worker, coordinator): one pydantic model per role, filled
from defaults < a TOML file < `<PREFIX><FIELD>` environment variables < command-line flags, validated once.
Each field's `description` is its help text, so `--help` and the config never disagree."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from shardnet.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


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
    return {name: environ[prefix + name.upper()] for name in model.model_fields
            if environ.get(prefix + name.upper(), "") != ""}


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
