"""`shardnet keyholder run`: the owner's process that wraps a private model's keys to the workers the chain names."""

from __future__ import annotations

import argparse
from pathlib import Path

from shardnet.cli.chain_args import add_chain_flags, registry_from_args


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    holder = subparsers.add_parser(
        "keyholder", help="hand a private model's file keys to its assigned workers"
    )
    sub = holder.add_subparsers(dest="keyholder_command", metavar="COMMAND", required=True)
    p = sub.add_parser(
        "run",
        help="serve POST /v1/keys: keys wrapped (ECIES) to registered, unjailed workers with a live shard of the model",
        description="Runs on the owner's side with the key file of `shardnet store put` / `model import --private`. "
        "A worker's signed request is checked against the registry (ShardAnnounced, live, not jailed) before "
        "its keys are wrapped to the public key recovered from its signature.",
    )
    p.add_argument("--keys", type=Path, required=True, help="the owner's key file of the private manifest")
    p.add_argument(
        "--model-id",
        type=int,
        required=True,
        help="the model's id on the registry (its manifest CID must be the key file's)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8750, help="port to listen on (default 8750)")
    add_chain_flags(p, needs_key=False, key_note=" (not needed: the keyholder only reads the chain)")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from shardnet.store.private.keyfile import load_keys
    from shardnet.store.private.keyholder import run_keyholder

    run_keyholder(
        registry_from_args(args, needs_key=False), load_keys(args.keys), args.model_id, args.host, args.port
    )
    return 0
