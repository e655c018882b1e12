"""`shardnet dashboard`: the network dashboard served alone, from chain data only (no coordinator needed).

shardnet dashboard                                             # the registry of .shardnet/deployment.json
shardnet dashboard --rpc-url http://127.0.0.1:8545 --registry 0x… --from-block 0 --port 8700
"""

from __future__ import annotations

import argparse
import asyncio

from shardnet.cli.chain_args import add_rpc_url_flag
from shardnet.errors import ConfigError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "dashboard",
        help="serve the network dashboard (coverage, nodes, jobs, money) from chain data alone",
        description="Serve the read-only network dashboard at http://HOST:PORT/dashboard, built from the "
        "registry's events and views alone: coverage of each model's layers by live assignments, nodes with "
        "stake, unbonding, jailed state and earnings, recent jobs with route, payouts and gas, totals and a "
        "chart of the last hour. Worker health and step times need a coordinator: its own /dashboard shows them.",
    )
    p.add_argument(
        "--deployment",
        help="deployment file to read the registry and RPC URL from, when --registry is not given "
        "(default: $SHARDNET_DEPLOYMENT or .shardnet/deployment.json)",
    )
    add_rpc_url_flag(p, help="JSON-RPC URL of the chain node (default: the deployment file's)")
    p.add_argument(
        "--registry", metavar="ADDRESS", help="registry contract address (default: the deployment file's)"
    )
    p.add_argument(
        "--from-block",
        type=int,
        metavar="N",
        help="first block to read events from (default: the deployment file's deploy block, else 0)",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for everyone)"
    )
    p.add_argument(
        "--port", type=int, default=8700, help="port to listen on (default 8700; 0 picks a free one)"
    )
    p.add_argument(
        "--refresh-s",
        type=float,
        default=1.0,
        metavar="S",
        help="read the chain at most once every S seconds, however many pages poll (default 1)",
    )
    p.set_defaults(func=cmd_dashboard)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from web3 import HTTPProvider, Web3

    from shardnet.chain.registry import Registry
    from shardnet.dashboard.snapshot import ChainSnapshot
    from shardnet.dashboard.web import chain_source, serve

    if args.refresh_s <= 0:
        raise ConfigError(f"--refresh-s must be above 0, not {args.refresh_s}")
    if args.registry:
        if not args.rpc_url:
            raise ConfigError("--registry needs --rpc-url (the chain node to read it from)")
        w3 = Web3(HTTPProvider(args.rpc_url, request_kwargs={"timeout": 30}))
        registry = Registry(w3, args.registry, deploy_block=args.from_block or 0)
    else:
        registry = Registry.from_deployment(args.deployment, rpc_url=args.rpc_url)
        if args.from_block is not None:
            registry.deploy_block = args.from_block
    snapshot = ChainSnapshot(registry, min_interval_s=args.refresh_s)
    snapshot.refresh()  # fail now, with the chain's own message, if the node or the registry is not there
    asyncio.run(
        serve(
            chain_source(snapshot),
            args.host,
            args.port,
            on_ready=lambda url: print(f"dashboard of registry {registry.address}: {url}", flush=True),
        )
    )
    return 0
