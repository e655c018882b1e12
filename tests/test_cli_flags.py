"""The flags every command shares are spelled the same: `--rpc-url` everywhere (`--rpc` still parses, hidden),
and worker and coordinator build their settings flags from the same `ChainSettings` fields."""

from __future__ import annotations

import argparse

import pytest

from coordinator.cli import build_parser as coordinator_parser
from coordinator.cli import config_from_args as coordinator_config
from shardnet.cli import build_parser as shardnet_parser
from shardnet.config import ChainSettings
from worker.cli import build_parser as worker_parser
from worker.cli import config_from_args as worker_config


def _subparser(parser: argparse.ArgumentParser, *names: str) -> argparse.ArgumentParser:
    for name in names:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


@pytest.mark.parametrize(
    ("parser", "command"),
    [
        (shardnet_parser, ("deploy",)),
        (shardnet_parser, ("submit",)),
        (shardnet_parser, ("chain", "status")),
        (shardnet_parser, ("model", "register")),
        (worker_parser, ("run",)),
        (worker_parser, ("status",)),
        (coordinator_parser, ("run",)),
    ],
)
def test_every_command_spells_the_rpc_flag_rpc_url(parser, command: tuple[str, ...]) -> None:
    help_text = _subparser(parser(), *command).format_help()
    assert "--rpc-url URL" in help_text
    assert "--rpc " not in help_text and "--rpc\n" not in help_text  # the old spelling is hidden


def test_old_rpc_spelling_still_parses_for_shardnet_commands() -> None:
    args = shardnet_parser().parse_args(["chain", "status", "--rpc", "http://127.0.0.1:1"])
    assert args.rpc_url == "http://127.0.0.1:1"
    args = shardnet_parser().parse_args(["deploy", "--rpc-url", "http://127.0.0.1:2", "--key-env", "K"])
    assert args.rpc_url == "http://127.0.0.1:2"
    with pytest.raises(SystemExit):
        shardnet_parser().parse_args(["deploy", "--key-env", "K"])  # the deploy target is still required


def test_worker_and_coordinator_share_the_chain_settings() -> None:
    chain_flags = [
        "--rpc-url",
        "http://127.0.0.1:9",
        "--key-env",
        "K",
        "--confirmations",
        "2",
        "--poll-interval-s",
        "0.5",
    ]
    worker = worker_config(worker_parser().parse_args(["run", *chain_flags]))
    coordinator = coordinator_config(coordinator_parser().parse_args(["run", *chain_flags]))
    for cfg in (worker, coordinator):
        assert isinstance(cfg, ChainSettings)
        assert (cfg.rpc_url, cfg.key_env, cfg.confirmations, cfg.poll_interval_s) == (
            "http://127.0.0.1:9",
            "K",
            2,
            0.5,
        )
    # each role keeps its own polling default
    assert coordinator_config(coordinator_parser().parse_args(["run"])).poll_interval_s == 0.2
    assert worker_config(worker_parser().parse_args(["run"])).poll_interval_s == 1.0
