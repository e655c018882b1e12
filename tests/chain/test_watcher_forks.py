"""EventWatcher across forks on a real anvil: when the chain under the cursor changes (a reorg, or a devnet reverted
to a snapshot, which the shared test anvil does around many tests), the same block numbers hold other blocks; the
watcher must read them again instead of skipping the new branch's events.

Before the fix a watcher whose cursor stood above the fork waited until the head passed its old cursor and never
handed out the events mined meanwhile: in the full suite the coordinator network of tests/coordinator never listed a
worker announced after tests/coordinator/test_disputes*.py had reverted their snapshots under it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from shardnet.chain.registry import Registry
from shardnet.chain.tx import DecodedEvent
from shardnet.chain.watcher import EventHandler, EventWatcher
from shardnet.db import make_engine
from tests.fixtures_chain import DevChain


def name_recorder(seen: list[str]) -> dict[str, EventHandler]:
    def record(event: DecodedEvent, _session: Session) -> None:
        seen.append(str(event.args["name"]))

    return {"ModelRegistered": record}


@pytest.mark.parametrize("mined_past_the_old_cursor", [False, True], ids=["head-behind", "head-beyond"])
def test_events_mined_after_a_revert_under_the_cursor_are_handled(
    anvil: DevChain, registry: Registry, tmp_path: Path, mined_past_the_old_cursor: bool
) -> None:
    seen: list[str] = []
    engine = make_engine(None, tmp_path / "w.db")
    watcher = EventWatcher(registry, engine, "t", name_recorder(seen))
    registry.register_model("before", "bafk", 2, 1)
    watcher.catch_up()
    snapshot = anvil.snapshot()
    registry.register_model("reverted", "bafk", 2, 1)
    anvil.mine(5)
    watcher.catch_up()
    assert seen == ["before", "reverted"]
    old_cursor = watcher.cursor()

    anvil.revert(snapshot)
    block = registry.register_model("after", "bafk", 2, 1).block_number
    assert block < old_cursor  # the new event sits in a block number the watcher had read already
    if mined_past_the_old_cursor:  # the head is beyond the old cursor again: only the block's hash tells
        anvil.mine(10)
        assert anvil.block_number() > old_cursor
    restarted = EventWatcher(
        registry, engine, "t", name_recorder(seen)
    )  # the hashes are kept in the database
    restarted.catch_up()
    assert seen == ["before", "reverted", "after"]
    assert watcher.rewinds == 0 and restarted.rewinds == 1 and restarted.cursor() == anvil.block_number()
    restarted.catch_up()
    assert seen == ["before", "reverted", "after"] and restarted.rewinds == 1  # once only


def test_a_fork_below_every_remembered_block_reads_again_from_the_start(
    anvil: DevChain, registry: Registry, tmp_path: Path
) -> None:
    seen: list[str] = []
    watcher = EventWatcher(
        registry, make_engine(None, tmp_path / "w.db"), "t", name_recorder(seen), max_range=1, fork_memory=2
    )
    registry.register_model("base", "bafk", 2, 1)
    snapshot = anvil.snapshot()
    registry.register_model("reverted", "bafk", 2, 1)
    anvil.mine(4)
    watcher.catch_up()  # one block per poll: only the last 2 blocks' hashes are kept, all above the fork
    assert seen == ["base", "reverted"]
    anvil.revert(snapshot)
    registry.register_model("after", "bafk", 2, 1)
    watcher.catch_up()
    assert seen == [
        "base",
        "reverted",
        "base",
        "after",
    ]  # read again from the deployment: "base" handed out twice
    assert watcher.rewinds == 1


def test_fork_memory_must_be_positive(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fork_memory"):
        EventWatcher(registry, make_engine(None, tmp_path / "w.db"), "t", {}, fork_memory=0)
