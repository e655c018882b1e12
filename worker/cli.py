"""The `worker` command: run a node, manage its key and its stake.

    worker keygen --out worker-key.json --password-file pw.txt
    worker run --config worker.toml --keystore worker-key.json --password-file pw.txt --model tiny
    worker status | stake --amount-wei N | unstake [--amount-wei N] | withdraw | claim

This module only turns flags into a `WorkerConfig` and calls the code that does the work; heavy imports
(torch, web3) happen inside the handlers so that `worker --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from shardnet.cli import run_command
from shardnet.config import add_settings_flags, flag_overrides
from worker.config import ENV_PREFIX, WorkerConfig, load_config

# settings every chain command takes (the rest are `run` only)
_CHAIN_FIELDS = (
    "deployment",
    "rpc_url",
    "keystore",
    "password_file",
    "key_env",
    "public_url",
    "host",
    "port",
)
# settings a read-only command takes
_READ_FIELDS = ("deployment", "rpc_url", "keystore", "password_file", "key_env")
_METAVARS = {
    "layers": "START:END",
    "perturb_outputs": "SCALE",
    "peers": "URL[,URL...]",
    "model": "ID_OR_NAME",
    "key_env": "VAR",
}


def _add_config_flags(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None) -> None:
    add_settings_flags(
        parser,
        WorkerConfig,
        env_prefix=ENV_PREFIX,
        metavars=_METAVARS,
        names=names,
        config_help="TOML file of settings (see worker/worker.example.toml); flags and "
        f"{ENV_PREFIX}<SETTING> environment variables override it",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="worker",
        description="A shardnet worker node: stakes on chain, serves one block of layers of a model over HTTP, "
        "and commits on chain to what it computed.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="register and stake if needed, fetch and load a shard, announce it and serve it",
        description="Run the worker until SIGTERM/SIGINT: then it stops taking sessions, lets open ones finish "
        "(--drain-grace-s), releases its assignment on chain and exits 0.",
    )
    _add_config_flags(run)
    run.add_argument(
        "--reset-state",
        action="store_true",
        help="clear the database's state (sessions, steps, cursor) when it belongs to another chain or "
        "registry, e.g. after restarting a devnet (without it such a database is refused)",
    )
    run.set_defaults(func=_cmd_run)

    keygen = sub.add_parser("keygen", help="create a new key in an encrypted keystore file")
    keygen.add_argument(
        "--out", type=Path, required=True, metavar="FILE", help="keystore file to write (mode 0600)"
    )
    keygen.add_argument(
        "--password-file",
        type=Path,
        metavar="FILE",
        help="file whose first line is the password (or set SHARDNET_KEY_PASSWORD)",
    )
    keygen.add_argument(
        "--force", action="store_true", help="overwrite FILE if it exists (the old key is lost)"
    )
    keygen.set_defaults(func=_cmd_keygen)

    status = sub.add_parser(
        "status",
        help="print stake, unbonding, assignments, claimable balance and open jobs",
        description="Print a worker's standing on chain: wallet, registration and endpoint, stake, unbonding "
        "stake and when it can be withdrawn (UTC), claimable balance, open jobs and live assignments. "
        "Of --address without any key, else of the key's account.",
    )
    _add_config_flags(status, _READ_FIELDS)
    status.add_argument(
        "--address",
        metavar="0x...",
        help="the worker account to show (no key needed); default: the key's account",
    )
    status.set_defaults(func=_cmd_chain, action="status")

    stake = sub.add_parser("stake", help="register with a stake, or add stake if already registered")
    _add_config_flags(stake, _CHAIN_FIELDS)
    stake.add_argument(
        "--amount-wei", type=int, required=True, help="stake to add, in wei (1 ETH = 10**18 wei)"
    )
    stake.set_defaults(func=_cmd_chain, action="stake")

    unstake = sub.add_parser(
        "unstake", help="move stake into unbonding (withdraw it after the unbonding period)"
    )
    _add_config_flags(unstake, _CHAIN_FIELDS)
    unstake.add_argument("--amount-wei", type=int, help="stake to unbond, in wei (default: all of it)")
    unstake.set_defaults(func=_cmd_chain, action="unstake")

    withdraw = sub.add_parser("withdraw", help="withdraw stake whose unbonding period is over")
    _add_config_flags(withdraw, _CHAIN_FIELDS)
    withdraw.set_defaults(func=_cmd_chain, action="withdraw")

    claim = sub.add_parser("claim", help="pay out the claimable balance earned from jobs")
    _add_config_flags(claim, _CHAIN_FIELDS)
    claim.set_defaults(func=_cmd_chain, action="claim")
    return parser


def config_from_args(args: argparse.Namespace) -> WorkerConfig:
    return load_config(flag_overrides(args, WorkerConfig), getattr(args, "config", None))


def _cmd_run(args: argparse.Namespace) -> int:
    from worker.node import run_worker

    return run_worker(config_from_args(args), reset_state=args.reset_state)


def _cmd_keygen(args: argparse.Namespace) -> int:
    from shardnet.keys import read_password, write_keystore

    address = write_keystore(args.out, read_password(args.password_file), overwrite=args.force)
    print(f"wrote keystore {args.out} for address {address}")
    return 0


def _cmd_chain(args: argparse.Namespace) -> int:
    from worker import staking

    cfg = config_from_args(args)
    action = args.action
    if action == "status":
        return staking.print_status(cfg, args.address)
    amount: Any = getattr(args, "amount_wei", None)
    return staking.run_action(cfg, action, amount)


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
