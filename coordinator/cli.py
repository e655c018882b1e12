"""The `coordinator` command.

    coordinator run --key-env COORD_KEY --port 8600 --store-dir .shardnet/store
    coordinator run --config coordinator.toml --keystore coord-key.json --password-file pw.txt

This module only turns flags into a `CoordinatorConfig` and runs the service; heavy imports (torch, web3)
happen inside the handler so that `coordinator --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from coordinator.config import ENV_PREFIX, CoordinatorConfig, field_help, load_config
from shardnet.cli import run_command
from shardnet.config import add_settings_flags, flag_overrides

_METAVARS = {"api_key": "KEY", "data_path": "relay|push"}
_SWITCHES = ("no_api_key", "compact_answers", "hold_until_verified")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    add_settings_flags(
        parser,
        CoordinatorConfig,
        env_prefix=ENV_PREFIX,
        metavars=_METAVARS,
        config_help="TOML file of settings (see coordinator/coordinator.example.toml; keys as the flags, with _ "
        f"for -); flags and {ENV_PREFIX}<SETTING> environment variables override it",
        names=[n for n in CoordinatorConfig.model_fields if n not in _SWITCHES],
    )
    for name in _SWITCHES:  # yes/no settings are switches: given means true
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            action="store_true",
            default=None,
            help=field_help()[name] + f" [env {ENV_PREFIX}{name.upper()}=true]",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coordinator",
        description="A shardnet coordinator: takes paid jobs from the chain (and OpenAI-compatible requests), "
        "routes them through workers, fails over, verifies a share of the work, and settles on chain.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="serve until SIGTERM/SIGINT",
        description="Check the account is an approved coordinator on chain, then watch JobSubmitted events, "
        "take prompts over HTTP, run and settle the jobs. Stops cleanly on SIGTERM/SIGINT.",
    )
    _add_config_flags(run)
    run.add_argument(
        "--reset-state",
        action="store_true",
        help="clear the database's state (jobs, cursor) when it belongs to another chain or registry, "
        "e.g. after restarting a devnet (without it such a database is refused)",
    )
    run.set_defaults(func=_cmd_run)
    return parser


def config_from_args(args: argparse.Namespace) -> CoordinatorConfig:
    return load_config(flag_overrides(args, CoordinatorConfig), getattr(args, "config", None))


def _cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from coordinator.service import CoordinatorService
    from shardnet.chain.identity import identity_of
    from shardnet.chain.registry import Registry
    from shardnet.db import check_chain_identity, make_engine
    from shardnet.keys import load_account
    from shardnet.service import run_service

    cfg = config_from_args(args)
    account = load_account(cfg.keystore, cfg.password_file, cfg.key_env)
    registry = Registry.from_deployment(cfg.deployment, account, rpc_url=cfg.rpc_url)
    engine = make_engine(cfg.database_url())
    try:
        check_chain_identity(
            engine,
            "coordinator",
            identity_of(registry),
            reset=args.reset_state,
            what=f"the coordinator's database ({engine.url.render_as_string(hide_password=True)})",
        )
    finally:
        engine.dispose()

    async def main() -> None:
        service = CoordinatorService(cfg, registry, account)
        await run_service(service, service.service_lifecycle)  # SIGTERM/SIGINT: drain and stop

    asyncio.run(main())
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
