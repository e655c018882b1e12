"""Off-chain state through SQLAlchemy 2: an SQLite file by default, PostgreSQL by URL.

    engine = make_engine(None, default_path="var/worker.db")   # or make_engine("postgresql://user@host/db")
    Base.metadata.create_all(engine)
    with session_scope(engine) as db:
        db.add(row)                                              # committed on exit, rolled back on error

SQLite files run in WAL mode with a busy timeout, and every transaction starts with BEGIN IMMEDIATE, so
several processes (a worker and its CLI) can share one file without "database is locked" surprises.
A plain `postgresql://` (or `postgres://`) URL uses psycopg2, the driver of the `postgres` extra; name
another installed synchronous driver to use it instead (e.g. `postgresql+psycopg://` for psycopg 3).
The table `chain_cursor` keeps, per event watcher, the last block it fully processed, and `chain_cursor_block`
the hashes of the newest blocks its cursor stood at (where a fork began); `chain_identity` the chain (id, registry,
genesis block) each role's state belongs to, checked at every start.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, DateTime, Engine, String, create_engine, delete, event, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from shardnet.errors import ConfigError

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000

#: URL schemes that mean "PostgreSQL with the default driver"; SQLAlchemy 2.1 would pick psycopg 3 for the
#: first and rejects the second, while the `postgres` extra installs psycopg2.
_POSTGRES_SCHEMES = ("postgresql", "postgres")
POSTGRES_DRIVER = "postgresql+psycopg2"


class Base(DeclarativeBase):
    """Declarative base of every shardnet table (worker, coordinator and the chain cursor)."""


class ChainCursor(Base):
    """The last block an event watcher has fully processed, per watcher name."""

    __tablename__ = "chain_cursor"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    block: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=lambda: datetime.now(UTC))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" event below emits BEGIN itself
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def normalize_url(url: str) -> str:
    """`url` with a bare `postgresql://` or `postgres://` scheme mapped to `postgresql+psycopg2://`."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in _POSTGRES_SCHEMES:
        return f"{POSTGRES_DRIVER}://{rest}"
    return url


def make_engine(url: str | None, default_path: str | Path | None = None, *, echo: bool = False) -> Engine:
    """An engine for `url` (any SQLAlchemy URL: `postgresql://user@host/db`, `sqlite:///file.db`).

    `postgresql://` and `postgres://` use psycopg2 (see `normalize_url`).

    Without a URL, an SQLite file at `default_path` (its folder is created). Tables are not created:
    call `Base.metadata.create_all(engine)` once the modules that define them are imported.
    """
    if not url:
        if default_path is None:
            raise ConfigError(
                "no database given: pass a URL (--db-url postgresql://… or sqlite:///file.db) or a default path"
            )
        path = Path(default_path).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{path}"
    try:
        parsed = make_url(normalize_url(url))
    except ArgumentError as exc:
        raise ConfigError(
            f"invalid database URL {url!r}: use postgresql://user:password@host/dbname or sqlite:///path/to/file.db"
        ) from exc
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, echo=echo, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    else:
        try:
            engine = create_engine(parsed, echo=echo, pool_pre_ping=True)
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"the driver for {parsed.get_backend_name()} is not installed ({exc.name}): "
                "for PostgreSQL run `pip install 'shardnet[postgres]'`"
            ) from exc
    log.debug("database engine %s", engine.url.render_as_string(hide_password=True))
    return engine


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session in one transaction: committed when the block ends, rolled back if it raises."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


def read_cursor(session: Session, name: str, *, for_update: bool = False) -> int | None:
    """The last block watcher `name` fully processed, or None if it never ran.

    `for_update` locks the row until the transaction ends (PostgreSQL; SQLite locks the whole file anyway).
    """
    row = session.get(ChainCursor, name, with_for_update=for_update)
    return None if row is None else int(row.block)


def write_cursor(session: Session, name: str, block: int) -> None:
    """Record in `session`'s transaction that watcher `name` fully processed every block up to `block`."""
    row = session.get(ChainCursor, name)
    if row is None:
        session.add(ChainCursor(name=name, block=block, updated_at=datetime.now(UTC)))
    else:
        row.block = block
        row.updated_at = datetime.now(UTC)


class ChainCursorBlock(Base):
    """A block a watcher's cursor stood at, with its hash then: after a reorg (or a devnet reverted to a
    snapshot) the newest of these the chain still has is where the watcher reads again from."""

    __tablename__ = "chain_cursor_block"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    block: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hash: Mapped[str] = mapped_column(String(66))


def remember_cursor_block(session: Session, name: str, block: int, block_hash: str, *, keep: int) -> None:
    """Record that watcher `name`'s cursor stood at `block` whose hash was `block_hash`; keep the newest `keep`."""
    session.merge(ChainCursorBlock(name=name, block=block, hash=block_hash))
    session.flush()
    oldest_kept = session.scalars(
        select(ChainCursorBlock.block)
        .where(ChainCursorBlock.name == name)
        .order_by(ChainCursorBlock.block.desc())
        .offset(keep - 1)
        .limit(1)
    ).first()
    if oldest_kept is not None:
        session.execute(
            delete(ChainCursorBlock).where(
                ChainCursorBlock.name == name, ChainCursorBlock.block < oldest_kept
            )
        )


def cursor_blocks(session: Session, name: str, *, up_to: int) -> list[tuple[int, str]]:
    """The (block, hash) pairs recorded for watcher `name` at or below block `up_to`, oldest first."""
    rows = session.execute(
        select(ChainCursorBlock.block, ChainCursorBlock.hash)
        .where(ChainCursorBlock.name == name, ChainCursorBlock.block <= up_to)
        .order_by(ChainCursorBlock.block)
    )
    return [(int(block), str(block_hash)) for block, block_hash in rows]


def forget_cursor_blocks_after(session: Session, name: str, block: int) -> None:
    """Drop watcher `name`'s recorded blocks above `block` (they are no longer the chain's)."""
    session.execute(
        delete(ChainCursorBlock).where(ChainCursorBlock.name == name, ChainCursorBlock.block > block)
    )


# ---------------------------------------------------------------- which chain a database belongs to
class ChainIdentityRow(Base):
    """The chain a role's state belongs to (one row per role: "worker", "coordinator")."""

    __tablename__ = "chain_identity"

    role: Mapped[str] = mapped_column(String(64), primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    registry_address: Mapped[str] = mapped_column(String(42))
    genesis_hash: Mapped[str] = mapped_column(String(66))
    deploy_block_hash: Mapped[str] = mapped_column(String(66))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class ChainIdentity:
    """A deployment's identity. A devnet restarted from scratch has the same chain id and often the same registry
    address; anvil's genesis block is even the same on every start, so the hash of the block that deployed the
    registry (its time differs) is part of it too."""

    chain_id: int
    registry: str
    genesis_hash: str
    deploy_block_hash: str

    def describe(self) -> str:
        return (
            f"chain id {self.chain_id}, registry {self.registry}, genesis block {self.genesis_hash[:12]}…, "
            f"deploy block {self.deploy_block_hash[:12]}…"
        )


class ChainMismatch(ConfigError):
    """A database holds the state of another chain or deployment."""


def check_chain_identity(
    engine: Engine,
    role: str,
    identity: ChainIdentity,
    *,
    reset: bool = False,
    what: str = "the database",
    reset_flag: str = "--reset-state",
) -> None:
    """Record `identity` for `role` in a fresh database; refuse one recorded for another chain, unless `reset`,
    which first deletes every row of every table but other roles' identities (the role starts from scratch)."""
    Base.metadata.create_all(engine, tables=[Base.metadata.tables[ChainIdentityRow.__tablename__]])
    with session_scope(engine) as db:
        row = db.get(ChainIdentityRow, role)
        if row is not None:
            recorded = ChainIdentity(
                int(row.chain_id), row.registry_address, row.genesis_hash, row.deploy_block_hash
            )
            if recorded == identity:
                return
            if not reset:
                raise ChainMismatch(
                    f"{what} holds the {role}'s state of another chain ({recorded.describe()}), not of this one "
                    f"({identity.describe()}): was the devnet restarted? Start with {reset_flag} to clear that "
                    "state, or give another --data-dir (or --db-url)"
                )
    if reset:
        present = set(inspect(engine).get_table_names())
        with session_scope(engine) as db:
            for table in reversed(Base.metadata.sorted_tables):
                if table.name in present and table.name != ChainIdentityRow.__tablename__:
                    db.execute(table.delete())
            db.execute(delete(ChainIdentityRow).where(ChainIdentityRow.role == role))
        log.warning("%s: cleared the %s's state (%s)", what, role, reset_flag)
    with session_scope(engine) as db:
        db.merge(
            ChainIdentityRow(
                role=role,
                chain_id=identity.chain_id,
                registry_address=identity.registry,
                genesis_hash=identity.genesis_hash,
                deploy_block_hash=identity.deploy_block_hash,
                recorded_at=datetime.now(UTC),
            )
        )
