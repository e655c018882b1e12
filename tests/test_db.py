"""`shardnet.db.make_engine` URLs: plain PostgreSQL URLs use the installed psycopg2, SQLite files by default."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from sqlalchemy import text

from shardnet.db import make_engine, normalize_url
from shardnet.errors import ConfigError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@db.example:5432/shard", "postgresql+psycopg2://u:p@db.example:5432/shard"),
        ("postgres://u@db.example/shard", "postgresql+psycopg2://u@db.example/shard"),
        ("POSTGRESQL://u@h/d", "postgresql+psycopg2://u@h/d"),
        ("postgresql+psycopg2://u@h/d", "postgresql+psycopg2://u@h/d"),
        ("postgresql+psycopg://u@h/d", "postgresql+psycopg://u@h/d"),  # an explicit driver is kept
        ("sqlite:///var/w.db", "sqlite:///var/w.db"),
    ],
)
def test_normalize_url(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_plain_postgres_urls_select_psycopg2(scheme: str) -> None:
    engine = make_engine(f"{scheme}://shardnet:secret@127.0.0.1:1/state")  # no connection is made yet
    assert (engine.dialect.name, engine.dialect.driver) == ("postgresql", "psycopg2")
    assert engine.url.database == "state" and engine.url.password == "secret"


def test_a_missing_driver_says_what_to_install() -> None:
    if importlib.util.find_spec("psycopg") is not None:
        pytest.skip("psycopg 3 is installed here: nothing is missing")
    with pytest.raises(ConfigError, match=r"not installed \(psycopg\).*shardnet\[postgres\]"):
        make_engine("postgresql+psycopg://u@h/d")


def test_sqlite_by_default_and_bad_urls(tmp_path: Path) -> None:
    engine = make_engine(None, tmp_path / "sub" / "state.db")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    assert (tmp_path / "sub" / "state.db").exists()
    with pytest.raises(ConfigError, match="invalid database URL"):
        make_engine("not a url")
    with pytest.raises(ConfigError, match="no database given"):
        make_engine(None)


@pytest.mark.postgres
def test_a_plain_postgresql_url_connects(postgres_url: str) -> None:
    plain = postgres_url.replace("postgresql+psycopg2://", "postgresql://")
    engine = make_engine(plain)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()
