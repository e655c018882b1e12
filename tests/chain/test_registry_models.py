"""ShardRegistry: model registration, shard announcements and releases, the live-assignment index, quotes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount

from shardnet.chain.registry import AssignmentInfo, ModelInfo, Registry
from shardnet.span import LayerSpan
from tests.chain.registry_world import MIN_STAKE, NUM_LAYERS, PRICE, World, build_world, reverts
from tests.fixtures_chain import TEST_PARAMS, DevChain


@pytest.fixture
def world(anvil: DevChain, accounts: list[LocalAccount], registry_for: Callable[..., Registry]) -> World:
    return build_world(anvil, accounts, registry_for)


def test_register_model(registry_for: Callable[..., Registry], accounts: list[LocalAccount]) -> None:
    reg = registry_for(accounts[7])  # anyone may register a model
    ev = reg.register_model("SmolLM2", "bafkreimanifest", 30, 7).event("ModelRegistered")
    assert ev.args == {
        "modelId": 1,
        "owner": accounts[7].address,
        "name": "SmolLM2",
        "manifestCid": "bafkreimanifest",
        "numLayers": 30,
        "pricePerLayerToken": 7,
    }
    assert reg.get_model(1) == ModelInfo(1, "SmolLM2", "bafkreimanifest", 30, 7, accounts[7].address)
    second = reg.register_model("other", "bafkreiother", 2, 0).event("ModelRegistered").args["modelId"]
    assert (second, reg.model_count()) == (2, 2)


@pytest.mark.parametrize(
    ("name", "cid", "layers", "reason"),
    [
        ("", "bafk", 4, "empty name"),
        ("m", "", 4, "empty manifestCid"),
        ("m", "bafk", 0, "numLayers must be 1..65535"),
        ("m", "bafk", 65536, "numLayers must be 1..65535"),
    ],
)
def test_register_model_reverts(registry: Registry, name: str, cid: str, layers: int, reason: str) -> None:
    with reverts("ShardRegistryInvalidModel", reason=reason):
        registry.register_model(name, cid, layers, PRICE)


@pytest.mark.parametrize("model_id", [0, 1])
def test_unknown_model_views_revert(registry: Registry, model_id: int) -> None:
    with reverts("ShardRegistryUnknownModel", modelId=model_id):
        registry.get_model(model_id)
    with reverts("ShardRegistryUnknownModel", modelId=model_id):
        registry.quote(model_id, 1)
    with reverts("ShardRegistryUnknownModel", modelId=model_id):
        registry.live_assignments(model_id)


def test_quote_is_layers_times_positions_times_price_plus_fee(world: World) -> None:
    base = NUM_LAYERS * (10 + TEST_PARAMS.max_prompt_tokens) * PRICE
    assert world.gov.quote(world.model_id, 10) == base + base * TEST_PARAMS.coordinator_fee_bps // 10_000


def test_announce_shard(world: World) -> None:
    reg = world.reg(world.spare)
    reg.register_node("http://127.0.0.1:8200", MIN_STAKE)
    ev = reg.announce_shard(world.model_id, LayerSpan(1, 3)).event("ShardAnnounced")
    assert ev.args == {
        "assignmentId": 4,
        "node": world.spare.address,
        "modelId": world.model_id,
        "start": 1,
        "end": 3,
    }
    assert reg.get_assignment(4) == AssignmentInfo(4, world.spare.address, world.model_id, 1, 3, True)
    assert reg.assignment_count() == 4
    assert sorted(reg.live_assignments(world.model_id)) == [1, 2, 3, 4]
    assert reg.get_node(world.spare.address).live_assignments == 1


def test_announce_shard_reverts(world: World) -> None:
    with reverts("ShardRegistryNotRegistered", node=world.spare.address):
        world.reg(world.spare).announce_shard(world.model_id, LayerSpan(0, 1))
    reg = world.reg(world.node1)
    with reverts("ShardRegistryUnknownModel", modelId=99):
        reg.announce_shard(99, LayerSpan(0, 1))
    with reverts("ShardRegistryInvalidSpan", start=2, end=5, numLayers=NUM_LAYERS):
        reg.announce_shard(world.model_id, LayerSpan(2, 5))
    with reverts("ShardRegistryInvalidSpan", start=3, end=3, numLayers=NUM_LAYERS):
        reg._send("announceShard", world.model_id, 3, 3)  # LayerSpan itself refuses an empty span
    # a jailed node: see test_registry_attacks.py::test_jail_is_not_lifted_by_stake_nor_forgotten_by_exit


def test_release_shard(world: World) -> None:
    reg = world.reg(world.node1)
    ev = reg.release_shard(world.shard1).event("ShardReleased")
    assert ev.args == {"assignmentId": world.shard1, "node": world.node1.address, "modelId": world.model_id}
    assert not reg.get_assignment(world.shard1).live
    assert sorted(reg.live_assignments(world.model_id)) == [world.shard2, world.shard3]
    assert reg.get_node(world.node1.address).live_assignments == 0


def test_live_index_survives_releases_in_any_order(world: World) -> None:
    reg3 = world.reg(world.node3)
    extra = [
        int(
            reg3.announce_shard(world.model_id, LayerSpan(i, i + 1))
            .event("ShardAnnounced")
            .args["assignmentId"]
        )
        for i in range(NUM_LAYERS)
    ]
    live = {world.shard1, world.shard2, world.shard3, *extra}
    for assignment_id in (extra[1], world.shard3, extra[3], extra[0]):
        reg3.release_shard(assignment_id)
        live.discard(assignment_id)
        assert sorted(reg3.live_assignments(world.model_id)) == sorted(live)
    assert reg3.get_node(world.node3.address).live_assignments == 1
    # an id moved by swap-and-pop can still be released
    reg3.release_shard(extra[2])
    assert sorted(reg3.live_assignments(world.model_id)) == [world.shard1, world.shard2]


def test_release_shard_reverts(world: World) -> None:
    reg = world.reg(world.node1)
    with reverts("ShardRegistryUnknownAssignment", assignmentId=0):
        reg.release_shard(0)
    with reverts("ShardRegistryUnknownAssignment", assignmentId=42):
        reg.get_assignment(42)
    with reverts("ShardRegistryNotAssignmentOwner", assignmentId=world.shard2, account=world.node1.address):
        reg.release_shard(world.shard2)
    reg.release_shard(world.shard1)
    with reverts("ShardRegistryAssignmentNotLive", assignmentId=world.shard1):
        reg.release_shard(world.shard1)
