"""`worker run`'s start (`worker.node.release_stale`) on a real anvil registry: a worker serves one span of one model
at its node's one endpoint, so every other live assignment of its node is released, of any model. A drawn verifier's
401 or 422 is a fault (coordinator/disputes.py): a span left announced and not served (a run that died before its
release at shutdown) would fault an honest node on every check of it it is drawn for."""

from __future__ import annotations

from collections.abc import Callable

from eth_account.signers.local import LocalAccount

from shardnet.chain.registry import Registry
from shardnet.span import LayerSpan
from tests.fixtures_chain import TEST_PARAMS
from worker.node import release_stale


def _live(reg: Registry, node: str) -> list[tuple[int, LayerSpan]]:
    """(model, span) of `node`'s live assignments, over every model."""
    out = []
    for model_id in range(1, reg.model_count() + 1):
        for aid in reg.live_assignments(model_id):
            a = reg.get_assignment(aid)
            if a.node == node:
                out.append((a.model_id, a.span))
    return sorted(out, key=lambda x: (x[0], x[1].start, x[1].end))


def test_a_worker_releases_its_nodes_assignments_of_other_spans_and_other_models(
    registry_for: Callable[[LocalAccount | None], Registry], accounts: list[LocalAccount]
) -> None:
    owner, node = registry_for(accounts[0]), accounts[1]
    models = [
        int(owner.register_model(name, "bafkrei" + name, 4, 1_000).event("ModelRegistered").args["modelId"])
        for name in ("old", "served")
    ]
    old, served = models
    reg = registry_for(node)
    reg.register_node("http://127.0.0.1:9", TEST_PARAMS.min_stake)
    reg.announce_shard(old, LayerSpan(0, 2))  # left by a run on another model
    reg.announce_shard(served, LayerSpan(2, 4))  # left by a run on other layers
    kept = int(reg.announce_shard(served, LayerSpan(0, 2)).event("ShardAnnounced").args["assignmentId"])
    live = [reg.get_assignment(a) for a in reg.live_assignments(served)]

    reuse = release_stale(reg, node.address, served, LayerSpan(0, 2), live)

    assert reuse is not None and reuse.assignment_id == kept
    assert _live(reg, node.address) == [(served, LayerSpan(0, 2))]
    assert reg.get_node(node.address).live_assignments == 1


def test_a_worker_announcing_anew_releases_what_its_node_held_elsewhere(
    registry_for: Callable[[LocalAccount | None], Registry], accounts: list[LocalAccount]
) -> None:
    owner, node = registry_for(accounts[0]), accounts[1]
    old = int(owner.register_model("old", "bafkreiold", 4, 1_000).event("ModelRegistered").args["modelId"])
    served = int(owner.register_model("new", "bafkreinew", 4, 1_000).event("ModelRegistered").args["modelId"])
    reg = registry_for(node)
    reg.register_node("http://127.0.0.1:9", TEST_PARAMS.min_stake)
    reg.announce_shard(old, LayerSpan(0, 4))

    assert release_stale(reg, node.address, served, LayerSpan(0, 2), []) is None  # nothing to reuse
    assert _live(reg, node.address) == []
