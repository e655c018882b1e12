"""`shardnet compile`, `shardnet devnet`, `shardnet deploy` and `shardnet chain status`."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shardnet.cli.chain_args import add_rpc_url_flag
from shardnet.errors import ConfigError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from shardnet.chain.deploy import Deployment
    from shardnet.chain.registry import Registry, RegistryParams

log = logging.getLogger(__name__)

_DEPLOYMENT_HELP = "deployment file (default: $SHARDNET_DEPLOYMENT or .shardnet/deployment.json)"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "compile",
        help="compile contracts/*.sol into the committed artifacts",
        description="Compile contracts/*.sol with solc 0.8.37 through py-solc-x (a native solc of that version "
        "on PATH, else solcjs from node_modules/solc behind a wrapper; run `npm ci` first) and write ABI + "
        "bytecode to shardnet/chain/artifacts/. Commit the result: running shardnet needs no compiler.",
    )
    p.add_argument(
        "--check", action="store_true", help="write nothing; fail if the committed artifacts are stale"
    )
    p.set_defaults(func=cmd_compile)

    p = subparsers.add_parser(
        "devnet",
        help="run a local chain with a deployed registry until Ctrl-C",
        description="Start anvil (or a hardhat node) on 127.0.0.1, deploy the registry, approve coordinators, "
        "write the deployment file, print the funded dev keys, and stop the node on Ctrl-C or SIGTERM.",
    )
    p.add_argument(
        "--node",
        choices=("anvil", "hardhat"),
        default="anvil",
        help="which devnet node to run (default anvil)",
    )
    p.add_argument(
        "--port", type=int, default=8545, help="JSON-RPC port on 127.0.0.1 (default 8545; 0 picks a free one)"
    )
    p.add_argument("--deployment", type=Path, help=_DEPLOYMENT_HELP)
    p.add_argument(
        "--state",
        type=Path,
        help="anvil state file: loaded if it exists and saved while running, so a restarted devnet keeps its chain",
    )
    _add_coordinator_flag(p)
    _add_param_flags(p)
    p.set_defaults(func=cmd_devnet)

    p = subparsers.add_parser(
        "deploy",
        help="deploy the registry to any chain and write the deployment file",
        description="Deploy the committed ShardRegistry artifact to the chain at --rpc-url with the given key "
        "(the deployer becomes the owner, who approves coordinators), approve --coordinator addresses, and "
        "write the deployment file (chain id, RPC URL, address, deploy block, parameters) that every other "
        "command reads.",
    )
    add_rpc_url_flag(p, required=True, help="JSON-RPC URL of the chain, e.g. http://127.0.0.1:8545")
    keys = p.add_mutually_exclusive_group(required=True)
    keys.add_argument(
        "--key-file", type=Path, help="file holding the deployer's hex private key (it becomes the owner)"
    )
    keys.add_argument(
        "--key-env", metavar="VAR", help="environment variable holding the deployer's hex private key"
    )
    p.add_argument("--deployment", type=Path, help=_DEPLOYMENT_HELP)
    _add_coordinator_flag(p)
    _add_param_flags(p)
    p.set_defaults(func=cmd_deploy)

    chain = subparsers.add_parser("chain", help="inspect the deployed registry")
    chain_sub = chain.add_subparsers(dest="chain_command", metavar="COMMAND", required=True)
    p = chain_sub.add_parser(
        "status",
        help="print the registry's parameters, nodes, models, assignments and jobs",
        description="Read the registry named by the deployment file and print its parameters, approved "
        "coordinators, nodes, models with the spans served, the latest jobs and the ether it holds.",
    )
    p.add_argument("--deployment", type=Path, help=_DEPLOYMENT_HELP)
    add_rpc_url_flag(p)
    p.add_argument("--jobs", type=int, default=20, help="how many of the latest jobs to list (default 20)")
    p.set_defaults(func=cmd_chain_status)


def _add_coordinator_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--coordinator",
        action="extend",
        nargs="+",
        default=[],
        metavar="ADDR[=URL]",
        help="approve these coordinator addresses (each optionally with its HTTP endpoint, ADDR=URL)",
    )


def _add_param_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-stake", default="1", help="minimum node stake in ether (default 1)")
    p.add_argument(
        "--unbonding-period",
        type=int,
        default=60,
        help="seconds before unstaked ether can be withdrawn (default 60)",
    )
    p.add_argument(
        "--job-timeout", type=int, default=600, help="seconds before a client may cancel a job (default 600)"
    )
    p.add_argument(
        "--coordinator-fee-bps",
        type=int,
        default=500,
        help="coordinator fee, basis points of node pay (default 500)",
    )
    p.add_argument(
        "--slash-bps",
        type=int,
        default=5000,
        help="share of stake slashed for a proven cheat, basis points (default 5000)",
    )
    p.add_argument(
        "--max-prompt-tokens",
        type=int,
        default=512,
        help="longest prompt a job may carry, in tokens (default 512)",
    )
    p.add_argument(
        "--max-job-tokens",
        type=int,
        default=4096,
        help="largest --max-tokens a job may ask for, 1 to 1000000; caps one job's escrow (default 4096)",
    )
    p.add_argument(
        "--verify-bps",
        type=int,
        default=1000,
        help="each drawn verifier's pay for a checked hop, basis points of the hop's pay, 0 to 2500; a job's "
        "quote holds 4x this of its largest pay for verification and refunds what is not paid (default 1000)",
    )


_BPS = 10_000

# flag -> (attribute, smallest allowed, largest allowed): the constructor's argument types and checks
_PARAM_RANGES = (
    ("--unbonding-period", "unbonding_period", 0, 2**64 - 1),
    ("--job-timeout", "job_timeout", 1, 2**64 - 1),
    ("--coordinator-fee-bps", "coordinator_fee_bps", 0, _BPS),
    ("--slash-bps", "slash_bps", 0, _BPS),
    ("--max-prompt-tokens", "max_prompt_tokens", 1, 2**32 - 1),
    ("--max-job-tokens", "max_job_tokens", 1, 1_000_000),
    ("--verify-bps", "verify_bps", 0, _BPS // 4),
)


def _params(args: argparse.Namespace) -> RegistryParams:
    """The registry parameters from the flags, checked here so a bad value never reaches the chain."""
    from shardnet.chain.registry import RegistryParams

    try:
        min_stake_ether = Decimal(args.min_stake)
    except InvalidOperation:
        raise ConfigError(
            f"--min-stake must be a number of ether, e.g. 1 or 0.5; got {args.min_stake!r}"
        ) from None
    min_stake = int(min_stake_ether * 10**18) if min_stake_ether.is_finite() else 0
    if min_stake <= 0 or min_stake >= 2**256:
        raise ConfigError(
            f"--min-stake must be a positive amount of ether (at least 1 wei), got {args.min_stake!r}"
        )
    for flag, attr, low, high in _PARAM_RANGES:
        value = getattr(args, attr)
        if not low <= value <= high:
            unit = " (10000 = 100%)" if attr.endswith("_bps") else ""
            raise ConfigError(f"{flag} must be between {low} and {high}{unit}, got {value}")
    return RegistryParams(
        min_stake,
        args.unbonding_period,
        args.job_timeout,
        args.coordinator_fee_bps,
        args.slash_bps,
        args.max_prompt_tokens,
        max_job_tokens=args.max_job_tokens,
        verify_bps=args.verify_bps,
    )


def _parse_coordinators(values: list[str]) -> list[tuple[str, str]]:
    from eth_utils import is_address, to_checksum_address

    out: list[tuple[str, str]] = []
    for value in values:
        address, _, endpoint = value.partition("=")
        if not is_address(address):
            raise ConfigError(
                f"--coordinator {value!r}: {address!r} is not an Ethereum address (0x + 40 hex digits)"
            )
        out.append((to_checksum_address(address), endpoint))
    return out


def _load_key(key_file: Path | None, key_env: str | None) -> LocalAccount:
    from eth_account import Account

    if key_file is not None:
        try:
            raw = key_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read --key-file {key_file}: {exc.strerror}") from exc
        source = f"--key-file {key_file}"
    else:
        from shardnet.keys import check_key_env_name

        raw = os.environ.get(check_key_env_name(key_env or ""), "").strip()
        if not raw:
            raise ConfigError(f"--key-env names ${key_env}, but that variable is not set or empty")
        source = f"${key_env}"
    try:
        account: LocalAccount = Account.from_key(raw)
        return account
    except (ValueError, TypeError):
        raise ConfigError(
            f"{source} does not hold a hex private key (64 hex digits, optionally 0x-prefixed)"
        ) from None


def _approve(registry: Registry, coordinators: list[tuple[str, str]]) -> None:
    for address, endpoint in coordinators:
        registry.set_coordinator(address, endpoint, True)
        print(f"coordinator approved: {address} {endpoint}".rstrip())


def cmd_compile(args: argparse.Namespace) -> int:
    from shardnet.chain.compile import compile_contracts

    artifacts = compile_contracts(check=args.check)
    print(("up to date: " if args.check else "written: ") + ", ".join(sorted(artifacts)))
    return 0


def _reusable_deployment(path: Path | None, w3: Any, state: Path | None) -> Deployment | None:
    """The existing deployment when a devnet restarts from its state file and the registry is still there."""
    from shardnet.chain.deploy import load_deployment
    from shardnet.chain.errors import ChainError

    if state is None:
        return None
    try:
        dep = load_deployment(path)
    except ChainError:
        return None
    return dep if len(w3.eth.get_code(dep.registry)) > 0 else None


def cmd_devnet(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from eth_account import Account

    from shardnet.chain.deploy import deploy_registry
    from shardnet.chain.devnet import DEV_KEYS, Devnet
    from shardnet.chain.registry import Registry

    coordinators = _parse_coordinators(args.coordinator)
    params = _params(args)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    net = Devnet.start(args.node, port=args.port or None, state_file=args.state)
    try:
        w3 = net.web3()
        owner = Account.from_key(DEV_KEYS[0])
        dep = _reusable_deployment(args.deployment, w3, args.state)
        if dep is not None:
            dep = replace(dep, rpc_url=net.rpc_url)
            print(f"registry from the state file: {dep.registry}")
        else:
            dep = deploy_registry(w3, owner, params, rpc_url=net.rpc_url)
        path = dep.save(args.deployment)
        print(f"{args.node} devnet: {net.rpc_url} (chain id {dep.chain_id})")
        print(f"registry:   {dep.registry} (block {dep.deploy_block}, owner {dep.owner})")
        print(f"deployment: {path}  (export SHARDNET_DEPLOYMENT={path.resolve()})")
        _approve(Registry(w3, dep.registry, owner, deploy_block=dep.deploy_block), coordinators)
        print("funded dev keys (public knowledge: never use them on a real chain):")
        for i, key in enumerate(DEV_KEYS):
            print(f"  [{i}] {Account.from_key(key).address} {key}")
        print("Ctrl-C stops the devnet", flush=True)
        while not stop.wait(0.5):
            if not net.is_running():
                log.error("the %s process exited on its own", args.node)
                return 1
        return 0
    finally:
        net.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_deploy(args: argparse.Namespace) -> int:
    from web3 import HTTPProvider, Web3

    from shardnet.chain.deploy import deploy_registry
    from shardnet.chain.registry import Registry

    coordinators = _parse_coordinators(args.coordinator)
    account = _load_key(args.key_file, args.key_env)
    w3 = Web3(HTTPProvider(args.rpc_url, request_kwargs={"timeout": 60}))
    dep = deploy_registry(w3, account, _params(args), rpc_url=args.rpc_url)
    path = dep.save(args.deployment)
    _approve(Registry(w3, dep.registry, account, deploy_block=dep.deploy_block), coordinators)
    print(
        f"registry {dep.registry} deployed on chain {dep.chain_id} in block {dep.deploy_block}; wrote {path}"
    )
    return 0


def _ether(wei: int) -> str:
    return f"{Decimal(wei) / 10**18:f} ETH"


def cmd_chain_status(args: argparse.Namespace) -> int:
    from shardnet.chain.registry import Registry

    registry = Registry.from_deployment(args.deployment, rpc_url=args.rpc_url)
    head = registry.block_number()
    p = registry.params()
    endpoint = getattr(registry.w3.provider, "endpoint_uri", None) or "its deployment's RPC"  # HTTPProvider's
    print(f"registry {registry.address} at {endpoint} (block {head}), owner {registry.owner()}")
    print(
        f"params: min stake {_ether(p.min_stake)}, unbonding {p.unbonding_period} s, job timeout {p.job_timeout} s, "
        f"coordinator fee {p.coordinator_fee_bps} bps, slash {p.slash_bps} bps, max prompt {p.max_prompt_tokens} tokens, "
        f"max job tokens {p.max_job_tokens}"
    )
    events = []
    for start in range(registry.deploy_block, head + 1, 2000):
        events += registry.get_logs(start, min(head, start + 1999), ["NodeRegistered", "CoordinatorSet"])
    coordinators = sorted({e.args["coordinator"] for e in events if e.name == "CoordinatorSet"})
    nodes = sorted({e.args["node"] for e in events if e.name == "NodeRegistered"})
    print(f"coordinators ({len(coordinators)}):")
    for address in coordinators:
        if registry.is_coordinator(address):
            print(f"  {address} {registry.coordinator_endpoint(address)}")
    print(f"nodes ({len(nodes)}):")
    for address in nodes:
        n = registry.get_node(address)
        flags = ("jailed " if n.jailed else "") + ("" if n.registered else "left ")
        print(
            f"  {address} {n.endpoint} stake {_ether(n.stake)} unbonding {_ether(n.unbonding)} "
            f"assignments {n.live_assignments} bonded until {n.bonded_until} {flags}".rstrip()
        )
    count = registry.model_count()
    print(f"models ({count}):")
    for model_id in range(1, count + 1):
        m = registry.get_model(model_id)
        spans = [registry.get_assignment(a) for a in registry.live_assignments(model_id)]
        served = ", ".join(f"{a.span}@{a.node[:10]}" for a in spans) or "no live shards"
        print(
            f"  #{model_id} {m.name} {m.num_layers} layers, {m.price_per_layer_token} wei/layer-token, {m.manifest_cid}"
        )
        print(f"      {served}")
    jobs = registry.job_count()
    print(f"jobs ({jobs}, latest {min(jobs, args.jobs)}):")
    for job_id in range(max(1, jobs - args.jobs + 1), jobs + 1):
        j = registry.get_job(job_id)
        print(
            f"  #{job_id} {j.status.name.lower()} model {j.model_id} escrow {_ether(j.escrow)} client {j.client}"
        )
    print(
        f"totals: staked {_ether(registry.total_staked())}, unbonding {_ether(registry.total_unbonding())}, "
        f"open escrow {_ether(registry.open_escrow())}, claimable {_ether(registry.total_claimable())}, "
        f"fees {_ether(registry.protocol_fees())}, balance {_ether(registry.balance())}"
    )
    return 0
