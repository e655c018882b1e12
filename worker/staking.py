"""The worker's standing on chain: connecting, registering and staking, and the `status`/`stake`/... commands."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from shardnet.chain.registry import AssignmentInfo, NodeInfo, Registry
from shardnet.chain.tx import rpc
from shardnet.errors import ConfigError, ShardnetError
from shardnet.keys import load_account
from worker.config import WorkerConfig

log = logging.getLogger(__name__)

GAS_RESERVE_WEI = 10**16  # kept aside for the transactions a worker sends (announce, commitments, release)


class StakeError(ShardnetError):
    """The worker cannot register or stake (e.g. its balance is too low); the message gives the numbers."""


def connect(cfg: WorkerConfig) -> Registry:
    """The registry of the deployment file, sending with the worker's key."""
    account = load_account(cfg.keystore, cfg.password_file, cfg.key_env)
    return Registry.from_deployment(cfg.deployment, account, rpc_url=cfg.rpc_url)


def wallet_balance(registry: Registry, address: str) -> int:
    return int(rpc(registry.w3, "eth_getBalance", [address, "latest"]), 16)


def utc(timestamp: int) -> str:
    """A chain timestamp as `2026-11-30 14:05:00 UTC`."""
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def eth(wei: int) -> str:
    return f"{wei / 10**18:.6f} ETH ({wei} wei)"


def _require_balance(registry: Registry, address: str, amount: int, what: str) -> None:
    have = wallet_balance(registry, address)
    if have < amount + GAS_RESERVE_WEI:
        raise StakeError(
            f"cannot {what}: {address} holds {eth(have)}, needs {eth(amount)} plus about {eth(GAS_RESERVE_WEI)} "
            f"for gas; send at least {eth(amount + GAS_RESERVE_WEI - have)} more to it"
        )


def ensure_registered(registry: Registry, endpoint: str, stake_wei: int | None) -> NodeInfo:
    """Register with a stake, top the stake up to minStake, and fix the endpoint, as needed."""
    assert registry.account is not None
    me = registry.account.address
    min_stake = registry.min_stake()
    node = registry.get_node(me)
    if not node.registered:
        stake = max(stake_wei or 0, min_stake)
        _require_balance(
            registry, me, stake, f"register with a stake of {eth(stake)} (minStake {eth(min_stake)})"
        )
        log.info("registering %s at %s with a stake of %s", me, endpoint, eth(stake))
        registry.register_node(endpoint, stake)
    else:
        if node.stake < min_stake or node.jailed:
            top_up = max(min_stake - node.stake, 1 if node.jailed else 0)
            _require_balance(
                registry, me, top_up, f"top the stake {eth(node.stake)} up to minStake {eth(min_stake)}"
            )
            log.info(
                "adding %s of stake (have %s, minStake %s)", eth(top_up), eth(node.stake), eth(min_stake)
            )
            registry.add_stake(top_up)
        if node.endpoint != endpoint:
            log.info("updating endpoint %s -> %s", node.endpoint, endpoint)
            registry.update_endpoint(endpoint)
    return registry.get_node(me)


def my_assignments(registry: Registry, address: str, model_id: int | None = None) -> list[AssignmentInfo]:
    """Live assignments of `address` (of one model, or of all)."""
    models = [model_id] if model_id is not None else range(1, registry.model_count() + 1)
    out = []
    for mid in models:
        for aid in registry.live_assignments(mid):
            info = registry.get_assignment(aid)
            if info.node == address and info.live:
                out.append(info)
    return out


@dataclass(frozen=True)
class Standing:
    address: str
    wallet: int
    node: NodeInfo
    claimable: int
    assignments: list[AssignmentInfo]

    def lines(self) -> list[str]:
        n = self.node
        out = [
            f"address      {self.address}",
            f"wallet       {eth(self.wallet)}",
            f"registered   {n.registered}" + (f" at {n.endpoint}" if n.registered else ""),
            f"stake        {eth(n.stake)}"
            + ("  JAILED for good: slashed; this address can never serve again" if n.jailed else ""),
            f"unbonding    {eth(n.unbonding)}"
            + (f" withdrawable from {utc(n.unbonding_until)}" if n.unbonding else ""),
            f"claimable    {eth(self.claimable)}",
            f"bonded until {utc(n.bonded_until) if n.bonded_until else '-'} (dispute window after its last paid hop)",
            f"assignments  {len(self.assignments)} live",
        ]
        out += [
            f"  #{a.assignment_id}: model {a.model_id} layers {a.start}:{a.end}" for a in self.assignments
        ]
        return out


def standing(registry: Registry, address: str | None = None) -> Standing:
    """The standing of `address` (default: the registry's account)."""
    if address is None:
        assert registry.account is not None
        address = str(registry.account.address)
    me = address
    return Standing(
        me,
        wallet_balance(registry, me),
        registry.get_node(me),
        registry.claimable(me),
        my_assignments(registry, me),
    )


def print_status(cfg: WorkerConfig, address: str | None = None) -> int:
    """`worker status`: of `address` without a key, else of the key's account."""
    if address is None:
        if cfg.keystore is None and cfg.key_env is None:
            raise ConfigError(
                "whose status? pass --address 0x... (no key needed), or your key with "
                "--keystore FILE or --key-env VAR"
            )
        print("\n".join(standing(connect(cfg)).lines()))
        return 0
    from eth_utils import is_address, to_checksum_address

    if not is_address(address):
        raise ConfigError(f"--address {address!r} is not an account address (0x and 40 hex digits)")
    registry = Registry.from_deployment(cfg.deployment, None, rpc_url=cfg.rpc_url)
    print("\n".join(standing(registry, to_checksum_address(address)).lines()))
    return 0


def run_action(cfg: WorkerConfig, action: str, amount_wei: int | None) -> int:
    """`stake`, `unstake`, `withdraw` or `claim`; prints the transaction and the balances after it."""
    registry = connect(cfg)
    assert registry.account is not None
    me = registry.account.address
    node = registry.get_node(me)
    if action == "stake":
        if amount_wei is None or amount_wei <= 0:
            raise StakeError("--amount-wei must be a positive number of wei")
        _require_balance(registry, me, amount_wei, f"stake {eth(amount_wei)}")
        if node.registered:
            tx = registry.add_stake(amount_wei)
        else:
            tx = registry.register_node(cfg.endpoint, amount_wei)
    elif action == "unstake":
        amount = node.stake if amount_wei is None else amount_wei
        if amount <= 0:
            raise StakeError(f"{me} has no bonded stake to unstake")
        tx = registry.request_unstake(amount)
    elif action == "withdraw":
        tx = registry.withdraw_stake()
    elif action == "claim":
        tx = registry.claim()
    else:  # pragma: no cover - the parser offers only the actions above
        raise StakeError(f"unknown action {action!r}")
    print(f"{action}: transaction {tx.tx_hash} (block {tx.block_number})")
    after = standing(registry)
    print("\n".join(after.lines()))
    if action == "withdraw" and after.claimable:
        print("the withdrawn stake is now claimable: run `worker claim` to receive it")
    return 0
