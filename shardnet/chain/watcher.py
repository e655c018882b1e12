"""Following registry events into handlers, with a durable cursor.

`EventWatcher` polls `eth_getLogs` over capped block ranges, trails the head by `confirmations`
blocks, polls again at once when `wake` is set (by a `shardnet.chain.heads.HeadSubscription`: the node pushed
a new block) and otherwise every `poll_interval` seconds, and calls `handlers[event_name](event, session)` in chain order (block, then log index). All
handler calls of one range and the new cursor (table `chain_cursor`: the last fully processed block)
are committed in one database transaction, the session passed to the handlers: a crash or a failing
handler rolls everything back and the range is handled again on the next poll, never half.

Forks: with the cursor the watcher keeps the hash of each block its cursor stood at (the newest `fork_memory`,
table `chain_cursor_block`). Before reading further it checks that the chain still has the cursor's block; if not
(a reorg deeper than `confirmations`, or a devnet reverted to a snapshot: the same block numbers then hold other
blocks), it moves the cursor back to the newest remembered block the chain still has (to the start if none) and
reads on from there, so no event of the new branch is skipped. Events of blocks read again are handed out again:
handlers must be idempotent by on-chain ids (those that send transactions too).

    watcher = EventWatcher(registry, engine, "worker", {"JobSettled": on_settled}, confirmations=1)
    threading.Thread(target=watcher.run_forever, args=(stop_event,)).start()
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from shardnet.chain.errors import ChainError, ChainUnavailable
from shardnet.chain.heads import HeadSubscription
from shardnet.chain.tx import DecodedEvent
from shardnet.db import (
    ChainCursor,
    ChainCursorBlock,
    cursor_blocks,
    forget_cursor_blocks_after,
    read_cursor,
    remember_cursor_block,
    session_scope,
    write_cursor,
)
from shardnet.retry import Backoff, retry_until_stopped

if TYPE_CHECKING:
    from shardnet.chain.registry import Registry

log = logging.getLogger(__name__)

#: A handler gets the event and the session of the transaction that also stores the cursor.
EventHandler = Callable[[DecodedEvent, Session], None]

#: blocks the cursor stood at whose hashes are kept to find where a fork began (one per poll that read blocks)
FORK_MEMORY = 1024


class EventWatcher:
    """Feeds registry events to handlers from a durable cursor; see the module docstring."""

    def __init__(
        self,
        registry: Registry,
        engine: Engine,
        name: str,
        handlers: Mapping[str, EventHandler],
        *,
        confirmations: int = 0,
        max_range: int = 2000,
        poll_interval: float = 0.5,
        start_block: int | None = None,
        max_backoff: float = 30.0,
        fork_memory: int = FORK_MEMORY,
    ) -> None:
        unknown = sorted(set(handlers) - set(registry.event_names))
        if unknown:
            raise ChainError(
                f"watcher {name!r} has handlers for events the registry does not emit: {', '.join(unknown)}; "
                f"known events: {', '.join(registry.event_names)}"
            )
        if confirmations < 0 or max_range < 1 or poll_interval <= 0 or fork_memory < 1:
            raise ValueError(
                "need confirmations >= 0, max_range >= 1, poll_interval > 0 and fork_memory >= 1"
            )
        self.registry = registry
        self.engine = engine
        self.name = name
        self.handlers = dict(handlers)
        self.confirmations = confirmations
        self.max_range = max_range
        self.poll_interval = poll_interval
        self.start_block = registry.deploy_block if start_block is None else start_block
        self.max_backoff = max_backoff
        self.fork_memory = fork_memory
        self.rewinds = 0  # how many times a fork moved the cursor back
        self.failures = 0  # consecutive failed polls (node unreachable or a handler raised)
        self.lag = 0  # blocks between the cursor and the confirmed head after the last poll
        self._warned_behind = False
        tables = ChainCursor.metadata.tables
        self.wake = threading.Event()  # set when the node announced a block: poll now, not at the interval
        ChainCursor.metadata.create_all(
            engine, tables=[tables[ChainCursor.__tablename__], tables[ChainCursorBlock.__tablename__]]
        )

    def cursor(self) -> int:
        """The last block fully processed (start_block - 1 before the first poll)."""
        with Session(self.engine) as session:
            stored = read_cursor(session, self.name)
        return self.start_block - 1 if stored is None else stored

    def poll_once(self) -> int:
        """Process the next range of confirmed blocks (at most `max_range`); returns the events handled.

        Raises ChainUnavailable when the node cannot be reached, and whatever a handler raises (the
        range is then rolled back and stays unprocessed).
        """
        head = self.registry.block_number()
        safe_head = head - self.confirmations
        cursor = self.cursor()
        if cursor >= self.start_block and (head < cursor or safe_head > cursor):
            cursor = self._rewind_past_fork(cursor, head)
        first, last = cursor + 1, min(safe_head, cursor + self.max_range)
        if last < first:
            self.lag = 0
            return 0
        # read before the logs: a fork between the two reads shows at the next poll as a changed hash
        last_hash = self.registry.block_hash(last)
        if last_hash is None:  # the chain got shorter since the head was read: next poll
            return 0
        events = self.registry.get_logs(first, last, sorted(self.handlers)) if self.handlers else []
        with session_scope(self.engine) as session:
            if read_cursor(session, self.name, for_update=True) not in (None, cursor):
                log.info("watcher %r: another process moved the cursor; skipping this poll", self.name)
                return 0
            for event in events:
                log.debug("watcher %r: %s at %s", self.name, event.name, event.position)
                self.handlers[event.name](event, session)
            write_cursor(session, self.name, last)
            remember_cursor_block(session, self.name, last, last_hash, keep=self.fork_memory)
        self.lag = safe_head - last
        if events:
            log.info("watcher %r: handled %d events in blocks %d-%d", self.name, len(events), first, last)
        return len(events)

    def _rewind_past_fork(self, cursor: int, head: int) -> int:
        """The cursor, moved back below a fork if the chain no longer has the block it stands at (see the module
        docstring); the remembered hashes match the chain up to the fork and not after it, so a binary search
        finds the newest block still on the chain."""
        with Session(self.engine) as session:
            known = cursor_blocks(session, self.name, up_to=cursor)
        if not known:  # a cursor from before hashes were kept: nothing to compare with
            if head < cursor and not self._warned_behind:
                log.warning(
                    "watcher %r: the chain's head %d is behind the cursor %d and no block hash was kept to find "
                    "where it forked; waiting (delete its chain_cursor row to read from the start again)",
                    self.name,
                    head,
                    cursor,
                )
                self._warned_behind = True
            return cursor

        def on_chain(i: int) -> bool:
            block, block_hash = known[i]
            return block <= head and self.registry.block_hash(block) == block_hash

        if on_chain(len(known) - 1):
            return cursor
        low, high = -1, len(known) - 1  # on_chain(low) holds (-1: none known), on_chain(high) does not
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if on_chain(mid) else (low, mid)
        target = known[low][0] if low >= 0 else self.start_block - 1
        with session_scope(self.engine) as session:
            if read_cursor(session, self.name, for_update=True) != cursor:
                return self.cursor()  # another process moved it meanwhile
            write_cursor(session, self.name, target)
            forget_cursor_blocks_after(session, self.name, target)
        self.rewinds += 1
        log.warning(
            "watcher %r: the chain no longer has block %d as read (a reorg, or a devnet reverted to a snapshot): "
            "reading again from block %d%s",
            self.name,
            known[-1][0],
            target + 1,
            "" if low >= 0 else " (the start: no remembered block is on the chain any more)",
        )
        return target

    def catch_up(self) -> int:
        """Poll until the cursor reaches the confirmed head; returns the events handled."""
        handled = self.poll_once()
        while self.lag > 0:
            handled += self.poll_once()
        return handled

    def run_forever(self, stop_event: threading.Event) -> None:
        """Poll until `stop_event` is set, retrying with exponential backoff while polls fail."""
        log.info("watcher %r following %s from block %d", self.name, self.registry.address, self.cursor() + 1)
        backoff = Backoff(first_s=self.poll_interval, max_s=max(self.max_backoff, self.poll_interval))
        while not stop_event.is_set():
            self.wake.clear()  # before the poll: a block announced during it wakes the next wait
            # a failed poll (node unreachable, or a handler raised: the range was rolled back) is tried again
            handled = retry_until_stopped(
                self.poll_once,
                stop=stop_event,
                backoff=backoff,
                what=f"watcher {self.name!r}: poll",
                on_failure=self._count_failure,
            )
            if handled is None:
                break
            if self.failures:
                log.info("watcher %r: recovered after %d failed polls", self.name, self.failures)
                self.failures = 0
            if self.lag == 0:
                wait_for_wake(self.wake, stop_event, self.poll_interval)
        log.info("watcher %r stopped at block %d", self.name, self.cursor())

    def follow_heads(self, ws_url: str | None) -> HeadSubscription | None:
        """Start a `HeadSubscription` on `ws_url` that sets `wake` on every new block (None: polling only)."""
        if ws_url is None:
            return None
        return HeadSubscription(
            ws_url, lambda _number: self.wake.set(), name=f"watcher {self.name!r}"
        ).start()

    def _count_failure(self, failures: int, exc: BaseException) -> None:
        self.failures = failures
        if not isinstance(exc, ChainUnavailable):
            log.error("watcher %r: a handler failed; the range was rolled back", self.name, exc_info=exc)


def wait_for_wake(
    wake: threading.Event, stop: threading.Event, timeout: float, slice_s: float = 0.05
) -> bool:
    """Wait until `wake` or `stop` is set or `timeout` seconds pass; True when woken (a block was announced)."""
    deadline = time.monotonic() + timeout
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if wake.wait(min(slice_s, left)):
            return True
    return False
