"""ShardRegistry: deployment parameters, governance, node registration, stake, unstake and withdrawal."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount

from shardnet.chain.deploy import deploy_registry
from shardnet.chain.registry import NodeInfo, Registry, RegistryParams
from shardnet.span import LayerSpan
from tests.chain.registry_world import ETHER, MIN_STAKE, World, assert_solvent, build_world, reverts
from tests.fixtures_chain import TEST_PARAMS, DevChain


@pytest.fixture
def world(anvil: DevChain, accounts: list[LocalAccount], registry_for: Callable[..., Registry]) -> World:
    return build_world(anvil, accounts, registry_for)


# ---------------------------------------------------------------- deployment and governance


def test_constructor_sets_owner_and_params(registry: Registry, accounts: list[LocalAccount]) -> None:
    assert registry.owner() == accounts[0].address
    assert registry.params() == TEST_PARAMS
    assert (registry.model_count(), registry.assignment_count(), registry.job_count()) == (0, 0, 0)
    assert registry.balance() == 0


@pytest.mark.parametrize(
    ("params", "bad"),
    [
        (RegistryParams(min_stake=0), "minStake"),
        (RegistryParams(job_timeout=0), "jobTimeout"),
        (RegistryParams(coordinator_fee_bps=10_001), "coordinatorFeeBps"),
        (RegistryParams(slash_bps=10_001), "slashBps"),
        (RegistryParams(max_job_tokens=0), "maxJobTokens"),
        (RegistryParams(max_job_tokens=1_000_001), "maxJobTokens"),
    ],
)
def test_constructor_rejects_bad_params(
    anvil: DevChain, deployment: object, accounts: list[LocalAccount], params: RegistryParams, bad: str
) -> None:
    with reverts("ShardRegistryInvalidParameter", name=bad):
        deploy_registry(anvil.w3, accounts[0], params)


def test_set_coordinator_approves_and_revokes(registry: Registry, accounts: list[LocalAccount]) -> None:
    coord = accounts[6].address
    ev = registry.set_coordinator(coord, "http://127.0.0.1:9000", True).event("CoordinatorSet")
    assert ev.args == {
        "coordinator": coord,
        "endpoint": "http://127.0.0.1:9000",
        "approved": True,
        "activeFrom": ev.args["activeFrom"],
    }
    assert ev.args["activeFrom"] == int(
        registry.w3.eth.get_block(ev.block_number)["timestamp"]
    )  # no delay here
    assert registry.is_coordinator(coord) and registry.coordinator_endpoint(coord) == "http://127.0.0.1:9000"
    registry.set_coordinator(coord, "", False)
    assert not registry.is_coordinator(coord) and registry.coordinator_endpoint(coord) == ""


def test_only_owner_governs(registry_for: Callable[..., Registry], accounts: list[LocalAccount]) -> None:
    intruder = registry_for(accounts[7])
    with reverts("OwnableUnauthorizedAccount", account=accounts[7].address):
        intruder.set_coordinator(accounts[7].address, "http://evil", True)
    with reverts("OwnableUnauthorizedAccount", account=accounts[7].address):
        intruder.withdraw_fees(accounts[7].address)


def test_withdraw_fees_without_fees_reverts(registry: Registry, accounts: list[LocalAccount]) -> None:
    with reverts("ShardRegistryZeroAmount"):
        registry.withdraw_fees(accounts[0].address)


def test_contract_refuses_plain_ether(registry: Registry, accounts: list[LocalAccount]) -> None:
    from shardnet.chain.tx import send_transaction

    with reverts("EmptyRevert"):  # no receive() or fallback(): ether only comes in through the protocol
        send_transaction(registry.w3, accounts[9], to=registry.address, value=1)
    assert registry.balance() == 0


# ---------------------------------------------------------------- registration


def test_register_node_records_stake_and_endpoint(
    registry_for: Callable[..., Registry], accounts: list[LocalAccount]
) -> None:
    node = accounts[4]
    reg = registry_for(node)
    ev = reg.register_node("http://127.0.0.1:8100", MIN_STAKE + 5).event("NodeRegistered")
    assert ev.args == {"node": node.address, "endpoint": "http://127.0.0.1:8100", "stake": MIN_STAKE + 5}
    assert reg.get_node(node.address) == NodeInfo(
        node.address, "http://127.0.0.1:8100", MIN_STAKE + 5, 0, 0, 0, 0, True, False
    )
    assert reg.total_staked() == MIN_STAKE + 5
    assert_solvent(reg)


def test_unknown_node_reads_as_unregistered(registry: Registry, accounts: list[LocalAccount]) -> None:
    assert registry.get_node(accounts[8].address) == NodeInfo(
        accounts[8].address, "", 0, 0, 0, 0, 0, False, False
    )


def test_register_node_reverts(world: World) -> None:
    with reverts("ShardRegistryInsufficientStake", provided=MIN_STAKE - 1, required=MIN_STAKE):
        world.reg(world.spare).register_node("http://x", MIN_STAKE - 1)
    with reverts("ShardRegistryAlreadyRegistered", node=world.node1.address):
        world.reg(world.node1).register_node("http://x", MIN_STAKE)


def test_update_endpoint(world: World) -> None:
    reg = world.reg(world.node1)
    ev = reg.update_endpoint("http://10.0.0.1:8100").event("EndpointUpdated")
    assert ev.args == {"node": world.node1.address, "endpoint": "http://10.0.0.1:8100"}
    assert reg.get_node(world.node1.address).endpoint == "http://10.0.0.1:8100"
    with reverts("ShardRegistryNotRegistered", node=world.spare.address):
        world.reg(world.spare).update_endpoint("http://x")


def test_add_stake(world: World) -> None:
    reg = world.reg(world.node1)
    ev = reg.add_stake(3 * ETHER).event("StakeAdded")
    assert ev.args == {"node": world.node1.address, "amount": 3 * ETHER, "newStake": MIN_STAKE + 3 * ETHER}
    assert reg.get_node(world.node1.address).stake == MIN_STAKE + 3 * ETHER
    assert reg.total_staked() == 3 * MIN_STAKE + 3 * ETHER
    assert_solvent(reg)
    with reverts("ShardRegistryZeroAmount"):
        reg.add_stake(0)
    with reverts("ShardRegistryNotRegistered", node=world.spare.address):
        world.reg(world.spare).add_stake(ETHER)


# ---------------------------------------------------------------- unstake and withdrawal


def test_request_unstake_moves_stake_into_unbonding(world: World) -> None:
    reg = world.reg(world.node1)
    reg.add_stake(ETHER)
    result = reg.request_unstake(ETHER)
    now = world.chain.timestamp()
    ev = result.event("UnstakeRequested")
    assert ev.args == {
        "node": world.node1.address,
        "amount": ETHER,
        "unbondingUntil": now + TEST_PARAMS.unbonding_period,
    }
    node = reg.get_node(world.node1.address)
    assert (node.stake, node.unbonding, node.unbonding_until) == (
        MIN_STAKE,
        ETHER,
        now + TEST_PARAMS.unbonding_period,
    )
    assert (reg.total_staked(), reg.total_unbonding()) == (3 * MIN_STAKE, ETHER)
    assert_solvent(reg)


def test_request_unstake_reverts(world: World) -> None:
    reg = world.reg(world.node1)
    with reverts("ShardRegistryZeroAmount"):
        reg.request_unstake(0)
    with reverts("ShardRegistryUnstakeTooLarge", requested=MIN_STAKE + 1, available=MIN_STAKE):
        reg.request_unstake(MIN_STAKE + 1)
    with reverts("ShardRegistryHasLiveAssignments", node=world.node1.address, count=1):
        reg.request_unstake(1)  # below minStake while serving a shard
    with reverts("ShardRegistryNotRegistered", node=world.spare.address):
        world.reg(world.spare).request_unstake(1)


def test_unstake_below_min_after_release_then_withdraw_and_claim(world: World) -> None:
    reg = world.reg(world.node1)
    reg.release_shard(world.shard1)
    reg.request_unstake(MIN_STAKE)
    with reverts("ShardRegistryStillUnbonding", until=reg.get_node(world.node1.address).unbonding_until):
        reg.withdraw_stake()
    world.chain.advance_time(TEST_PARAMS.unbonding_period)
    ev = reg.withdraw_stake().event("StakeWithdrawn")
    assert ev.args == {"node": world.node1.address, "amount": MIN_STAKE}
    # nothing left: the node is deregistered (its record, e.g. a jail, is kept) and its stake waits to be claimed
    assert reg.get_node(world.node1.address) == NodeInfo(
        world.node1.address, "http://127.0.0.1:8101", 0, 0, 0, 0, 0, False, False
    )
    assert reg.claimable(world.node1.address) == MIN_STAKE
    assert (reg.total_unbonding(), reg.total_claimable()) == (0, MIN_STAKE)
    assert_solvent(reg)
    before = world.balance_of(world.node1.address)
    result = reg.claim()
    gas_price = int(world.chain.rpc("eth_getTransactionReceipt", result.tx_hash)["effectiveGasPrice"], 16)
    assert world.balance_of(world.node1.address) == before + MIN_STAKE - result.gas_used * gas_price
    assert_solvent(reg)
    # and may register again
    reg.register_node("http://127.0.0.1:8111", MIN_STAKE)
    assert reg.get_node(world.node1.address).registered


def test_partial_withdraw_keeps_node_registered(world: World) -> None:
    reg = world.reg(world.node1)
    reg.add_stake(ETHER)
    reg.request_unstake(ETHER)
    world.chain.advance_time(TEST_PARAMS.unbonding_period)
    reg.withdraw_stake()
    node = reg.get_node(world.node1.address)
    assert (node.registered, node.stake, node.unbonding, node.live_assignments) == (True, MIN_STAKE, 0, 1)


def test_withdraw_reverts(world: World) -> None:
    reg = world.reg(world.node1)
    with reverts("ShardRegistryNothingToWithdraw", node=world.node1.address):
        reg.withdraw_stake()
    with reverts("ShardRegistryNotRegistered", node=world.spare.address):
        world.reg(world.spare).withdraw_stake()
    # within the dispute window after a paid hop the unbonded stake stays put
    reg.add_stake(ETHER)
    reg.request_unstake(ETHER)
    world.settle(world.submit())
    bonded = reg.get_node(world.node1.address).bonded_until
    world.chain.advance_time(TEST_PARAMS.unbonding_period - 5)
    with reverts("ShardRegistryStillUnbonding", until=bonded):
        reg.withdraw_stake()


def test_new_unstake_request_restarts_unbonding(world: World) -> None:
    reg = world.reg(world.node1)
    reg.add_stake(2 * ETHER)
    reg.request_unstake(ETHER)
    world.chain.advance_time(TEST_PARAMS.unbonding_period - 10)
    reg.request_unstake(ETHER)
    until = reg.get_node(world.node1.address).unbonding_until
    assert until == world.chain.timestamp() + TEST_PARAMS.unbonding_period
    world.chain.advance_time(20)
    with reverts("ShardRegistryStillUnbonding", until=until):
        reg.withdraw_stake()


def test_released_node_cannot_announce_without_stake(world: World) -> None:
    reg = world.reg(world.node1)
    reg.release_shard(world.shard1)
    reg.request_unstake(1)
    with reverts("ShardRegistryInsufficientStake", provided=MIN_STAKE - 1, required=MIN_STAKE):
        reg.announce_shard(world.model_id, LayerSpan(0, 1))
