"""WorkerConfig: precedence flags > environment > TOML > defaults, validation with clear messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardnet.errors import ConfigError
from shardnet.span import LayerSpan
from worker.config import WorkerConfig, field_help, load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "worker" / "worker.example.toml"


def test_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    cfg_file = tmp_path / "w.toml"
    cfg_file.write_text('model = "tiny"\nport = 9000\nmax_sessions = 3\npeers = ["http://a:1"]\n')
    env = {"SHARDNET_WORKER_PORT": "9100", "SHARDNET_WORKER_MAX_LENGTH": "64"}
    cfg = load_config({"port": 9200, "layers": None}, cfg_file, env)
    assert cfg.port == 9200  # flag wins
    assert cfg.max_length == 64  # env over default
    assert cfg.max_sessions == 3  # file over default
    assert cfg.model == "tiny" and cfg.peers == ["http://a:1"]
    assert load_config({}, cfg_file, env).port == 9100  # env over file


def test_derived_values() -> None:
    cfg = load_config(
        {"layers": "2:5", "host": "127.0.0.1", "port": 8123, "peers": "http://x:1/, http://y:2"}, environ={}
    )
    assert cfg.span == LayerSpan(2, 5)
    assert cfg.endpoint == "http://127.0.0.1:8123"
    assert cfg.peers == ["http://x:1", "http://y:2"]
    assert cfg.database_url().startswith("sqlite:///") and cfg.database_url().endswith("worker.db")


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"layers": "5:2"}, "layers"),
        ({"port": 70000}, "port"),
        ({"max_sessions": 0}, "max_sessions"),
        ({"dtype": "int4"}, "dtype"),
        ({"no_such_setting": 1}, "no_such_setting"),
        ({"keystore": "k.json", "key_env": "K"}, "either keystore or key_env"),
    ],
)
def test_invalid_settings_are_named(overrides: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_config(overrides, environ={})


def test_bad_toml_file_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config({}, bad, {})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config({}, tmp_path / "missing.toml", {})


def test_every_field_has_help() -> None:
    assert all(text.strip() for text in field_help().values())


def test_example_file_is_valid_and_complete() -> None:
    cfg = load_config({}, EXAMPLE, {})
    text = EXAMPLE.read_text()
    missing = [name for name in WorkerConfig.model_fields if f"{name} =" not in text]
    assert missing == []
    assert isinstance(cfg, WorkerConfig)
