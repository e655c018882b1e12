"""Events pushed over a websocket (`eth_subscribe` newHeads) on a real anvil: handled without waiting for a poll,
each once and in chain order across a forced disconnect (backfilled by block range), and polling when the node
offers no websocket."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from eth_account.signers.local import LocalAccount
from sqlalchemy.orm import Session

from shardnet.chain.devnet import free_port
from shardnet.chain.heads import HeadSubscription, ws_url_for
from shardnet.chain.registry import Registry
from shardnet.chain.tx import DecodedEvent
from shardnet.chain.watcher import EventWatcher
from shardnet.db import make_engine
from tests.chain.tcp_cut import CuttableRelay
from tests.fixtures_chain import DevChain

Seen = list[tuple[int, int, str]]


def test_ws_url_is_derived_from_the_rpc_url_unless_given_or_off() -> None:
    assert ws_url_for("http://127.0.0.1:8545") == "ws://127.0.0.1:8545"
    assert ws_url_for("https://node.example/rpc/KEY") == "wss://node.example/rpc/KEY"
    assert ws_url_for("http://h:8545", "ws://h:8546") == "ws://h:8546"
    assert ws_url_for("http://h:8545", "off") is None
    assert ws_url_for("ipc:///tmp/geth.ipc") is None


@contextmanager
def watching(
    registry: Registry, tmp_path: Path, ws_url: str | None, poll_interval: float
) -> Iterator[tuple[EventWatcher, HeadSubscription | None, Seen, dict[int, float]]]:
    """A watcher of ModelRegistered in a thread; yields it, its subscription, the events handled (in the order
    the handler saw them) and the time each block's event was handled."""
    seen: Seen = []
    handled_at: dict[int, float] = {}

    def record(event: DecodedEvent, _session: Session) -> None:
        seen.append((event.block_number, event.log_index, event.name))
        handled_at[event.block_number] = time.perf_counter()

    watcher = EventWatcher(
        registry,
        make_engine(None, tmp_path / "w.db"),
        "heads-test",
        {"ModelRegistered": record},
        poll_interval=poll_interval,
    )
    watcher.catch_up()  # what the deployment emitted: handled before the test's events
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run_forever, args=(stop,), daemon=True)
    thread.start()
    heads = watcher.follow_heads(ws_url)
    try:
        yield watcher, heads, seen, handled_at
    finally:
        if heads is not None:
            heads.stop()
        stop.set()
        thread.join(timeout=35)


def _register(registry: Registry, name: str) -> tuple[int, float]:
    result = registry.register_model(name, "bafk", 2, 1)
    return result.block_number, time.perf_counter()


def _wait_for(done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.005)
    return done()


def _on_chain(registry: Registry, first_block: int) -> Seen:
    events = registry.get_logs(first_block, registry.block_number(), ["ModelRegistered"])
    return [(e.block_number, e.log_index, e.name) for e in events]


def test_events_arrive_pushed_not_at_the_next_poll(
    anvil: DevChain, registry_for: Callable[..., Registry], accounts: list[LocalAccount], tmp_path: Path
) -> None:
    owner = registry_for(accounts[0])
    first = anvil.block_number() + 1
    # a 30 s poll interval: anything handled within a second was pushed
    with watching(owner, tmp_path, ws_url_for(anvil.rpc_url), poll_interval=30.0) as (_w, heads, seen, at):
        assert heads is not None and heads.wait_connected(10), "anvil's websocket did not take eth_subscribe"
        delays = []
        for i in range(5):
            block, mined = _register(owner, f"pushed{i}")
            assert _wait_for(lambda b=block: b in at, 5.0), f"event of block {block} not handled in 5 s"
            delays.append(at[block] - mined)
        assert max(delays) < 1.0, f"handled {delays} s after the receipt: that is polling, not a subscription"
        assert seen == _on_chain(owner, first)


def test_each_event_once_and_in_order_across_a_forced_disconnect(
    anvil: DevChain, registry_for: Callable[..., Registry], accounts: list[LocalAccount], tmp_path: Path
) -> None:
    owner = registry_for(accounts[0])
    first = anvil.block_number() + 1
    relay = CuttableRelay(("127.0.0.1", anvil.devnet.port))
    with watching(owner, tmp_path, f"ws://127.0.0.1:{relay.port}", poll_interval=30.0) as (
        _w,
        heads,
        seen,
        at,
    ):
        assert heads is not None and heads.wait_connected(10)
        for i in range(3):
            block, _ = _register(owner, f"before{i}")
            assert _wait_for(lambda b=block: b in at, 5.0)
        relay.cut()  # the socket is reset and the port closed: blocks mined now are announced to nobody
        assert _wait_for(lambda: not heads.connected, 5.0)
        missed = [_register(owner, f"during{i}")[0] for i in range(4)]
        time.sleep(0.5)
        assert not any(b in at for b in missed), "handled while cut off with a 30 s poll interval?"
        relay.restore()
        # resubscribed: the watcher backfills the blocks it missed from its cursor, by range
        assert _wait_for(lambda: all(b in at for b in missed), 20.0), "missed blocks not backfilled"
        assert heads.subscriptions >= 2
        for i in range(3):
            block, _ = _register(owner, f"after{i}")
            assert _wait_for(lambda b=block: b in at, 5.0)
    expected = _on_chain(owner, first)
    assert len(expected) == 10
    assert seen == expected  # each once, in chain order


def test_without_a_websocket_the_watcher_polls(
    anvil: DevChain, registry_for: Callable[..., Registry], accounts: list[LocalAccount], tmp_path: Path
) -> None:
    owner = registry_for(accounts[0])
    first = anvil.block_number() + 1
    nothing_there = f"ws://127.0.0.1:{free_port()}"
    with watching(owner, tmp_path, nothing_there, poll_interval=0.2) as (_w, heads, seen, at):
        blocks = [_register(owner, f"polled{i}")[0] for i in range(3)]
        assert _wait_for(lambda: all(b in at for b in blocks), 10.0)
        assert heads is not None and not heads.connected and heads.subscriptions == 0
    assert seen == _on_chain(owner, first)


def test_polling_only_when_the_websocket_is_off(
    anvil: DevChain, registry_for: Callable[..., Registry], accounts: list[LocalAccount], tmp_path: Path
) -> None:
    owner = registry_for(accounts[0])
    with watching(owner, tmp_path, ws_url_for(anvil.rpc_url, "off"), poll_interval=0.2) as (
        _w,
        heads,
        _s,
        at,
    ):
        assert heads is None
        block, _ = _register(owner, "polled")
        assert _wait_for(lambda: block in at, 10.0)
