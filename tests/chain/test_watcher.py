"""EventWatcher on a real anvil: order, durable cursor across processes, rollback, confirmations, node restarts."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine, Integer, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from shardnet.chain.deploy import Deployment, deploy_registry
from shardnet.chain.devnet import Devnet
from shardnet.chain.errors import ChainError
from shardnet.chain.registry import Registry
from shardnet.chain.tx import DecodedEvent
from shardnet.chain.watcher import EventWatcher
from shardnet.db import ChainCursor, ChainCursorBlock, make_engine
from shardnet.span import LayerSpan

REPO = Path(__file__).resolve().parents[2]


class _TestBase(DeclarativeBase):
    pass


class SeenEvent(_TestBase):
    """One handled event; the primary key makes a second handling of the same log fail loudly."""

    __tablename__ = "seen_event"
    block: Mapped[int] = mapped_column(Integer, primary_key=True)
    log_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))


def record(event: DecodedEvent, session: Session) -> None:
    session.add(SeenEvent(block=event.block_number, log_index=event.log_index, name=event.name))


def open_db(path: Path) -> Engine:
    engine = make_engine(None, path)
    _TestBase.metadata.create_all(engine)
    return engine


def seen(engine: Engine) -> list[tuple[int, int, str]]:
    with Session(engine) as session:
        rows = session.scalars(select(SeenEvent).order_by(SeenEvent.block, SeenEvent.log_index))
        return [(r.block, r.log_index, r.name) for r in rows]


def on_chain(registry: Registry, names: list[str]) -> list[tuple[int, int, str]]:
    return [
        (e.block_number, e.log_index, e.name)
        for e in registry.get_logs(registry.deploy_block, registry.block_number(), names)
    ]


HANDLERS = {"ModelRegistered": record, "NodeRegistered": record}


def make_events(registry: Registry, count: int) -> None:
    for i in range(count):
        registry.register_model(f"m{i}", "bafk", 2, 1)


def test_handlers_get_events_in_chain_order(
    registry_for: Callable[..., Registry], accounts: list[LocalAccount], tmp_path: Path
) -> None:
    owner = registry_for(accounts[0])
    make_events(owner, 2)
    registry_for(accounts[1]).register_node("http://n", 10**18)
    owner.set_coordinator(accounts[0].address, "http://c")  # not handled
    make_events(owner, 1)
    engine = open_db(tmp_path / "w.db")
    watcher = EventWatcher(owner, engine, "t", HANDLERS)
    assert watcher.catch_up() == 4
    expected = on_chain(owner, sorted(HANDLERS))
    assert seen(engine) == expected and len(expected) == 4
    assert [name for *_, name in expected] == ["ModelRegistered"] * 2 + ["NodeRegistered", "ModelRegistered"]
    assert watcher.cursor() == owner.block_number()
    assert watcher.poll_once() == 0


_WATCH_SCRIPT = """
import json, sys
from web3 import HTTPProvider, Web3
from shardnet.chain.registry import Registry
from shardnet.chain.watcher import EventWatcher
from tests.chain.test_watcher import HANDLERS, open_db
cfg = json.loads(sys.argv[1])
reg = Registry(Web3(HTTPProvider(cfg["rpc"])), cfg["registry"], deploy_block=cfg["deploy_block"])
print(EventWatcher(reg, open_db(cfg["db"]), "proc", HANDLERS, max_range=cfg["max_range"]).catch_up())
"""


def _run_watcher_process(anvil, deployment: Deployment, db: Path) -> int:
    cfg = {
        "rpc": anvil.rpc_url,
        "registry": deployment.registry,
        "deploy_block": deployment.deploy_block,
        "db": str(db),
        "max_range": 3,
    }
    proc = subprocess.run(
        [sys.executable, "-c", _WATCH_SCRIPT, json.dumps(cfg)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.strip().splitlines()[-1])


def test_a_restarted_watcher_process_resumes_from_its_durable_cursor(
    anvil, deployment: Deployment, registry: Registry, tmp_path: Path
) -> None:
    db = tmp_path / "proc.db"
    make_events(registry, 3)
    assert _run_watcher_process(anvil, deployment, db) == 3
    make_events(registry, 2)
    assert _run_watcher_process(anvil, deployment, db) == 2  # only the new ones: a repeat would break the key
    assert seen(open_db(db)) == on_chain(registry, ["ModelRegistered"])


def test_a_failing_handler_rolls_back_the_whole_range(registry: Registry, tmp_path: Path) -> None:
    make_events(registry, 3)
    engine = open_db(tmp_path / "w.db")
    calls: list[int] = []

    def flaky(event: DecodedEvent, session: Session) -> None:
        calls.append(event.block_number)
        record(event, session)
        if len(calls) == 2:
            raise RuntimeError("handler crashed")

    watcher = EventWatcher(registry, engine, "t", {"ModelRegistered": flaky})
    before = watcher.cursor()
    with pytest.raises(RuntimeError, match="handler crashed"):
        watcher.poll_once()
    assert seen(engine) == [] and watcher.cursor() == before  # the first event's row went too
    assert watcher.catch_up() == 3
    assert seen(engine) == on_chain(registry, ["ModelRegistered"])


def test_confirmations_hold_back_recent_blocks(anvil, registry: Registry, tmp_path: Path) -> None:
    engine = open_db(tmp_path / "w.db")
    watcher = EventWatcher(registry, engine, "t", HANDLERS, confirmations=2)
    block = registry.register_model("m", "bafk", 2, 1).block_number
    watcher.catch_up()
    assert seen(engine) == [] and watcher.cursor() == block - 2
    anvil.mine(1)
    watcher.catch_up()
    assert seen(engine) == []
    anvil.mine(1)
    assert watcher.catch_up() == 1
    assert seen(engine) == [(block, 0, "ModelRegistered")] and watcher.cursor() == block


def test_max_range_caps_each_poll(registry: Registry, tmp_path: Path) -> None:
    make_events(registry, 3)
    watcher = EventWatcher(registry, open_db(tmp_path / "w.db"), "t", HANDLERS, max_range=1)
    start = watcher.cursor()
    assert watcher.poll_once() == 0  # the deploy block has no handled event
    assert watcher.cursor() == start + 1
    assert [watcher.poll_once() for _ in range(3)] == [1, 1, 1]
    assert watcher.lag == 0


def test_unknown_event_names_are_rejected(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(ChainError, match="NoSuchEvent"):
        EventWatcher(registry, open_db(tmp_path / "w.db"), "t", {"NoSuchEvent": record})


def _wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_watcher_rides_out_a_node_restart(accounts: list[LocalAccount], tmp_path: Path) -> None:
    state = tmp_path / "anvil-state.json"
    node = Devnet.start(state_file=state)
    stop = threading.Event()
    thread: threading.Thread | None = None
    try:
        dep = deploy_registry(node.web3(), accounts[0])
        registry = Registry(node.web3(), dep.registry, accounts[0], deploy_block=dep.deploy_block)
        engine = open_db(tmp_path / "w.db")
        watcher = EventWatcher(registry, engine, "t", HANDLERS, poll_interval=0.05, max_backoff=0.2)
        thread = threading.Thread(target=watcher.run_forever, args=(stop,), daemon=True)
        thread.start()
        registry.register_model("before", "bafk", 2, 1)
        _wait_for(lambda: len(seen(engine)) == 1)

        node.stop()
        _wait_for(lambda: watcher.failures >= 2)
        node = Devnet.start(port=node.port, state_file=state)  # same chain, same URL
        registry.with_account(accounts[1]).register_node("http://n", 10**18)
        _wait_for(lambda: len(seen(engine)) == 2)
        _wait_for(lambda: watcher.failures == 0)
        assert seen(engine) == on_chain(registry, sorted(HANDLERS))
        assert [name for *_, name in seen(engine)] == ["ModelRegistered", "NodeRegistered"]
    finally:
        stop.set()
        if thread is not None:
            thread.join(10)
        node.stop()
    assert thread is not None and not thread.is_alive()


def test_layer_span_events_decode(
    registry_for: Callable[..., Registry], accounts: list[LocalAccount], tmp_path: Path
) -> None:
    owner, node = registry_for(accounts[0]), registry_for(accounts[2])
    node.register_node("http://n", 10**18)
    model_id = owner.register_model("m", "bafk", 4, 1).event("ModelRegistered").args["modelId"]
    node.announce_shard(model_id, LayerSpan(1, 3))
    spans: list[LayerSpan] = []
    watcher = EventWatcher(
        owner,
        open_db(tmp_path / "w.db"),
        "t",
        {"ShardAnnounced": lambda ev, _s: spans.append(LayerSpan(ev.args["start"], ev.args["end"]))},
    )
    watcher.catch_up()
    assert spans == [LayerSpan(1, 3)]


@pytest.mark.postgres
def test_watcher_cursor_in_postgresql(postgres_url: str, registry: Registry) -> None:
    engine = make_engine(postgres_url)
    _TestBase.metadata.create_all(engine)
    try:
        make_events(registry, 3)
        assert EventWatcher(registry, engine, "pg", HANDLERS, max_range=2).catch_up() == 3
        make_events(registry, 1)
        restarted = make_engine(postgres_url)  # a new engine: as after a process restart
        assert EventWatcher(registry, restarted, "pg", HANDLERS).catch_up() == 1
        assert seen(restarted) == on_chain(registry, ["ModelRegistered"])
        restarted.dispose()
    finally:
        _TestBase.metadata.drop_all(engine)
        ChainCursor.__table__.drop(engine)
        ChainCursorBlock.__table__.drop(engine)
        engine.dispose()
