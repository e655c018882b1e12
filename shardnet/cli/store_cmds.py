"""`shardnet store put | get | serve`: private data sealed into erasure-coded pieces on storage nodes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from shardnet.cli.chain_args import add_chain_flags, registry_from_args
from shardnet.store.local import DEFAULT_STORE

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from shardnet.store.private.keyfile import FileKeys

_STORE_HELP = f"local store folder holding files by CID (default: {DEFAULT_STORE})"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    store = subparsers.add_parser(
        "store", help="private data: seal into erasure-coded pieces, place, fetch back"
    )
    sub = store.add_subparsers(dest="store_command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "put",
        help="encrypt a file or folder, erasure-code it into n pieces and place them on storage nodes",
        description="Each file gets a fresh AES-256-GCM key; its ciphertext is cut into n pieces of which any k "
        "rebuild it; piece j goes to the j-th --node. Prints the manifest CID; the keys go to --keys-out only.",
    )
    p.add_argument("source", type=Path, metavar="FILE|FOLDER", help="the file, or folder of files, to store")
    p.add_argument(
        "--encrypt",
        action="store_true",
        required=True,
        help="encrypt (required: plaintext storage is `shardnet model import`)",
    )
    p.add_argument("--n", type=int, default=6, help="pieces per file (default 6)")
    p.add_argument("--k", type=int, default=4, help="pieces that rebuild a file (default 4)")
    p.add_argument(
        "--node",
        dest="nodes",
        action="append",
        default=[],
        metavar="URL",
        help="a storage node's base URL; repeat, at least n distinct (none: pieces stay in --store)",
    )
    p.add_argument(
        "--registered-only",
        action="store_true",
        help="refuse a --node that is not the endpoint of a registered, unjailed node on the registry "
        "(reads --deployment / --rpc-url)",
    )
    add_chain_flags(p, needs_key=False, key_note=" (not needed: put only reads the chain)")
    p.add_argument("--name", help="name recorded in the manifest (default: the file or folder name)")
    p.add_argument(
        "--keys-out",
        type=Path,
        help="where to write the key file (default: <manifest cid>.keys.json in the current folder)",
    )
    p.add_argument("--store", type=Path, default=DEFAULT_STORE, help=_STORE_HELP)
    p.set_defaults(func=cmd_put)

    p = sub.add_parser(
        "get",
        help="fetch any k pieces of each file, verify, rebuild and decrypt",
        description="Pieces come from the holders the manifest lists (and --from peers), fastest first; each is "
        "checked against its CID, and each file against its plaintext hash before it is written.",
    )
    p.add_argument("manifest_cid", metavar="MANIFEST_CID", help="CID printed by `shardnet store put`")
    keys = p.add_mutually_exclusive_group(required=True)
    keys.add_argument("--keys", type=Path, help="the owner's key file `shardnet store put` wrote")
    keys.add_argument(
        "--keyholder", metavar="URL", help="ask this keyholder for the keys, wrapped to --key-env's key"
    )
    p.add_argument("--model-id", type=int, help="with --keyholder: the model whose shard you serve")
    p.add_argument(
        "--key-env", metavar="VAR", help="with --keyholder: environment variable holding your node's hex key"
    )
    p.add_argument(
        "--sign-reads-env",
        metavar="VAR",
        help="environment variable holding the hex key that signs each piece read (for storage nodes started "
        "with --reader: the owner's key or an authorised worker's)",
    )
    p.add_argument("--out", type=Path, required=True, help="folder the files are written into")
    p.add_argument(
        "--from",
        dest="sources",
        action="append",
        default=[],
        metavar="DIR_OR_URL",
        help="where to find the manifest (and extra piece peers); repeat",
    )
    p.add_argument("--store", type=Path, default=DEFAULT_STORE, help=_STORE_HELP)
    p.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait on a node before trying another"
    )
    p.set_defaults(func=cmd_get)

    p = sub.add_parser(
        "serve",
        help="run a storage node: hold pieces by CID, accept uploads, answer spot checks",
        description="Serves GET /v1/shards/{cid}, PUT /v1/pieces/{cid} and GET /v1/pieces/{cid}/segment/{i} over --store.",
    )
    p.add_argument("--store", type=Path, default=DEFAULT_STORE, help=_STORE_HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8700, help="port to listen on (default 8700)")
    p.add_argument(
        "--max-piece-mb", type=int, default=4096, help="largest piece accepted, in MB (default 4096)"
    )
    p.add_argument(
        "--max-store-mb",
        type=int,
        help="most bytes the store may hold, uploads in flight included, in MB; beyond it uploads get 507 "
        "(default: the disk's free space at start minus 1024 MB)",
    )
    p.add_argument(
        "--reader",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="serve pieces (bytes, segments) only to reads signed by this address (the owner or a worker "
        "it authorises; repeat for several); without it pieces are served to anyone",
    )
    p.set_defaults(func=cmd_serve)


@contextmanager
def _bar(total: int, label: str) -> Iterator[Callable[[int], None]]:
    from tqdm import tqdm

    bar = tqdm(
        total=total, unit="B", unit_scale=True, desc=label, disable=not sys.stderr.isatty(), leave=False
    )
    try:
        yield bar.update
    finally:
        bar.close()


def cmd_put(args: argparse.Namespace) -> int:
    from shardnet.store.private.keyfile import save_keys
    from shardnet.store.private.put import files_of, put_private

    if args.registered_only:
        from shardnet.store.private.placement import check_registered

        placed = check_registered(registry_from_args(args, needs_key=False), args.nodes)
        for url, address in placed.items():
            print(f"node {url}: registered as {address}")
    total = sum(p.stat().st_size for _, p in files_of(args.source))
    with _bar(total, "seal") as update:
        manifest, keys = put_private(
            args.source, args.store, n=args.n, k=args.k, nodes=args.nodes, name=args.name, on_bytes=update
        )
    path = save_keys(keys, args.keys_out or Path(f"{keys.manifest_cid}.keys.json"))
    for f in manifest.files:
        print(f"{f.name}: {f.size} bytes -> {f.n} pieces of {f.pieces[0].size} bytes (any {f.k} rebuild)")
    print(f"keys written to {path} (mode 0600; keep it apart from the manifest)")
    print(keys.manifest_cid)
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    from shardnet.store.private.get import get_private, load_private_manifest
    from shardnet.store.private.keyfile import load_keys

    keys = load_keys(args.keys) if args.keys else _keys_from_keyholder(args)
    manifest = load_private_manifest(args.manifest_cid, args.sources, args.store, args.timeout)
    with _bar(sum(f.size for f in manifest.files), "restore") as update:
        _, written = get_private(
            args.manifest_cid,
            keys,
            args.out,
            args.store,
            sources=args.sources,
            timeout=args.timeout,
            on_bytes=update,
            reader=_reader(args.sign_reads_env),
        )
    for path in written:
        print(f"restored {path}")
    return 0


def _reader(var: str | None) -> LocalAccount | None:
    import os

    from eth_account import Account

    from shardnet.errors import ConfigError

    if var is None:
        return None
    try:
        reader: LocalAccount = Account.from_key(os.environ[var])
    except (KeyError, ValueError):
        raise ConfigError(f"--sign-reads-env: ${var} must hold a hex private key (64 hex digits)") from None
    return reader


def _keys_from_keyholder(args: argparse.Namespace) -> FileKeys:
    import os

    from shardnet.errors import ConfigError
    from shardnet.store.private.keyholder import request_keys

    if args.model_id is None or not args.key_env or not os.environ.get(args.key_env):
        raise ConfigError(
            "--keyholder needs --model-id and --key-env VAR naming a set variable with your node's key"
        )
    try:
        key = bytes.fromhex(os.environ[args.key_env].removeprefix("0x"))
    except ValueError:
        raise ConfigError(f"${args.key_env} is not a hex private key (64 hex digits, 0x optional)") from None
    return request_keys(args.keyholder, key, args.manifest_cid, args.model_id, timeout=args.timeout)


def cmd_serve(args: argparse.Namespace) -> int:
    import shutil

    from eth_utils import to_checksum_address

    from shardnet.errors import ConfigError
    from shardnet.store.private.node import held_bytes, run_storage_node

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is not a TCP port (0..65535)")
    if args.max_piece_mb < 1 or (args.max_store_mb is not None and args.max_store_mb < 1):
        raise ConfigError("--max-piece-mb and --max-store-mb must be at least 1")
    try:
        readers = frozenset(to_checksum_address(a) for a in args.reader) if args.reader else None
    except ValueError:
        raise ConfigError(f"--reader takes 0x addresses; got {args.reader}") from None
    args.store.mkdir(parents=True, exist_ok=True)
    if args.max_store_mb is not None:
        quota = args.max_store_mb << 20
    else:  # what is held now plus the free space, leaving 1 GiB free on the disk
        quota = held_bytes(args.store) + max(0, shutil.disk_usage(args.store).free - (1 << 30))
    try:
        run_storage_node(args.store, args.host, args.port, args.max_piece_mb << 20, quota, readers)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc}; pick another --port") from None
    return 0
