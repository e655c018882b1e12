"""The chain flags every transacting `shardnet` subcommand takes (deployment, RPC, key), in one place."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

_DEPLOYMENT_HELP = "deployment file (default: $SHARDNET_DEPLOYMENT or .shardnet/deployment.json)"


def add_rpc_url_flag(
    p: argparse.ArgumentParser,
    *,
    required: bool = False,
    help: str = "JSON-RPC URL to use instead of the one in the deployment file",
) -> None:
    """`--rpc-url URL` (the name `worker` and `coordinator` use too), with the old `--rpc` as a hidden alias."""
    group = p.add_mutually_exclusive_group(required=required)
    group.add_argument("--rpc-url", dest="rpc_url", metavar="URL", help=help)
    group.add_argument("--rpc", dest="rpc_url", metavar="URL", help=argparse.SUPPRESS)


def add_chain_flags(
    p: argparse.ArgumentParser, *, needs_key: bool, key_note: str = " (only needed with --mine)"
) -> None:
    p.add_argument("--deployment", type=Path, help=_DEPLOYMENT_HELP)
    add_rpc_url_flag(p)
    need = "" if needs_key else key_note
    p.add_argument(
        "--key-env", metavar="VAR", help=f"environment variable holding your hex private key{need}"
    )
    p.add_argument("--keystore", type=Path, metavar="FILE", help=f"encrypted keystore holding your key{need}")
    p.add_argument(
        "--password-file",
        type=Path,
        metavar="FILE",
        help="file whose first line is the keystore password (or set SHARDNET_KEY_PASSWORD)",
    )


def registry_from_args(args: argparse.Namespace, *, needs_key: bool) -> Any:
    """The deployed Registry, acting as the account the flags name (if any)."""
    from shardnet.chain.registry import Registry
    from shardnet.errors import ConfigError

    account = None
    if args.key_env or args.keystore:
        from shardnet.keys import load_account

        account = load_account(args.keystore, args.password_file, args.key_env)
    elif needs_key:
        raise ConfigError("this command sends a transaction: pass --key-env VAR or --keystore FILE")
    return Registry.from_deployment(args.deployment, account, rpc_url=args.rpc_url)
